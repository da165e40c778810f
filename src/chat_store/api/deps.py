"""Typed dependencies every router uses: the app state, the request's database session, the
caller (Principal), pagination and the Idempotency-Key header."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Annotated, Any, Literal

from fastapi import Depends, Header, Query, Request
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from fastapi.security.base import SecurityBase
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy.ext.asyncio import AsyncSession

from chat_store.api.limiting import address_subject, apply_limit, counted_as_auth_request
from chat_store.cache import Cache as CacheAdapter
from chat_store.errors import AppError, TokenExpired, Unauthorized, ValidationFailed
from chat_store.ratelimit import parse_limit
from chat_store.schemas.pagination import Pagination
from chat_store.services import hooks
from chat_store.services import principals as principal_service
from chat_store.services.context import RequestContext
from chat_store.services.principals import Principal
from chat_store.settings import Settings
from chat_store.state import AppState as AppState  # the routers' (and tests') way to it

API_PREFIX = "/api/v1"
# Requests that change nothing: read sessions, read rate limits, and no guest row is made.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


# Dependencies are `async def` even when they do not await: FastAPI runs plain `def`
# dependencies in a worker thread, a thread hop per dependency per request. The small ones
# read the request directly rather than depend on `State`: every nesting level is another
# round of dependency solving on every request.


def app_state(request: Request) -> AppState:
    """The lifespan's state, read from the request without a dependency of its own."""
    state: AppState = request.app.state.resources
    return state


async def get_state(request: Request) -> AppState:
    return app_state(request)


State = Annotated[AppState, Depends(get_state)]


def _of_state(name: str) -> Any:
    """A dependency on one part of the app's state (its type is the alias's)."""

    async def get(request: Request) -> Any:
        return getattr(app_state(request), name)

    return Depends(get)


AppSettings = Annotated[Settings, _of_state("settings")]
PrincipalCache = Annotated[CacheAdapter, _of_state("principal_cache")]


class RequestSession:
    """The request's database session, one transaction: committed when the block ends, rolled
    back on error. An AppError that asks for it (commit=True, e.g. a refresh-token family
    revoked on reuse) keeps its writes. After-commit hooks (events, cache) run once committed.

    GET and HEAD use the read sessions (autocommit on Postgres, see db.py). A class rather than
    a generator: the direct path (api/direct.py) opens it on every busy request.
    """

    __slots__ = ("_session",)

    def __init__(self, request: Request) -> None:
        state = app_state(request)
        reading = request.method in ("GET", "HEAD")
        self._session = (state.read_sessionmaker if reading else state.sessionmaker)()

    async def __aenter__(self) -> AsyncSession:
        return self._session

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        session = self._session
        try:
            if exc is None or (isinstance(exc, AppError) and exc.commit):
                # Not in a transaction (nothing ran, or only autocommitted statements): a
                # commit would begin an empty one to end it.
                if session.in_transaction():
                    await session.commit()
                await hooks.run_after_commit(session)
            else:
                hooks.discard(session)
                await session.rollback()
        finally:
            # AsyncSession's own exit: closes the session even when the request is cancelled.
            await session.__aexit__(exc_type, exc, traceback)


