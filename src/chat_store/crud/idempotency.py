from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from chat_store.db import ByDialect, fetch_one
from chat_store.models import IdempotencyKey
from chat_store.models.base import new_id

_K = IdempotencyKey


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


# Built once (a statement built per call costs its cache key again); the values are passed as
# parameters.
_CLAIM = ByDialect(
    postgresql=pg_insert(_K)
    .on_conflict_do_nothing(index_elements=[_K.user_id, _K.key])
    .returning(_K.id),
    sqlite=sqlite_insert(_K)
    .on_conflict_do_nothing(index_elements=[_K.user_id, _K.key])
    .returning(_K.id),
)
_SET_RESPONSE = (
    update(_K).where(_K.id == bindparam("b_id")).values(response_body=bindparam("b_body"))
)


async def claim(
    db: AsyncSession,
    *,
    user_id: uuid.UUID,
    key: str,
    request_hash: str,
    status_code: int,
    created_at: datetime,
    expires_at: datetime,
) -> uuid.UUID | None:
    """Insert the key's record, its answer still empty; returns its id, or None when the key
    has a record already (the unique pair is (user_id, key)). INSERT ... ON CONFLICT DO NOTHING:
    a concurrent insert of the same key waits here until the other transaction ends, then
    does nothing if it committed."""
    values = {
        "id": new_id(),
        "user_id": user_id,
        "key": key,
        "request_hash": request_hash,
        "status_code": status_code,
        "response_body": "",
        "created_at": created_at,
        "expires_at": expires_at,
    }
    row = await fetch_one(db, _CLAIM, values)
    return None if row is None else row["id"]


async def set_response(db: AsyncSession, record_id: uuid.UUID, response_body: str) -> None:
    await db.execute(_SET_RESPONSE, {"b_id": record_id, "b_body": response_body})


async def forget(db: AsyncSession, record_id: uuid.UUID) -> None:
    await db.execute(delete(_K).where(_K.id == record_id))


async def delete_expired_key(db: AsyncSession, user_id: uuid.UUID, key: str, now: datetime) -> None:
    """The key's record if it has expired (not purged yet): a live one is kept."""
    await db.execute(delete(_K).where(_K.user_id == user_id, _K.key == key, _K.expires_at <= now))


async def delete_expired(db: AsyncSession, now: datetime, batch: int = 1000) -> int:
    ids = select(IdempotencyKey.id).where(IdempotencyKey.expires_at <= now).limit(batch)
    result = await db.execute(delete(IdempotencyKey).where(IdempotencyKey.id.in_(ids)))
    return int(result.rowcount)  # type: ignore[attr-defined]
