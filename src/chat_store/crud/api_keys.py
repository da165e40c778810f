from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chat_store.db import add_row
from chat_store.models import ApiKey


async def create(
    db: AsyncSession,
    *,
    user_id: uuid.UUID,
    name: str,
    prefix: str,
    key_hash: str,
    expires_at: datetime | None,
) -> ApiKey:
    row = ApiKey(
        user_id=user_id, name=name, prefix=prefix, key_hash=key_hash, expires_at=expires_at
    )
    return await add_row(db, row)


async def get_by_id(db: AsyncSession, key_id: uuid.UUID) -> ApiKey | None:
    return await db.get(ApiKey, key_id)


async def get_by_hash(db: AsyncSession, key_hash: str) -> ApiKey | None:
    result = await db.execute(select(ApiKey).where(ApiKey.key_hash == key_hash))
    return result.scalar_one_or_none()


async def list_for_user(db: AsyncSession, user_id: uuid.UUID) -> list[ApiKey]:
    result = await db.execute(
        select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.id.desc())
    )
    return list(result.scalars())


async def count_unexpired(db: AsyncSession, user_id: uuid.UUID, now: datetime) -> int:
    result = await db.execute(
        select(func.count())
        .select_from(ApiKey)
        .where(
            ApiKey.user_id == user_id,
            or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
        )
    )
    return int(result.scalar_one())


async def hashes_for_user(db: AsyncSession, user_id: uuid.UUID) -> list[str]:
    result = await db.execute(select(ApiKey.key_hash).where(ApiKey.user_id == user_id))
    return list(result.scalars())


async def delete_for_user(db: AsyncSession, user_id: uuid.UUID, key_id: uuid.UUID) -> str | None:
    """Delete one of the user's keys; returns its hash, or None when there is no such key."""
    result = await db.execute(
        delete(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.user_id == user_id)
        .returning(ApiKey.key_hash)
    )
    return result.scalar_one_or_none()


async def touch_last_used(db: AsyncSession, key_id: uuid.UUID, at: datetime) -> None:
    await db.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=at))
