"""Work that must wait until the transaction has committed (cache fills, event publishing)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession

logger = logging.getLogger(__name__)

_KEY = "after_commit"


def after_commit(db: AsyncSession, callback: Callable[[], Awaitable[None]]) -> None:
    db.info.setdefault(_KEY, []).append(callback)


async def when_committed(db: AsyncSession, callback: Callable[[], Awaitable[None]]) -> None:
    """Run `callback` once what the session has written is committed: after its open
    transaction commits, or now when none is open (a write that stood alone committed by
    itself, see db.fetch_one)."""
    if db.in_transaction():
        after_commit(db, callback)
    else:
        await callback()


def discard(db: AsyncSession) -> None:
    db.info.pop(_KEY, None)


async def run_after_commit(db: AsyncSession) -> None:
    for callback in db.info.pop(_KEY, []):
        try:
            await callback()
        except Exception:  # the data is committed; a failed side effect must not fail the request
            logger.exception("after-commit callback failed")
