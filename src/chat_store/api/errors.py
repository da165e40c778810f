"""One place that turns every error into RFC 9457 problem+json."""

from __future__ import annotations

import logging
import re
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from chat_store.api.deps import PRINCIPAL_STATE_KEY, app_state
from chat_store.api.middleware import SECURITY_HEADERS
from chat_store.api.problems import PROBLEM_CONTENT_TYPE, problem_body
from chat_store.db import is_connection_error
from chat_store.errors import AppError, Unauthorized, UnsupportedMediaType
from chat_store.services import principals as principal_service
from chat_store.services.principals import Principal

logger = logging.getLogger(__name__)


_HTTP_CODES = {
    400: ("bad_request", "Bad request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    413: ("payload_too_large", "Payload too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    429: ("rate_limited", "Too many requests"),
}


def problem_response(
    request: Request | None,
    *,
    status: int,
    code: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    path: str | None = None,
    **extra: Any,
) -> JSONResponse:
    body = problem_body(
        status=status,
        code=code,
        title=title,
        detail=detail,
        instance=path if path is not None else (request.url.path if request else ""),
        **extra,
    )
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_CONTENT_TYPE)


async def _app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return problem_response(
        request,
        status=exc.status,
        code=exc.code,
        title=exc.title,
        detail=exc.detail,
        headers=exc.headers or None,
        **exc.extra,
    )


def _named(loc: Any) -> list[Any]:
    """Where the error is, as the request names it: pydantic puts in the member of a union (a
    time or a day) that refused the value, in its own words ("function-after[to_utc(),
    datetime]")."""
    return [part for part in loc if not (isinstance(part, str) and _VALIDATOR_TAG.match(part))]


_VALIDATOR_TAG = re.compile(r"function-(?:after|before|wrap|plain)\[")


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": _named(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]
    content_type = request.headers.get("content-type")
    if not _is_json(content_type) and any(_body_not_an_object(err) for err in errors):
        # A JSON route's body sent as a form, text or nothing named: FastAPI does not read it
        # as JSON, and its error would name the model, not the header.
        return await _app_error(request, UnsupportedMediaType(content_type))
    if any(err["type"] == "json_invalid" for err in errors):
        detail = "The request body is not valid JSON"
    else:
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:5])
    return problem_response(
        request,
        status=422,
        code="validation_error",
        title="Validation error",
        detail=detail,
        errors=errors,
    )


def _is_json(content_type: str | None) -> bool:
    media_type = (content_type or "").partition(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


def _body_not_an_object(error: dict[str, Any]) -> bool:
    return error["loc"] == ["body"] and error["type"] in ("model_attributes_type", "dict_type")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and isinstance(exc.__cause__, ValueError | RecursionError):
        # FastAPI answers 400 when the JSON parser fails with something other than a syntax
        # error: bytes that are not UTF-8 (UnicodeDecodeError), nesting deeper than the parser
        # goes, an integer longer than Python converts (4300 digits, a ValueError). To a client
        # those are malformed JSON like any other.
        return problem_response(
            request,
            status=422,
            code="validation_error",
            title="Validation error",
            detail="The request body is not valid JSON",
            errors=[{"loc": ["body"], "msg": "JSON decode error", "type": "json_invalid"}],
        )
    code, title = _HTTP_CODES.get(exc.status_code, ("http_error", "HTTP error"))
    detail = exc.detail if isinstance(exc.detail, str) else title
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"No route for {request.method} {request.url.path}"
    return problem_response(
        request,
        status=exc.status_code,
        code=code,
        title=title,
        detail=detail,
        headers=dict(exc.headers) if exc.headers else None,
    )


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """The database refused or did not hand out a connection: a passing condition, not a bug."""
    request_id = request.scope.get("state", {}).get("request_id", "-")
    logger.warning("database unavailable: %s", _error_chain(exc), extra={"request_id": request_id})
    response = problem_response(
        request,
        status=503,
        code="service_unavailable",
        title="Service unavailable",
        detail="The database is not available right now; retry shortly.",
        headers={"Retry-After": "1"},
    )
    response.headers["X-Request-ID"] = request_id
    return response


def _error_chain(exc: BaseException) -> str:
    """The error's class and what it wraps, down to the driver's (e.g. "DBAPIError <- Error <-
    InternalClientError"): the wrapper alone does not say what happened."""
    names = [type(exc).__name__]
    current = exc.orig if isinstance(exc, DBAPIError) else exc.__cause__
    while current is not None and len(names) < 4:
        names.append(type(current).__name__)
        current = current.__cause__
    return " <- ".join(names)


# Driver errors that mean "no usable connection" rather than a fault in a statement.
_CONNECTION_ERRORS = (
    "TooManyConnectionsError",
    "CannotConnectNowError",
    "ConnectionDoesNotExistError",
    "ConnectionFailureError",
    "InterfaceError",
    "OperationalError",
    # Two transactions waited on each other; the database undid one: retrying is safe.
    "DeadlockDetectedError",
    "SerializationError",
)


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DBAPIError)
    # The driver's own error: the original, or (through SQLAlchemy's asyncpg adapter, which
    # raises its own DBAPI classes) the original's cause.
    driver_errors = {type(exc.orig).__name__, type(getattr(exc.orig, "__cause__", None)).__name__}
    if (
        is_connection_error(exc)
        or isinstance(exc, OperationalError | InterfaceError)
        or not driver_errors.isdisjoint(_CONNECTION_ERRORS)
        or "too many clients" in str(exc.orig)
    ):
        return await _database_unavailable(request, exc)
    return await _unhandled_error(request, exc)


