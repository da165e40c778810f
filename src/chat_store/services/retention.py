"""Retention: delete sessions (and their messages) idle for longer than a cut-off."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chat_store.crud import archive as archive_crud
from chat_store.crud import chat_sessions as chat_session_crud
from chat_store.crud import generations as generation_crud
from chat_store.services.archive import deletions
from chat_store.services.archive.deletions import DeletionReport
from chat_store.storage import ArchiveStore

# Small batches, each its own transaction: a purge never holds locks for long.
BATCH_SESSIONS = 100

_DURATION = re.compile(r"^\s*(\d+)\s*([dhm])\s*$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def parse_duration(text: str) -> timedelta:
    """`90d`, `12h` or `30m`."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (write e.g. 90d, 12h, 30m)")
    value = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    if value <= timedelta(0):
        raise ValueError("the duration must be positive")
    return value


@dataclass(frozen=True)
class PurgeReport:
    cutoff: datetime
    sessions: int
    messages: int
    dry_run: bool
    # The archive objects deleted after their sessions (those earlier runs left listed too),
    # and why some are still listed, when the store refused one (the next run deletes them).
    objects: DeletionReport = field(default_factory=DeletionReport)


async def purge_idle_sessions(
    sessionmaker: async_sessionmaker[AsyncSession],
    older_than: timedelta,
    *,
    dry_run: bool,
    archive: ArchiveStore | None = None,
) -> PurgeReport:
    """Delete the sessions idle since the cut-off (but those with an answer being generated),
    with their messages and, given the `archive`, their archive objects."""
    cutoff = datetime.now(UTC) - older_than
    if dry_run:
        async with sessionmaker() as db:
            sessions, messages = await chat_session_crud.idle_summary(db, cutoff)
        return PurgeReport(cutoff, sessions, messages, dry_run=True)
    total_sessions = total_messages = 0
    while True:
        async with sessionmaker() as db, db.begin():
            chosen = await chat_session_crud.idle_batch(db, cutoff, BATCH_SESSIONS)
            # The lease rows of the batch's answers before its sessions' rows: the order a
            # continue, a cancel or a takeover takes them in (crud/generations.py).
            await generation_crud.lock_leases_of_sessions(db, chosen)
            deleted = await chat_session_crud.delete_idle(db, chosen, cutoff)
            # Listed with the rows' deletion, deleted once it has committed (below).
            await archive_crud.queue_deletions(db, deleted.archive_keys, datetime.now(UTC))
        total_sessions += deleted.sessions
        total_messages += deleted.messages
        if deleted.chosen < BATCH_SESSIONS:
            break
    objects = DeletionReport()
    if archive is not None:
        objects = await deletions.delete_listed(sessionmaker, archive)
    return PurgeReport(cutoff, total_sessions, total_messages, dry_run=False, objects=objects)
