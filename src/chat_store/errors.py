"""Domain errors. Services raise these; api/errors.py renders them once as problem+json."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"

    def __init__(self, detail: str | None = None, *, commit: bool = False, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra
        self.headers: dict[str, str] = {}
        # True when the request's writes must be kept although it fails (e.g. a revocation).
        self.commit = commit


class NotFound(AppError):
    status, code, title = 404, "not_found", "Not found"


class Conflict(AppError):
    status, code, title = 409, "conflict", "Conflict"


class Unauthorized(AppError):
    status, code, title = 401, "unauthorized", "Unauthorized"

    def __init__(self, detail: str | None = None, *, commit: bool = False, **extra: Any) -> None:
        super().__init__(detail or "Missing or invalid credentials", commit=commit, **extra)
        self.headers["WWW-Authenticate"] = "Bearer"


class TokenExpired(Unauthorized):
    """A genuine access token past its lifetime: refresh it (this is not a guess)."""

    def __init__(self) -> None:
        super().__init__("Token expired")


class Forbidden(AppError):
    status, code, title = 403, "forbidden", "Forbidden"


class PayloadTooLarge(AppError):
    status, code, title = 413, "payload_too_large", "Payload too large"


class BodyTooLarge(PayloadTooLarge):
    """The request body as sent is over the limit (refused before it is read whole)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"The request body is over the limit of {max_bytes} bytes")


class RateLimited(AppError):
    status, code, title = 429, "rate_limited", "Too many requests"


class ValidationFailed(AppError):
    """A rule that a schema cannot express (e.g. a size counted after parsing)."""

    status, code, title = 422, "validation_error", "Validation error"

    def __init__(
        self, detail: str, loc: list[str | int] | None = None, *, msg: str | None = None
    ) -> None:
        error = {"loc": loc or ["body"], "msg": msg or detail, "type": "value_error"}
        super().__init__(detail, errors=[error])


class UnknownToolCall(ValidationFailed):
    code, title = "unknown_tool_call", "No such tool call"


class ChatSessionNotFound(NotFound):
    code, title = "session_not_found", "Session not found"


class MessageNotFound(NotFound):
    code, title = "message_not_found", "Message not found"


class ApiKeyNotFound(NotFound):
    title = "API key not found"


class ChatSessionExists(Conflict):
    code, title = "session_exists", "Session id already exists"


class MessageExists(Conflict):
    code, title = "message_exists", "Message id already exists"


class ApiKeyLimit(Conflict):
    code, title = "api_key_limit", "Too many API keys"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"A user holds at most {limit} unexpired API keys; revoke one first", limit=limit
        )


class EmailTaken(Conflict):
    code, title = "email_taken", "Email already registered"


class IdempotencyKeyReused(Conflict):
    code, title = "idempotency_key_reused", "Idempotency key reused with a different request"


class GuestNotAllowed(Forbidden):
    code, title = "guest_not_allowed", "Not available to guests"


class RegistrationClosed(Forbidden):
    code, title = "registration_closed", "Registration is turned off"


class SeqConflict(Conflict):
    code, title = "seq_conflict", "The session's last seq is not the expected one"

    def __init__(self, last_seq: int) -> None:
        super().__init__(
            f"expected_last_seq does not match; the last seq is {last_seq}", last_seq=last_seq
        )


class OffsetMismatch(Conflict):
    code, title = "offset_mismatch", "Offset does not match the stored length"

    def __init__(self, length: int) -> None:
        super().__init__(
            f"The stored text is {length} code points long; append at offset {length}",
            length=length,
        )


class InvalidTransition(Conflict):
    code, title = "invalid_transition", "Status change not allowed"


class NothingToResume(NotFound):
    code, title = "nothing_to_resume", "No assistant message to resume"


class ArchiveUnavailable(AppError):
    """An archived session's object cannot be read: nothing was changed, the session stays
    archived (a store outage, or the object was removed by hand)."""

    status, code, title = 503, "archive_unavailable", "The session's archive cannot be read"
