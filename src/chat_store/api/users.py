from __future__ import annotations

from fastapi import APIRouter, Response

from chat_store.api.deps import (
    API_PREFIX,
    AppSettings,
    CurrentPrincipal,
    DbSession,
    PrincipalCache,
    State,
)
from chat_store.api.responses import problems
from chat_store.errors import GuestNotAllowed
from chat_store.schemas.users import UserRead, UserUpdate
from chat_store.services import users as user_service

router = APIRouter(prefix=f"{API_PREFIX}/users", tags=["users"])


@router.get("/me")
async def get_current_user(db: DbSession, principal: CurrentPrincipal) -> UserRead:
    """The account behind the credentials."""
    return UserRead.model_validate(await user_service.get_me(db, principal))


@router.patch(
    "/me",
    responses=problems(GuestNotAllowed("Guests have no password; register and claim the sessions")),
)
async def update_current_user(
    db: DbSession,
    state: State,
    settings: AppSettings,
    principal: CurrentPrincipal,
    body: UserUpdate,
) -> UserRead:
    """Change the display name, or the password (with current_password; a wrong one counts
    against the account's failed logins)."""
    changed = await user_service.update_me(db, settings, state.limiter, principal, body)
    return UserRead.model_validate(changed)


@router.delete("/me", status_code=204)
async def delete_current_user(
    db: DbSession,
    state: State,
    settings: AppSettings,
    cache: PrincipalCache,
    principal: CurrentPrincipal,
) -> Response:
    """Erase the account and everything it owns; answers once it is gone."""
    await user_service.delete_me(
        db, settings, cache, state.bus, principal, state.sessionmaker, state.archive
    )
    return Response(status_code=204)