async def get_db(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's session (RequestSession) as a dependency.

    Declared with scope="function" so the commit happens before the response is sent: a client
    that got 201 can read its write from any other connection at once.
    """
    async with RequestSession(request) as session:
        yield session


DbSession = Annotated[AsyncSession, Depends(get_db, scope="function")]

# The two ways in, as the OpenAPI document declares them (so "Authorize" in Swagger UI offers
# both). get_principal reads their headers itself rather than depending on these schemes: each
# dependency is another round of FastAPI's dependency solving on every request. main.py puts
# them on every operation that depends on get_principal.
oauth2_scheme = OAuth2PasswordBearer(
    tokenUrl=f"{API_PREFIX}/auth/token",
    auto_error=False,
    description="Log in with email and password; or paste an API key (csk_...) as a bearer token.",
)
api_key_scheme = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="An API key created with POST /api-keys."
)
SECURITY_SCHEMES: tuple[SecurityBase, ...] = (oauth2_scheme, api_key_scheme)
CLIENT_ID_MAX_LENGTH = 64
# Where get_principal leaves the caller in the request's state.
PRINCIPAL_STATE_KEY = "principal"


def _bearer_token(authorization: str | None) -> str | None:
    scheme, token = get_authorization_scheme_param(authorization)
    return token if scheme.lower() == "bearer" and token else None


async def get_principal(request: Request, db: DbSession) -> Principal:
    """The caller, from a bearer token (JWT or API key), an X-API-Key header or, in guest mode
    (ALLOW_GUESTS=true, off by default), an X-Client-ID header: a UUID the client keeps, not
    declared as a security scheme, so Swagger UI offers only the real logins."""
    state = app_state(request)
    settings = state.settings
    client_id = request.headers.get("x-client-id")
    if client_id is not None and len(client_id) > CLIENT_ID_MAX_LENGTH:
        raise ValidationFailed(
            f"X-Client-ID is longer than {CLIENT_ID_MAX_LENGTH} characters",
            ["header", "X-Client-ID"],
        )
    try:
        principal = await _from_credentials(request, db, state, client_id)
    except TokenExpired:
        raise  # a real token that ran out: the client refreshes it, nothing to limit
    except Unauthorized:
        # Wrong credentials count against the client address's auth budget, so guessing keys
        # or tokens is limited like guessing passwords (once: an `/auth/*` request has been).
        if settings.rate_limit_enabled and not counted_as_auth_request(request):
            result = await state.limiter.hit(
                parse_limit(settings.rate_limit_auth), "auth", address_subject(request, settings)
            )
            apply_limit(request, result, "failed authentication from this address")
        raise
    if principal is None:
        raise Unauthorized("Authentication required: a bearer token or an X-API-Key header")
    # For the error handlers: a write that meets the caller's user row gone (deleted after the
    # credential was verified, within its cache lifetime) is answered 401 (api/errors.py).
    request.scope.setdefault("state", {})[PRINCIPAL_STATE_KEY] = principal
    return principal


async def _from_credentials(
    request: Request, db: AsyncSession, state: AppState, client_id: str | None
) -> Principal | None:
    """The caller the request's credentials name (None if it has none)."""
    headers, settings, cache = request.headers, state.settings, state.principal_cache
    if bearer := _bearer_token(headers.get("authorization")):
        return await principal_service.from_bearer(db, settings, cache, bearer)
    if api_key := headers.get("x-api-key"):
        return await principal_service.from_api_key(db, settings, cache, api_key)
    if client_id and settings.allow_guests:
        return await _guest(request, db, state, client_id)
    return None


async def _guest(request: Request, db: AsyncSession, state: AppState, raw: str) -> Principal:
    """A guest; its row is made on its first write, within GUEST_CREATE_RATE_LIMIT new guests
    per client address (else every made-up client id would cost a row)."""
    client_id = principal_service.parse_client_id(raw)
    if (guest := await principal_service.find_guest(db, client_id)) is not None:
        return guest
    if request.method in READ_METHODS:
        return principal_service.unsaved_guest(client_id)
    settings = state.settings
    if settings.rate_limit_enabled:
        result = await state.limiter.hit(
            parse_limit(settings.guest_create_rate_limit),
            "guest-create",
            address_subject(request, settings),
        )
        apply_limit(request, result, "new guests from this address")
    return await principal_service.create_guest(db, client_id)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


async def get_context(
    request: Request, db: DbSession, principal: CurrentPrincipal
) -> RequestContext:
    """What the services are given: the request's session, its caller, the app's state."""
    return RequestContext(db, principal, app_state(request))


Context = Annotated[RequestContext, Depends(get_context)]


async def get_pagination(
    limit: Annotated[int, Query(ge=1, le=100, description="Page size.")] = 20,
    order: Annotated[
        Literal["asc", "desc"] | None, Query(description="Sort direction of the list.")
    ] = None,
    after: Annotated[
        uuid.UUID | None, Query(description="Continue after this id (in list order).")
    ] = None,
    before: Annotated[uuid.UUID | None, Query(description="The page before this id.")] = None,
) -> Pagination:
    if after is not None and before is not None:
        raise ValidationFailed("give either after or before, not both", ["query", "before"])
    return Pagination(limit=limit, order=order, after=after, before=before)


PaginationParams = Annotated[Pagination, Depends(get_pagination)]

IDEMPOTENCY_KEY_MAX_LENGTH = 255
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=IDEMPOTENCY_KEY_MAX_LENGTH,
        description="Retry-safe creates: the same key and body return the first answer.",
    ),
]