async def _integrity_error(request: Request, exc: Exception) -> JSONResponse:
    """A constraint refused a write. When the caller's user (or key) is gone, it was a write
    into an account deleted after the credential was verified (cached credentials are trusted
    for a few seconds): the foreign key to the user failed, and the answer is the 401 the next
    request gets anyway. Otherwise a fault, as before."""
    principal = request.scope.get("state", {}).get(PRINCIPAL_STATE_KEY)
    if isinstance(principal, Principal):
        try:
            async with app_state(request).read_sessionmaker() as db:
                holds = await principal_service.still_valid(db, principal)
        except Exception:  # the check is best effort: the fault is still answered as one
            holds = True
        if not holds:
            return await _app_error(
                request, Unauthorized("Invalid credentials: the account no longer exists")
            )
    return await _database_error(request, exc)


async def _driver_error(request: Request, exc: Exception) -> JSONResponse:
    """A driver error that reached the app unwrapped, e.g. from setting up a connection the
    pool had just opened: a lost connection is a 503 as it is in any other form."""
    if is_connection_error(exc) or type(exc).__name__ in _CONNECTION_ERRORS:
        return await _database_unavailable(request, exc)
    return await _unhandled_error(request, exc)


async def _unhandled_error(request: Request, exc: Exception) -> JSONResponse:
    request_id = request.scope.get("state", {}).get("request_id", "-")
    logger.exception("unhandled error", extra={"request_id": request_id})
    response = problem_response(
        request,
        status=500,
        code="internal_error",
        title="Internal server error",
        detail=f"An unexpected error occurred; quote request id {request_id} when reporting it.",
    )
    # This answer is sent by Starlette's outermost middleware, outside RequestContextMiddleware:
    # the request id and the security headers have to be set here.
    response.headers["X-Request-ID"] = request_id
    for name, value in SECURITY_HEADERS:
        response.headers.setdefault(name.decode(), value.decode())
    return response


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(PoolTimeout, _database_unavailable)
    # asyncpg raises ConnectionRefusedError and friends unwrapped when it cannot connect.
    app.add_exception_handler(ConnectionError, _database_unavailable)
    app.add_exception_handler(IntegrityError, _integrity_error)
    app.add_exception_handler(DBAPIError, _database_error)
    for driver_error in (
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,
    ):
        app.add_exception_handler(driver_error, _driver_error)
    app.add_exception_handler(Exception, _unhandled_error)
