"""Archive objects of deleted sessions (models/archive_deletion.py): listed in the transaction
that deletes the sessions' rows, deleted once it has committed. Deleted first, an object whose
transaction is then undone (a later object refused, a timeout, a process stopped) would leave
its session archived with its only copy gone. A listed object the store refuses, or that a
stopped process never got to, is deleted by the next housekeeping run (or `chat-store purge`)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chat_store.crud import archive as archive_crud
from chat_store.errors import ArchiveUnavailable
from chat_store.services import hooks
from chat_store.storage import ArchiveStore

logger = logging.getLogger(__name__)

Sessionmaker = async_sessionmaker[AsyncSession]

# Listed objects read per query by the housekeeping run.
BATCH_KEYS = 100
# Refusals one after the other before a run stops: the store refuses as a whole (away, no
# rights), and each try waits through its retries. One that refuses an object of its own (a lock
# on it) holds back that object alone.
REFUSALS_TO_STOP = 3


@dataclass(frozen=True)
class DeletionReport:
    deleted: int = 0
    refused: int = 0  # still listed: the next run tries them again
    reason: str | None = None  # the store's last refusal, in one line


# Deletions under way after their request: kept here so that they are not collected meanwhile.
_DELETING: set[asyncio.Task[None]] = set()


async def delete_after_commit(
    db: AsyncSession, sessionmaker: Sessionmaker, store: ArchiveStore, keys: list[str]
) -> None:
    """List `keys` in `db`'s transaction, and delete their objects once it has committed, in a
    task of their own: the request answers once its rows are gone, whatever the store takes
    (each refusal waits through its retries). What the task does not get to (the process stops)
    stays listed."""
    if not keys:
        return
    await archive_crud.queue_deletions(db, keys, datetime.now(UTC))

    async def delete_soon() -> None:
        work = _delete_in_background(sessionmaker, store, keys)
        hooks.in_background(work, _DELETING, "archive-deletions")

    hooks.after_commit(db, delete_soon)


async def finish_deleting(within: float) -> None:
    """Wait up to `within` seconds for the deletions under way after their requests, then
    cancel those left (their keys stay listed): before the process closes its connections."""
    await hooks.settle(_DELETING, within)


async def _delete_in_background(
    sessionmaker: Sessionmaker, store: ArchiveStore, keys: list[str]
) -> None:
    try:
        report = await delete_objects(sessionmaker, store, keys)
    except Exception:  # the database away: the keys stay listed
        logger.exception("archive: deleting the objects of deleted sessions failed")
        return
    if report.deleted < len(keys):
        logger.warning(
            "archive: %d objects of deleted sessions could not be deleted yet (%s); the next "
            "housekeeping run deletes them",
            len(keys) - report.deleted,
            report.reason,
        )


async def delete_objects(
    sessionmaker: Sessionmaker, store: ArchiveStore, keys: list[str]
) -> DeletionReport:
    """Delete the listed objects of `keys` (one that is not there is not an error) and unlist
    them; those the store refuses stay listed, marked refused. Stops after REFUSALS_TO_STOP
    refusals in a row."""
    deleted: list[str] = []
    refused: list[str] = []
    in_a_row = 0
    reason: str | None = None
    try:
        for key in keys:
            try:
                await store.delete(key)
            except ArchiveUnavailable as exc:
                refused.append(key)
                in_a_row, reason = in_a_row + 1, exc.detail
                if in_a_row >= REFUSALS_TO_STOP:
                    break
                continue
            deleted.append(key)
            in_a_row = 0
    finally:
        if deleted or refused:
            async with sessionmaker() as db, db.begin():
                await archive_crud.forget_deletions(db, deleted)
                await archive_crud.mark_refused(db, refused, datetime.now(UTC))
    return DeletionReport(len(deleted), len(refused), reason)


async def delete_listed(sessionmaker: Sessionmaker, store: ArchiveStore) -> DeletionReport:
    """Delete every listed object (those never refused first); stops after REFUSALS_TO_STOP
    refusals in a row. An object refused in this run is not tried again in it."""
    started = datetime.now(UTC)
    deleted = refused = 0
    reason: str | None = None
    while True:
        async with sessionmaker() as db:
            keys = await archive_crud.queued_deletions(db, started, BATCH_KEYS)
        report = await delete_objects(sessionmaker, store, keys)
        deleted, refused = deleted + report.deleted, refused + report.refused
        reason = report.reason or reason
        stopped = report.deleted + report.refused < len(keys)
        if stopped or len(keys) < BATCH_KEYS:
            return DeletionReport(deleted, refused, reason)
