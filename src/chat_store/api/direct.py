"""The direct path: the busiest routes answer well-formed requests without FastAPI's
per-request dependency solving.

FastAPI solves a route's dependency tree, validates every parameter through its own field
machinery and validates the returned model once more on every request: about a third of an
append's CPU (docs/benchmarks.md). A route whose endpoint is marked with `@direct(handler)`
runs `handler` first. The handler reads what it needs itself (path ids, the JSON body, the
headers), opens the request's session, identifies and limits the caller with the same
functions the dependencies call, and calls the same service.

Whatever the handler does not find well formed, it hands back (the readers below raise
NotDirect) before anything has run, and FastAPI's own handler serves the request: every error
answer, its order (authentication before validation) and its wording stay FastAPI's. The
endpoint function stays the route's declaration: its signature is what the OpenAPI document
shows.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from functools import lru_cache
from typing import Any, TypeVar

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import ClientDisconnect

from chat_store.api.deps import IDEMPOTENCY_KEY_MAX_LENGTH, RequestSession, get_principal
from chat_store.api.ratelimits import limit_by_principal
from chat_store.services.principals import Principal

DirectHandler = Callable[[Request], Awaitable[Response]]

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])
Model = TypeVar("Model", bound=BaseModel)

_DIRECT_ATTRIBUTE = "__chat_store_direct__"
_SESSION_OPENED = "chat_store.direct_session"


class NotDirect(Exception):
    """The request is not one the direct handler takes: FastAPI's handler serves it. Raised
    only while reading the request, before the handler has opened a session."""


def direct(handler: DirectHandler) -> Callable[[Endpoint], Endpoint]:
    """Mark an endpoint as served by `handler` when the request is well formed. Put it below
    the route decorator: the route is built when that decorator runs."""

    def mark(endpoint: Endpoint) -> Endpoint:
        setattr(endpoint, _DIRECT_ATTRIBUTE, handler)
        return endpoint

    return mark


class DirectRoute(APIRoute):
    """An APIRoute that tries its endpoint's direct handler before FastAPI's own."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        fastapi_handler = super().get_route_handler()
        handler: DirectHandler | None = getattr(self.endpoint, _DIRECT_ATTRIBUTE, None)
        if handler is None:
            return fastapi_handler

        async def serve(request: Request) -> Response:
            # With dependency overrides set (tests, an embedding app), FastAPI serves every
            # request, so that the overrides apply as documented.
            if not request.app.dependency_overrides:
                try:
                    return await handler(request)
                except NotDirect:
                    if _SESSION_OPENED in request.scope:
                        # Too late to hand over: whatever ran would run a second time.
                        raise RuntimeError(
                            "NotDirect raised after the session was opened"
                        ) from None
            return await fastapi_handler(request)

        return serve


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def as_uuid(value: str) -> uuid.UUID:
    """A UUID in its usual hyphenated form. FastAPI decides the other forms: pydantic accepts
    some, and refuses some that Python's uuid module would take."""
    if not _UUID.fullmatch(value):
        raise NotDirect
    return uuid.UUID(value)


def as_int(value: str, minimum: int, maximum: int | None = None) -> int:
    """An integer within bounds, spelled in plain ASCII digits (at most 18: a 64-bit one)."""
    if not (value.isascii() and value.isdigit() and len(value) <= 18):
        raise NotDirect
    number = int(value)
    if number < minimum or (maximum is not None and number > maximum):
        raise NotDirect
    return number


def path_uuid(request: Request, name: str) -> uuid.UUID:
    return as_uuid(request.path_params.get(name, ""))


def query(request: Request, allowed: frozenset[str]) -> dict[str, str]:
    """The query parameters, each given once and all of them in `allowed`."""
    items = request.query_params.multi_items()
    given = dict(items)
    if len(given) != len(items) or not given.keys() <= allowed:
        raise NotDirect
    return given


def idempotency_key(request: Request) -> str | None:
    """The Idempotency-Key header, when given: 1 to 255 characters."""
    value = request.headers.get("idempotency-key")
    if value is not None and not 0 < len(value) <= IDEMPOTENCY_KEY_MAX_LENGTH:
        raise NotDirect
    return value


async def json_body(request: Request, model: type[Model]) -> Model:
    """The body as `model`, validated as FastAPI validates it (the parsed JSON through the
    model). Not taken: another content type, an empty body, JSON that does not parse, a body
    the model refuses."""
    content_type = request.headers.get("content-type", "")
    if content_type.partition(";")[0].strip().lower() != "application/json":
        raise NotDirect
    try:
        raw = await request.body()  # kept on the request: FastAPI's handler reads it again
    except ClientDisconnect:
        raise NotDirect from None  # FastAPI's handler answers it (400) as it would have
    if not raw:
        raise NotDirect
    try:
        return model.model_validate(json.loads(raw))
    except (ValueError, RecursionError):
        # Not JSON (JSONDecodeError and UnicodeDecodeError are ValueErrors), nested beyond the
        # parser, or refused by the model (ValidationError is a ValueError): FastAPI says which.
        raise NotDirect from None


@lru_cache(maxsize=32)
def _adapter(model: type[BaseModel]) -> TypeAdapter[Any]:
    return TypeAdapter(model)


def json_response(
    model: type[Model], value: Model, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """The answer FastAPI would build for `response_model=model`: the same bytes (by alias,
    nothing excluded) and media type."""
    return Response(
        content=_adapter(model).dump_json(value, by_alias=True),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


def request_session(request: Request) -> RequestSession:
    """The request's session (RequestSession); from here on the request is the handler's."""
    request.scope[_SESSION_OPENED] = True
    return RequestSession(request)


async def caller(request: Request, db: AsyncSession) -> Principal:
    """The caller, identified and limited by the functions the routes' dependencies run."""
    principal = await get_principal(request, db)
    await limit_by_principal(request, principal)
    return principal
