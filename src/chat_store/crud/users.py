from __future__ import annotations

import uuid

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from chat_store.db import add_row
from chat_store.models import User


async def get_by_id(db: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await db.get(User, user_id)


async def lock(db: AsyncSession, user_id: uuid.UUID) -> bool:
    """Lock the user's row until the transaction ends (Postgres; SQLite serialises writers
    anyway), so that rules counting a user's rows see each other's inserts; False when the user
    is gone. FOR NO KEY UPDATE: inserts that refer to the user (their FOR KEY SHARE) go on."""
    result = await db.execute(
        select(User.id).where(User.id == user_id).with_for_update(key_share=True)
    )
    return result.scalar_one_or_none() is not None


async def lock_out_inserts(db: AsyncSession, user_id: uuid.UUID) -> bool:
    """Lock the user's row FOR UPDATE until the transaction ends (Postgres; SQLite serialises
    writers anyway): inserts that refer to the user wait for it, and it waits for theirs that
    are not committed yet, so the transaction's statements see every row of the user. False
    when the user is gone."""
    result = await db.execute(select(User.id).where(User.id == user_id).with_for_update())
    return result.scalar_one_or_none() is not None


async def get_by_email(db: AsyncSession, email: str) -> User | None:
    result = await db.execute(select(User).where(User.email == email))
    return result.scalar_one_or_none()


async def create(
    db: AsyncSession,
    *,
    email: str,
    password_hash: str,
    display_name: str | None,
    is_guest: bool = False,
) -> User:
    row = User(
        email=email, password_hash=password_hash, display_name=display_name, is_guest=is_guest
    )
    return await add_row(db, row)


async def ensure_guest(
    db: AsyncSession, user_id: uuid.UUID, email: str, password_hash: str
) -> User | None:
    """The guest user with this email, made (with this id) if missing; None if the email is a
    real user's.

    INSERT ... ON CONFLICT DO NOTHING: concurrent first requests of one guest make one row, and
    no SAVEPOINT is needed. No conflict target: the id and the email are both unique, and
    concurrent inserts of the same guest collide on both.
    """
    dialect = db.get_bind().dialect.name
    insert_user = pg_insert(User) if dialect == "postgresql" else sqlite_insert(User)
    await db.execute(
        insert_user.values(
            id=user_id, email=email, password_hash=password_hash, is_guest=True
        ).on_conflict_do_nothing()
    )
    user = await get_by_email(db, email)
    return user if user is not None and user.is_guest else None


async def delete_by_id(db: AsyncSession, user_id: uuid.UUID) -> None:
    # Sessions, messages, keys and tokens go with it through ON DELETE CASCADE.
    await db.execute(delete(User).where(User.id == user_id))
