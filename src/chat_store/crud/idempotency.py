from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from chat_store.models import IdempotencyKey


async def get(
    db: AsyncSession, user_id: uuid.UUID, key: str, now: datetime
) -> IdempotencyKey | None:
    result = await db.execute(
        select(IdempotencyKey).where(
            IdempotencyKey.user_id == user_id,
            IdempotencyKey.key == key,
            IdempotencyKey.expires_at > now,
        )
    )
    return result.scalar_one_or_none()


async def create(
    db: AsyncSession,
    *,
    user_id: uuid.UUID,
    key: str,
    request_hash: str,
    status_code: int,
    response_body: str,
    expires_at: datetime,
) -> None:
    # Only an expired record with the same key is replaced (the unique pair is (user_id, key)):
    # a live one must make this insert fail, so that a concurrent retry replays it.
    await db.execute(
        delete(IdempotencyKey).where(
            IdempotencyKey.user_id == user_id,
            IdempotencyKey.key == key,
            IdempotencyKey.expires_at <= datetime.now(UTC),
        )
    )
    db.add(
        IdempotencyKey(
            user_id=user_id,
            key=key,
            request_hash=request_hash,
            status_code=status_code,
            response_body=response_body,
            expires_at=expires_at,
        )
    )
    await db.flush()


async def delete_expired(db: AsyncSession, now: datetime, batch: int = 1000) -> int:
    ids = select(IdempotencyKey.id).where(IdempotencyKey.expires_at <= now).limit(batch)
    result = await db.execute(delete(IdempotencyKey).where(IdempotencyKey.id.in_(ids)))
    return int(result.rowcount)  # type: ignore[attr-defined]
