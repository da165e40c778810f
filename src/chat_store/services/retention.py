"""Retention: delete sessions (and their messages) idle for longer than a cut-off."""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chat_store.crud import chat_sessions as chat_session_crud
from chat_store.crud import generations as generation_crud
from chat_store.errors import ArchiveUnavailable
from chat_store.storage import ArchiveStore

logger = logging.getLogger(__name__)

# Small batches, each its own transaction: a purge never holds locks for long.
BATCH_SESSIONS = 100
# Tries refused at their first archive object, one after the other, before a run stops.
_REFUSALS_TO_STOP = 3

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
    # Kept this run: their archive object could not be deleted (logged; tried again next run).
    kept: int = 0


class _ObjectKept(Exception):
    def __init__(self, session_id: uuid.UUID, *, first: bool) -> None:
        self.session_id = session_id
        self.first = first  # refused before any object of its try was deleted


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
    # Sessions whose archive object could not be deleted: kept this run, so that one object
    # (a lock on it, a file of another owner) does not hold back every session after it.
    kept: set[uuid.UUID] = set()
    # Tries whose very first object was refused, one after the other: the store as a whole
    # refuses (away, no rights). A try that deleted objects before its refusal is always tried
    # again at once: the rows of those objects must go in this run.
    refused_at_once = 0
    while True:
        try:
            async with sessionmaker() as db, db.begin():
                chosen = await chat_session_crud.idle_batch(db, cutoff, BATCH_SESSIONS, keep=kept)
                # The lease rows of the batch's answers before its sessions' rows: the order a
                # continue, a cancel or a takeover takes them in (crud/generations.py).
                await generation_crud.lock_leases_of_sessions(db, chosen)
                deleted = await chat_session_crud.delete_idle(db, chosen, cutoff)
                # Before the rows are committed gone: a failure here keeps the batch's
                # sessions, and the batch is done again at once without that one (an object
                # already deleted is not an error).
                if archive is not None:
                    for position, (session_id, key) in enumerate(deleted.archive_keys):
                        try:
                            await archive.delete(key)
                        except ArchiveUnavailable as exc:
                            logger.warning(
                                "retention: session %s kept: its archive object could not be "
                                "deleted (%s)",
                                session_id,
                                exc.detail,
                            )
                            raise _ObjectKept(session_id, first=position == 0) from None
        except _ObjectKept as refused:
            kept.add(refused.session_id)
            refused_at_once = refused_at_once + 1 if refused.first else 0
            if refused_at_once >= _REFUSALS_TO_STOP:
                # Each more try would hold a batch's deletion open through the store's retries.
                # No object was deleted in these tries: nothing is left half-way.
                logger.warning(
                    "retention: the archive store refused %d objects in a row; stopped",
                    refused_at_once,
                )
                return PurgeReport(
                    cutoff, total_sessions, total_messages, dry_run=False, kept=len(kept)
                )
            continue
        refused_at_once = 0
        total_sessions += deleted.sessions
        total_messages += deleted.messages
        if deleted.chosen < BATCH_SESSIONS:
            return PurgeReport(
                cutoff, total_sessions, total_messages, dry_run=False, kept=len(kept)
            )
