"""The RFC 9457 problem document, built in one place for handlers and middleware alike."""

from __future__ import annotations

from typing import Any

PROBLEM_CONTENT_TYPE = "application/problem+json"


def _clean(value: Any) -> Any:
    """Make any echoed input safe to encode (a lone surrogate in a field name must not 500)."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, list | tuple):
        return [_clean(item) for item in value]
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    return value


def problem_body(
    *, status: int, code: str, title: str, detail: str, instance: str, **extra: Any
) -> dict[str, Any]:
    """The RFC 9457 document every error is answered with (here and in the middleware)."""
    body: dict[str, Any] = {
        "type": f"urn:chat-store:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        "code": code,
    }
    body.update(extra)
    return _clean(body)  # type: ignore[no-any-return]
