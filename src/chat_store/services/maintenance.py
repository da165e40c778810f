"""Background housekeeping run by each server process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chat_store.crud import auth_tokens as token_crud
from chat_store.crud import idempotency as idempotency_crud
from chat_store.services import archive, retention

logger = logging.getLogger(__name__)

FIRST_RUN_SECONDS = 60.0  # soon after start: a process that restarts often still cleans up
INTERVAL_SECONDS = 3600.0  # then hourly


async def _purge_in_batches(
    sessionmaker: async_sessionmaker[AsyncSession],
    delete_batch: Callable[[AsyncSession, datetime], Awaitable[int]],
) -> int:
    """Run a batch delete until nothing is left (short transactions, short locks)."""
    removed = 0
    while True:
        async with sessionmaker() as db, db.begin():
            batch = await delete_batch(db, datetime.now(UTC))
        removed += batch
        if batch == 0:
            return removed


async def purge_expired_idempotency_keys(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    return await _purge_in_batches(sessionmaker, idempotency_crud.delete_expired)


async def purge_expired_refresh_tokens(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    return await _purge_in_batches(sessionmaker, token_crud.delete_expired)


async def run_forever(
    sessionmaker: async_sessionmaker[AsyncSession],
    retention_days: int | None,
    *,
    archiver: archive.Archiver | None = None,
    archive_after_days: int | None = None,
) -> None:
    delay = FIRST_RUN_SECONDS
    while True:
        await asyncio.sleep(delay)
        delay = INTERVAL_SECONDS
        try:
            removed = await purge_expired_idempotency_keys(sessionmaker)
            if removed:
                logger.info("purged %d expired idempotency keys", removed)
            removed = await purge_expired_refresh_tokens(sessionmaker)
            if removed:
                logger.info("purged %d expired refresh tokens", removed)
            if retention_days is not None:
                report = await retention.purge_idle_sessions(
                    sessionmaker,
                    timedelta(days=retention_days),
                    dry_run=False,
                    archive=archiver.store if archiver else None,
                )
                if report.sessions:
                    logger.info(
                        "retention: deleted %d sessions (%d messages) idle since %s",
                        report.sessions,
                        report.messages,
                        report.cutoff.isoformat(),
                    )
            if archiver is not None and archive_after_days is not None:
                archived = await archive.archive_idle_sessions(
                    archiver, timedelta(days=archive_after_days), dry_run=False
                )
                if archived.sessions or archived.released or archived.failed:
                    logger.info(
                        "archive: archived %d sessions (%d messages) idle since %s; "
                        "%d objects of restored sessions deleted, %d changed meanwhile, "
                        "%d failed",
                        archived.sessions,
                        archived.messages,
                        archived.cutoff.isoformat(),
                        archived.released,
                        archived.skipped,
                        archived.failed,
                    )
        except Exception:  # housekeeping must never take the server down
            logger.exception("housekeeping failed")
