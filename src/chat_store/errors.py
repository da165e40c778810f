"""Domain errors. Services raise these; api/errors.py renders them once as problem+json.

A kind of error says its answer in its class statement, and its base gives what it leaves out:
`class ChatSessionNotFound(NotFound, code="session_not_found", title="Session not found")`
answers 404 like every NotFound."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"
    # Seconds to wait before asking again (the Retry-After header); 0: the error does not say.
    retry_after: int = 0

    def __init_subclass__(
        cls,
        *,
        status: int = 0,
        code: str = "",
        title: str = "",
        retry_after: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        # What a class leaves out, it keeps from its base.
        cls.status = status or cls.status
        cls.code = code or cls.code
        cls.title = title or cls.title
        cls.retry_after = retry_after or cls.retry_after

    def __init__(self, detail: str | None = None, *, commit: bool = False, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra
        self.headers: dict[str, str] = {}
        if self.retry_after:
            self.headers["Retry-After"] = str(self.retry_after)
        # True when the request's writes must be kept although it fails (e.g. a revocation).
        self.commit = commit


class NotFound(AppError, status=404, code="not_found", title="Not found"): ...


class Conflict(AppError, status=409, code="conflict", title="Conflict"): ...


class Forbidden(AppError, status=403, code="forbidden", title="Forbidden"): ...


class PayloadTooLarge(
    AppError, status=413, code="payload_too_large", title="Payload too large"
): ...


class RateLimited(AppError, status=429, code="rate_limited", title="Too many requests"): ...


class Unauthorized(AppError, status=401, code="unauthorized", title="Unauthorized"):
    def __init__(self, detail: str | None = None, *, commit: bool = False, **extra: Any) -> None:
        super().__init__(detail or "Missing or invalid credentials", commit=commit, **extra)
        self.headers["WWW-Authenticate"] = "Bearer"


class TokenExpired(Unauthorized):
    """A genuine access token past its lifetime: refresh it (this is not a guess)."""

    def __init__(self) -> None:
        super().__init__("Token expired")


class BodyTooLarge(PayloadTooLarge):
    """The request body as sent is over the limit (refused before it is read whole)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"The request body is over the limit of {max_bytes} bytes")


class ValidationFailed(AppError, status=422, code="validation_error", title="Validation error"):
    """A rule that a schema cannot express (e.g. a size counted after parsing)."""

    def __init__(
        self, detail: str, loc: list[str | int] | None = None, *, msg: str | None = None
    ) -> None:
        error = {"loc": loc or ["body"], "msg": msg or detail, "type": "value_error"}
        super().__init__(detail, errors=[error])


class UnsupportedMediaType(
    AppError, status=415, code="unsupported_media_type", title="Unsupported media type"
):
    """A JSON route's body sent as a form, text, or without a Content-Type."""

    def __init__(self, sent: str | None) -> None:
        said = f"sent as {sent}" if sent else "sent without a Content-Type"
        super().__init__(
            f"The request body must be JSON (Content-Type: application/json); it was {said}"
        )


class UnknownToolCall(ValidationFailed, code="unknown_tool_call", title="No such tool call"): ...


class ChatSessionNotFound(NotFound, code="session_not_found", title="Session not found"): ...


class MessageNotFound(NotFound, code="message_not_found", title="Message not found"): ...


class ApiKeyNotFound(NotFound, title="API key not found"): ...


class NothingToResume(
    NotFound, code="nothing_to_resume", title="No assistant message to resume"
): ...


class ChatSessionExists(Conflict, code="session_exists", title="Session id already exists"): ...


class MessageExists(Conflict, code="message_exists", title="Message id already exists"): ...


class EmailTaken(Conflict, code="email_taken", title="Email already registered"): ...


class IdempotencyKeyReused(
    Conflict,
    code="idempotency_key_reused",
    title="Idempotency key reused with a different request",
): ...


class InvalidTransition(Conflict, code="invalid_transition", title="Status change not allowed"): ...


class GuestNotAllowed(Forbidden, code="guest_not_allowed", title="Not available to guests"): ...


class RegistrationClosed(
    Forbidden, code="registration_closed", title="Registration is turned off"
): ...


class ApiKeyLimit(Conflict, code="api_key_limit", title="Too many API keys"):
    def __init__(self, limit: int) -> None:
        detail = f"A user holds at most {limit} unexpired API keys; revoke one first"
        super().__init__(detail, limit=limit)


class SeqConflict(
    Conflict, code="seq_conflict", title="The session's last seq is not the expected one"
):
    def __init__(self, last_seq: int) -> None:
        detail = f"expected_last_seq does not match; the last seq is {last_seq}"
        super().__init__(detail, last_seq=last_seq)


class OffsetMismatch(
    Conflict, code="offset_mismatch", title="Offset does not match the stored length"
):
    def __init__(self, length: int) -> None:
        detail = f"The stored text is {length} code points long; append at offset {length}"
        super().__init__(detail, length=length)


class ArchiveUnavailable(
    AppError, status=503, code="archive_unavailable", title="The session's archive cannot be read"
):
    """An archived session's object cannot be read: nothing was changed, the session stays
    archived (a store outage, or the object was removed by hand)."""
