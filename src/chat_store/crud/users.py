from __future__ import annotations

import uuid

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from chat_store.models import User


async def get_by_id(db: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await db.get(User, user_id)


async def get_by_email(db: AsyncSession, email: str) -> User | None:
    result = await db.execute(select(User).where(User.email == email))
    return result.scalar_one_or_none()


async def create(
    db: AsyncSession, *, email: str, password_hash: str, display_name: str | None
) -> User:
    user = User(email=email, password_hash=password_hash, display_name=display_name)
    db.add(user)
    await db.flush()
    return user


async def delete_by_id(db: AsyncSession, user_id: uuid.UUID) -> None:
    # Sessions, messages, keys and tokens go with it through ON DELETE CASCADE.
    await db.execute(delete(User).where(User.id == user_id))
