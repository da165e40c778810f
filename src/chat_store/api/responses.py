"""Error answers as documented in OpenAPI (every one is problem+json)."""

from __future__ import annotations

from typing import Any

from chat_store.schemas.common import Problem

_DESCRIPTIONS = {
    401: "Missing, expired or invalid credentials (`unauthorized`).",
    403: "Not allowed here (`registration_closed`, `guest_not_allowed`).",
    404: "Not found, or not yours (`not_found`, `session_not_found`, ...).",
    409: "Conflict (`session_exists`, `email_taken`, `idempotency_key_reused`, ...).",
    413: "Request body over the size limit (`payload_too_large`).",
    422: "Invalid input: malformed JSON, wrong types, unknown fields (`validation_error`).",
    429: "Rate limit exceeded (`rate_limited`); see Retry-After and RateLimit-* headers.",
    503: "A store the request needs cannot be reached (`archive_unavailable`, ...).",
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {
            "model": Problem,
            "description": _DESCRIPTIONS[status],
            "content": {"application/problem+json": {}},
        }
        for status in (*statuses, 429)
    }


AUTHED = problems(401, 422)
