"""Errors raised by the client: one class per kind of answer, all carrying the problem body.

Every error answer of the service is RFC 9457 problem+json with a stable `code`. An answer that is
not (a proxy's HTML 502, say) still becomes a `ChatStoreError`, with a code made from its status.
Network failures are not wrapped: they surface as httpx's own `httpx.TransportError`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

_CODES_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    501: "not_implemented",
    503: "unavailable",
}


class ChatStoreError(Exception):
    """An error answer from the service."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        problem: dict[str, Any] | None = None,
        *,
        request_id: str | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        # The whole problem body, including extra members such as `errors` or `last_seq`.
        self.problem: dict[str, Any] = problem or {}
        # The X-Request-ID of the answer: quote it when reporting a server error.
        self.request_id = request_id
        # Seconds to wait before trying again, when the answer said (Retry-After: a 429, a 503
        # such as `generation_busy` or `service_unavailable`).
        self.retry_after: float | None = None


class BadRequestError(ChatStoreError):
    """400."""


class UnauthorizedError(ChatStoreError):
    """401: missing, expired, revoked or invalid credentials."""


class ForbiddenError(ChatStoreError):
    """403, e.g. `registration_closed`."""


class NotFoundError(ChatStoreError):
    """404: missing, or owned by someone else (the service does not tell the two apart)."""


class MethodNotAllowedError(ChatStoreError):
    """405: the path exists, not with this method."""


class ConflictError(ChatStoreError):
    """409: `session_exists`, `email_taken`, `idempotency_key_reused`, ..."""


class PayloadTooLargeError(ChatStoreError):
    """413: the body, a message or a field is over its limit."""


class UnsupportedMediaTypeError(ChatStoreError):
    """415: a JSON body sent without `Content-Type: application/json`."""


class ValidationError(ChatStoreError):
    """422: the request did not validate; `errors` lists each field at fault."""

    @property
    def errors(self) -> list[dict[str, Any]]:
        errors = self.problem.get("errors")
        return list(errors) if isinstance(errors, list) else []


class RateLimitedError(ChatStoreError):
    """429: `retry_after` is how many seconds to wait, when the service said."""


class ServerError(ChatStoreError):
    """5xx: the service failed or is unavailable."""


_CLASSES_BY_STATUS: dict[int, type[ChatStoreError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    405: MethodNotAllowedError,
    409: ConflictError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    422: ValidationError,
    429: RateLimitedError,
}


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: either a number of seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _problem_body(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = json.loads(response.content)
    except ValueError:  # not JSON (or not UTF-8): a proxy's page, an empty body
        return None
    return body if isinstance(body, dict) else None


def error_from_response(response: httpx.Response) -> ChatStoreError:
    """The exception for an error answer (the body must have been read)."""
    status = response.status_code
    problem = _problem_body(response)
    code = problem.get("code") if problem else None
    detail = problem.get("detail") if problem else None
    if not isinstance(code, str) or not code:
        code = _CODES_BY_STATUS.get(status, "http_error")
    if not isinstance(detail, str) or not detail:
        detail = response.reason_phrase or f"HTTP {status}"
    request_id = response.headers.get("X-Request-ID")
    cls = _CLASSES_BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else ChatStoreError
    error = cls(status, code, detail, problem, request_id=request_id)
    error.retry_after = parse_retry_after(response.headers.get("Retry-After"))
    return error
