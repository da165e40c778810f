from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from chat_store.db import add_row
from chat_store.models import RefreshToken


async def create_refresh_token(
    db: AsyncSession,
    *,
    user_id: uuid.UUID,
    family_id: uuid.UUID,
    token_hash: str,
    expires_at: datetime,
) -> RefreshToken:
    row = RefreshToken(
        user_id=user_id, family_id=family_id, token_hash=token_hash, expires_at=expires_at
    )
    return await add_row(db, row)


async def get_refresh_token_for_update(db: AsyncSession, token_hash: str) -> RefreshToken | None:
    # FOR UPDATE: two concurrent refreshes with one token must not both succeed.
    result = await db.execute(
        select(RefreshToken).where(RefreshToken.token_hash == token_hash).with_for_update()
    )
    return result.scalar_one_or_none()


async def mark_used(db: AsyncSession, token_id: uuid.UUID, at: datetime) -> bool:
    """Spend a token; False when another request spent it first."""
    result = await db.execute(
        update(RefreshToken)
        .where(RefreshToken.id == token_id, RefreshToken.used_at.is_(None))
        .values(used_at=at)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def revoke_all_for_user(db: AsyncSession, user_id: uuid.UUID, at: datetime) -> None:
    await _revoke(db, RefreshToken.user_id == user_id, at)


async def delete_expired(db: AsyncSession, now: datetime, batch: int = 1000) -> int:
    """Expired refresh tokens, in a batch. Spent and revoked ones are kept until they expire:
    a reuse must still be recognised as one."""
    ids = select(RefreshToken.id).where(RefreshToken.expires_at <= now).limit(batch)
    result = await db.execute(delete(RefreshToken).where(RefreshToken.id.in_(ids)))
    return int(result.rowcount)  # type: ignore[attr-defined]


async def revoke_family(db: AsyncSession, family_id: uuid.UUID, at: datetime) -> None:
    await _revoke(db, RefreshToken.family_id == family_id, at)


async def _revoke(db: AsyncSession, tokens: ColumnElement[bool], at: datetime) -> None:
    """Revoke the `tokens` not revoked yet (a revoked one keeps its first revocation time).

    Locked first, in a statement of its own: a refresh in flight holds its token's row until it
    commits the token it hands out. The lock waits for that commit, and the update, a new
    statement, then sees that token too (one update alone would revoke only the rows its
    snapshot held, and the new token would outlive a password change or a reuse)."""
    await db.execute(
        select(RefreshToken.id).where(tokens, RefreshToken.revoked_at.is_(None)).with_for_update()
    )
    await db.execute(
        update(RefreshToken).where(tokens, RefreshToken.revoked_at.is_(None)).values(revoked_at=at)
    )
