"""Background housekeeping run by each server process."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chat_store.crud import idempotency as idempotency_crud

logger = logging.getLogger(__name__)

INTERVAL_SECONDS = 600.0


async def purge_expired_idempotency_keys(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    """Delete expired idempotency records in small batches (short transactions, short locks)."""
    removed = 0
    while True:
        async with sessionmaker() as db, db.begin():
            batch = await idempotency_crud.delete_expired(db, datetime.now(UTC))
        removed += batch
        if batch == 0:
            return removed


async def run_forever(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    while True:
        await asyncio.sleep(INTERVAL_SECONDS)
        try:
            removed = await purge_expired_idempotency_keys(sessionmaker)
            if removed:
                logger.info("purged %d expired idempotency keys", removed)
        except Exception:  # housekeeping must never take the server down
            logger.exception("housekeeping failed")
