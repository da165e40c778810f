from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chat_store.cache import Cache
from chat_store.cache.bus import Bus
from chat_store.crud import api_keys as api_key_crud
from chat_store.crud import archive as archive_crud
from chat_store.crud import auth_tokens as token_crud
from chat_store.crud import generations as generation_crud
from chat_store.crud import users as user_crud
from chat_store.errors import GuestNotAllowed, Unauthorized, ValidationFailed
from chat_store.models import User
from chat_store.ratelimit import RateLimiter
from chat_store.schemas.users import UserUpdate
from chat_store.security import hash_password, verify_password
from chat_store.services import auth, events, principals
from chat_store.services.archive import deletions
from chat_store.services.auth import normalize_email
from chat_store.services.principals import Principal
from chat_store.settings import Settings
from chat_store.storage import ArchiveStore


async def get_me(db: AsyncSession, principal: Principal) -> User:
    user = await user_crud.get_by_id(db, principal.user_id)
    if user is None:
        # A guest before its first write has no row yet; anyone else was deleted while the
        # credential was in flight.
        user = principals.unsaved_guest_user(principal)
    if user is None:
        raise Unauthorized()
    return user


async def update_me(
    db: AsyncSession,
    settings: Settings,
    limiter: RateLimiter,
    principal: Principal,
    body: UserUpdate,
) -> User:
    changes = body.model_dump(exclude_unset=True)
    if principal.kind == "guest" and changes.get("password") is not None:
        # A guest never had a password: setting one would make its client id a login.
        raise GuestNotAllowed("Guests have no password; register and claim the sessions")
    user = await user_crud.get_by_id(db, principal.user_id)
    if user is None:  # deleted while the credential was in flight
        raise Unauthorized()
    if "display_name" in changes:
        user.display_name = changes["display_name"]
    if changes.get("password") is not None:
        current = changes.get("current_password")
        if not current:
            raise ValidationFailed(
                "current_password is required to change the password", ["body", "current_password"]
            )
        # A stolen access token must not become a way to guess the password: the check draws
        # on the login's per-account budget of failures.
        account = normalize_email(user.email)
        await auth.count_password_guess(settings, limiter, account)
        if not await verify_password(current, user.password_hash, settings.bcrypt_rounds):
            raise ValidationFailed("current_password is wrong", ["body", "current_password"])
        await auth.forgive_password_guess(settings, limiter, account)
        user.password_hash = await hash_password(changes["password"], settings.bcrypt_rounds)
        # A new password ends every login made with the old one (their refresh tokens);
        # access tokens still run out on their own within ACCESS_TOKEN_MINUTES.
        await token_crud.revoke_all_for_user(db, user.id, datetime.now(UTC))
    await db.flush()
    return user


async def delete_me(
    db: AsyncSession,
    settings: Settings,
    cache: Cache,
    bus: Bus,
    principal: Principal,
    sessionmaker: async_sessionmaker[AsyncSession],
    archive: ArchiveStore,
) -> None:
    # The lease rows of the user's answers first, before any session's row (which lock_keys
    # takes): the order a completion or a cancel takes them in (crud/generations.py).
    generating = await generation_crud.lock_leases(db, principal.user_id)
    # The objects of its sessions are deleted once the rows are committed gone.
    keys = await archive_crud.lock_keys(db, principal.user_id)
    await deletions.delete_after_commit(db, sessionmaker, archive, keys)
    key_hashes = await api_key_crud.hashes_for_user(db, principal.user_id)
    await user_crud.delete_by_id(db, principal.user_id)
    events.stop_generations_after_commit(db, bus, generating)
    principals.revoke_after_commit(
        db,
        cache,
        settings.principal_cache_seconds,
        principals.user_cache_key(principal.user_id),
        *(principals.api_key_cache_key(key_hash) for key_hash in key_hashes),
    )
