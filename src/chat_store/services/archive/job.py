"""The archive job (hourly, and `chat-store archive`): every session idle for long enough,
archived in batches, after finishing what earlier runs left half-way."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from chat_store.crud import archive as archive_crud
from chat_store.errors import ArchiveUnavailable
from chat_store.services.archive.archiver import ArchiveAborted, Archiver
from chat_store.services.archive.archiving import archive_session
from chat_store.services.archive.restoring import release_archive

logger = logging.getLogger(__name__)

# Sessions read per query by the job; each is archived in transactions of its own.
BATCH_SESSIONS = 100


@dataclass(frozen=True)
class ArchiveReport:
    cutoff: datetime
    dry_run: bool
    sessions: int  # archived (or, dry run, due)
    messages: int
    finished: int = 0  # half-way sessions archived
    released: int = 0  # half-way sessions whose object was deleted
    skipped: int = 0  # changed while being archived: left for the next run
    failed: int = 0  # errors (logged); left half-way for the next run


async def _archive_counted(
    archiver: Archiver, session_id: uuid.UUID, cutoff: datetime, counts: dict[str, int]
) -> int | None:
    try:
        return await archive_session(archiver, session_id, cutoff)
    except ArchiveAborted as exc:
        logger.info("archive: %s", exc)
        counts["skipped"] += 1
    except ArchiveUnavailable as exc:  # the store's failure, said in one line (no secret)
        logger.warning("archive: session %s failed: %s", session_id, exc.detail)
        counts["failed"] += 1
    except Exception:
        logger.exception("archive: session %s failed", session_id)
        counts["failed"] += 1
    return None


async def finish_half_way(archiver: Archiver, cutoff: datetime, counts: dict[str, int]) -> None:
    """Sessions left half-way by a crash (or a restore whose object is still there): archived
    when still due, released otherwise."""
    after: uuid.UUID | None = None
    while True:
        async with archiver.sessionmaker() as db:
            ids = await archive_crud.unfinished(db, after, BATCH_SESSIONS)
        for session_id in ids:
            archived = await _archive_counted(archiver, session_id, cutoff, counts)
            if archived is not None:
                counts["finished"] += 1
                counts["sessions"] += 1
                counts["messages"] += archived
                continue
            async with archiver.sessionmaker() as db:
                row = await archive_crud.get_session(db, session_id)
            if row is not None and row.archived_at is None and row.archive_key is not None:
                try:
                    if await release_archive(archiver, session_id, row.archive_key):
                        counts["released"] += 1
                except ArchiveUnavailable as exc:
                    logger.warning(
                        "archive: releasing session %s failed: %s", session_id, exc.detail
                    )
                    counts["failed"] += 1
                except Exception:
                    logger.exception("archive: releasing session %s failed", session_id)
                    counts["failed"] += 1
        if len(ids) < BATCH_SESSIONS:
            return
        after = ids[-1]


async def archive_idle_sessions(
    archiver: Archiver, older_than: timedelta, *, dry_run: bool
) -> ArchiveReport:
    """Archive every session idle for longer than `older_than` (the hourly job, and
    `chat-store archive`), after finishing what earlier runs left half-way."""
    cutoff = datetime.now(UTC) - older_than
    if dry_run:
        async with archiver.sessionmaker() as db:
            sessions, messages = await archive_crud.due_summary(db, cutoff)
        return ArchiveReport(cutoff, True, sessions, messages)
    counts: dict[str, Any] = dict.fromkeys(
        ("sessions", "messages", "finished", "released", "skipped", "failed"), 0
    )
    await finish_half_way(archiver, cutoff, counts)
    after: tuple[datetime, uuid.UUID] | None = None
    while True:
        async with archiver.sessionmaker() as db:
            due = await archive_crud.due_sessions(db, cutoff, after, BATCH_SESSIONS)
        for _, session_id in due:
            archived = await _archive_counted(archiver, session_id, cutoff, counts)
            if archived is not None:
                counts["sessions"] += 1
                counts["messages"] += archived
        if len(due) < BATCH_SESSIONS:
            return ArchiveReport(cutoff, False, **counts)
        after = due[-1]
