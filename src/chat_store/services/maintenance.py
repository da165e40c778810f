"""Background housekeeping run by each server process."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chat_store.crud import idempotency as idempotency_crud
from chat_store.services import retention

logger = logging.getLogger(__name__)

INTERVAL_SECONDS = 3600.0  # hourly


async def purge_expired_idempotency_keys(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    """Delete expired idempotency records in small batches (short transactions, short locks)."""
    removed = 0
    while True:
        async with sessionmaker() as db, db.begin():
            batch = await idempotency_crud.delete_expired(db, datetime.now(UTC))
        removed += batch
        if batch == 0:
            return removed


async def run_forever(
    sessionmaker: async_sessionmaker[AsyncSession], retention_days: int | None
) -> None:
    while True:
        await asyncio.sleep(INTERVAL_SECONDS)
        try:
            removed = await purge_expired_idempotency_keys(sessionmaker)
            if removed:
                logger.info("purged %d expired idempotency keys", removed)
            if retention_days is not None:
                report = await retention.purge_idle_sessions(
                    sessionmaker, timedelta(days=retention_days), dry_run=False
                )
                if report.sessions:
                    logger.info(
                        "retention: deleted %d sessions (%d messages) idle since %s",
                        report.sessions,
                        report.messages,
                        report.cutoff.isoformat(),
                    )
        except Exception:  # housekeeping must never take the server down
            logger.exception("housekeeping failed")
