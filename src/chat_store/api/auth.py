from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Response

from chat_store import errors
from chat_store.api.deps import (
    API_PREFIX,
    AppSettings,
    Context,
    DbSession,
    State,
)
from chat_store.api.responses import problems
from chat_store.schemas.common import SafeStr
from chat_store.schemas.users import (
    ClaimRequest,
    ClaimResult,
    RefreshRequest,
    TokenPair,
    UserCreate,
    UserRead,
)
from chat_store.services import auth as auth_service

router = APIRouter(prefix=f"{API_PREFIX}/auth", tags=["auth"])


@router.post(
    "/register",
    status_code=201,
    responses=problems(errors.RegistrationClosed, errors.EmailTaken),
)
async def register_user(db: DbSession, settings: AppSettings, body: UserCreate) -> UserRead:
    """Create an account (email is case-folded and unique)."""
    return UserRead.model_validate(await auth_service.register(db, settings, body))


@router.post(
    "/token",
    responses=problems(
        errors.Unauthorized("Incorrect email or password"),
        errors.RateLimited("Too many failed logins for this account; try again later"),
    ),
)
async def login_for_tokens(
    db: DbSession,
    state: State,
    settings: AppSettings,
    username: Annotated[
        SafeStr,
        Form(description="The account's email.", max_length=320, examples=["ada@example.com"]),
    ],
    password: Annotated[SafeStr, Form(max_length=1024, examples=["correct horse battery"])],
) -> TokenPair:
    """Log in with the OAuth2 password form; returns an access JWT and a refresh token."""
    return await auth_service.login(db, settings, state.limiter, username, password)


@router.post("/refresh", responses=problems(errors.Unauthorized("Invalid refresh token")))
async def refresh_tokens(db: DbSession, settings: AppSettings, body: RefreshRequest) -> TokenPair:
    """Trade a refresh token for a new pair; the old one is spent (reuse revokes the family)."""
    return await auth_service.refresh(db, settings, body.refresh_token)


@router.post(
    "/claim",
    responses=problems(
        errors.GuestNotAllowed("Sign in (or use an API key) to claim a guest's sessions"),
        errors.NotFound("No guest data for this client id"),
    ),
)
async def claim_guest_sessions(ctx: Context, body: ClaimRequest) -> ClaimResult:
    """Move a guest's sessions (X-Client-ID) to the signed-in user."""
    moved = await auth_service.claim_guest(ctx, body.client_id)
    return ClaimResult(client_id=body.client_id, sessions_moved=moved)


@router.post("/logout", status_code=204)
async def logout(db: DbSession, body: RefreshRequest) -> Response:
    """Revoke the refresh token's whole family (every token rotated from the same login)."""
    await auth_service.logout(db, body.refresh_token)
    return Response(status_code=204)
