from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from chat_store.cache import Cache
from chat_store.crud import api_keys as api_key_crud
from chat_store.crud import users as user_crud
from chat_store.errors import (
    ApiKeyLimit,
    ApiKeyNotFound,
    GuestNotAllowed,
    NotFound,
    Unauthorized,
    ValidationFailed,
)
from chat_store.schemas.api_keys import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from chat_store.schemas.common import Page
from chat_store.security import new_api_key, sha256_hex
from chat_store.services import principals
from chat_store.services.auth import normalize_email
from chat_store.settings import Settings

_SHOWN_PREFIX_CHARS = 12


async def create_api_key(
    db: AsyncSession,
    settings: Settings,
    user_id: uuid.UUID,
    body: ApiKeyCreate,
    *,
    guest: bool = False,
    secret: str | None = None,
    made_with_key: uuid.UUID | None = None,
) -> ApiKeyCreated:
    """A new key, within MAX_API_KEYS_PER_USER unexpired keys (revoked keys are deleted, so
    they do not count; expired ones do not either, so short-lived keys made per job never fill
    the quota). Its secret is generated unless given (`chat-store seed` names its keys).

    Made with a key that expires (`made_with_key`), it expires no later than that key: without
    `expires_at` it takes that key's expiry, a later one is refused. A short-lived key (a CI
    job's) cannot outlive itself through the keys it makes.

    A key deleted since it was verified (the credential cache trusts a verified key for a few
    seconds, and another worker's revocation may not have reached this one) makes nothing: the
    request is refused as an unknown key's is. Its expiry is gone with its row, and a key made
    without it would never expire."""
    if guest:
        raise GuestNotAllowed("Guests cannot create API keys; register and claim the sessions")
    now = datetime.now(UTC)
    if body.expires_at is not None and body.expires_at <= now:
        raise ValidationFailed("expires_at must be in the future", ["body", "expires_at"])
    expires_at = body.expires_at
    maker = await api_key_crud.get_by_id(db, made_with_key) if made_with_key else None
    if made_with_key is not None and maker is None:
        raise Unauthorized("Invalid API key")
    if maker is not None and maker.expires_at is not None:
        if expires_at is None:
            expires_at = maker.expires_at
        elif expires_at > maker.expires_at:
            raise ValidationFailed(
                "expires_at must not be later than the expiry of the API key that makes it "
                f"({maker.expires_at.isoformat()})",
                ["body", "expires_at"],
            )
    # The owner's row is locked first: concurrent creates are counted one after the other.
    if not await user_crud.lock(db, user_id):
        raise Unauthorized()
    if await api_key_crud.count_unexpired(db, user_id, now) >= settings.max_api_keys_per_user:
        raise ApiKeyLimit(settings.max_api_keys_per_user)
    secret = secret or new_api_key()
    row = await api_key_crud.create(
        db,
        user_id=user_id,
        name=body.name,
        prefix=secret[:_SHOWN_PREFIX_CHARS],
        key_hash=sha256_hex(secret),
        expires_at=expires_at,
    )
    return ApiKeyCreated(**ApiKeyRead.model_validate(row).model_dump(), key=secret)


async def create_api_key_for_email(
    db: AsyncSession, settings: Settings, email: str, body: ApiKeyCreate
) -> ApiKeyCreated:
    """Operator bootstrap (CLI): a key for the user with this email."""
    user = await user_crud.get_by_email(db, normalize_email(email))
    if user is None:
        raise NotFound(f"No user with email {email}")
    return await create_api_key(db, settings, user.id, body)


async def list_api_keys(db: AsyncSession, user_id: uuid.UUID) -> Page[ApiKeyRead]:
    # A user holds a handful of keys: one page holds them all.
    data = [ApiKeyRead.model_validate(row) for row in await api_key_crud.list_for_user(db, user_id)]
    return Page[ApiKeyRead].of(data, has_more=False)


async def revoke_api_key(
    db: AsyncSession, settings: Settings, cache: Cache, user_id: uuid.UUID, key_id: uuid.UUID
) -> None:
    key_hash = await api_key_crud.delete_for_user(db, user_id, key_id)
    if key_hash is None:
        raise ApiKeyNotFound()
    principals.revoke_after_commit(
        db, cache, settings.principal_cache_seconds, principals.api_key_cache_key(key_hash)
    )
