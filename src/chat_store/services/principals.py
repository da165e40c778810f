"""Who is calling: a JWT and an API key both resolve to one Principal."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from chat_store.crud import api_keys as api_key_crud
from chat_store.crud import users as user_crud
from chat_store.errors import Unauthorized
from chat_store.security import API_KEY_PREFIX, decode_access_token, sha256_hex
from chat_store.settings import Settings

# last_used_at is a hint for people, not an audit log: one write per key per minute at most.
_LAST_USED_GRANULARITY = timedelta(seconds=60)


@dataclass(frozen=True)
class Principal:
    user_id: uuid.UUID
    kind: Literal["user", "api_key"]
    api_key_id: uuid.UUID | None = None


async def from_bearer(db: AsyncSession, settings: Settings, token: str) -> Principal:
    if token.startswith(API_KEY_PREFIX):
        return await from_api_key(db, token)
    claims = decode_access_token(token, settings.jwt_secret_value(), settings.jwt_algorithm)
    # The token outlives nothing: a deleted user's still-valid JWT is refused.
    if await user_crud.get_by_id(db, claims.user_id) is None:
        raise Unauthorized("Invalid token")
    return Principal(user_id=claims.user_id, kind="user")


async def from_api_key(db: AsyncSession, key: str) -> Principal:
    if not key.startswith(API_KEY_PREFIX):
        raise Unauthorized("Invalid API key")
    # The lookup is by SHA-256 of a 256-bit secret: an equality match on the hash leaks nothing
    # usable about the secret, so no separate constant-time compare is needed.
    row = await api_key_crud.get_by_hash(db, sha256_hex(key))
    now = datetime.now(UTC)
    if row is None:
        raise Unauthorized("Invalid API key")
    if row.expires_at is not None and row.expires_at <= now:
        raise Unauthorized("API key expired")
    if row.last_used_at is None or now - row.last_used_at > _LAST_USED_GRANULARITY:
        await api_key_crud.touch_last_used(db, row.id, now)
    return Principal(user_id=row.user_id, kind="api_key", api_key_id=row.id)
