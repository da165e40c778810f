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
    steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("expired idempotency keys", lambda: _purge_keys(sessionmaker)),
        ("expired refresh tokens", lambda: _purge_tokens(sessionmaker)),
    ]
    if retention_days is not None:
        steps.append(("retention", lambda: _retention(sessionmaker, retention_days)))
    if archiver is not None:
        # Those of the sessions retention deleted just now, and those whose deletion the store
        # refused, or a stopped process never got to: one run over the list.
        steps.append(("archive object deletions", lambda: _delete_listed_objects(archiver)))
    if archiver is not None and archive_after_days is not None:
        steps.append(("archive", lambda: _archive(archiver, archive_after_days)))
    delay = FIRST_RUN_SECONDS
    while True:
        await asyncio.sleep(delay)
        delay = INTERVAL_SECONDS
        # Each step apart: one that fails (the database away, a store that refuses) must not
        # keep the others from running.
        for name, step in steps:
            try:
                await step()
            except Exception:  # housekeeping must never take the server down
                logger.exception("housekeeping: %s failed", name)


async def _purge_keys(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    removed = await purge_expired_idempotency_keys(sessionmaker)
    if removed:
        logger.info("purged %d expired idempotency keys", removed)


async def _purge_tokens(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    removed = await purge_expired_refresh_tokens(sessionmaker)
    if removed:
        logger.info("purged %d expired refresh tokens", removed)


async def _retention(sessionmaker: async_sessionmaker[AsyncSession], days: int) -> None:
    # Without the store: the archive objects of the sessions it deletes are listed, and the
    # next step deletes them.
    report = await retention.purge_idle_sessions(sessionmaker, timedelta(days=days), dry_run=False)
    if report.sessions:
        logger.info(
            "retention: deleted %d sessions (%d messages) idle since %s",
            report.sessions,
            report.messages,
            report.cutoff.isoformat(),
        )


async def _delete_listed_objects(archiver: archive.Archiver) -> None:
    report = await archive.delete_listed(archiver.sessionmaker, archiver.store)
    if report.deleted or report.refused:
        logger.info(
            "archive: deleted %d objects of deleted sessions; %d refused (%s)",
            report.deleted,
            report.refused,
            report.reason,
        )


async def _archive(archiver: archive.Archiver, days: int) -> None:
    archived = await archive.archive_idle_sessions(archiver, timedelta(days=days), dry_run=False)
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
