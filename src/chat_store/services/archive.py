"""Archive: the messages of a session idle for ARCHIVE_AFTER_DAYS move to the object store as
its gzipped chat-store/1 export; the session row stays. Any access to the messages brings them
back first.

A session is in one of three states (chat_session columns):

- live: archived_at and archive_key null; the messages are in the database.
- half-way: archive_key set, archived_at null; the messages are in the database, and the object
  at archive_key, if there is one, is a copy being written or one left by a restore. Never the
  only copy.
- archived: archived_at set; the messages are only in the object at archive_key.

Each step below runs (and commits) on its own, so a crash between any two leaves one of these
states, and the next run of the job finishes what was begun: a half-way session still due for
archiving is archived (its key is reused, its object written again), any other has its object
deleted and its key forgotten.

Archiving: begin_archive (record the key) → write_archive (stream the export into the object;
the upload completes only if the session did not change while it was read) → verify_archive
(read it back: the same bytes) → commit_archive (one transaction under the session's row lock:
still unchanged, the object still the verified one, then archived_at is set and the messages
deleted).

Restoring: load_archive (read and check the object) → insert_archived_messages (rows already
there are skipped) → mark_restored (archived_at cleared) → release_archive (the object deleted
under the row lock, the key forgotten).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chat_store.crud import archive as archive_crud
from chat_store.errors import ChatSessionNotFound
from chat_store.models import ChatSession
from chat_store.schemas.chat_sessions import ChatSessionRead
from chat_store.services import export, hooks
from chat_store.services.principals import Principal
from chat_store.state import AppState
from chat_store.storage import ArchiveStore

logger = logging.getLogger(__name__)

KEY_PREFIX = "chat_archives"
# Sessions read per query by the job; each is archived in transactions of its own.
BATCH_SESSIONS = 100
# gzip framing for zlib's streaming (de)compressor.
_GZIP_WBITS = 16 + zlib.MAX_WBITS


def object_key(session_id: uuid.UUID, at: datetime) -> str:
    return f"{KEY_PREFIX}/{at:%Y}/{at:%m}/{session_id}.json.gz"


@dataclass(frozen=True)
class Archiver:
    """What archiving needs: sessions of its own (it commits step by step) and the store."""

    sessionmaker: async_sessionmaker[AsyncSession]
    store: ArchiveStore

    @property
    def source(self) -> export.ExportSource:
        return export.ExportSource(self.sessionmaker, self.store)


class ArchiveAborted(Exception):
    """The session changed, or another process moved it, while it was being archived: nothing
    was archived and nothing is lost; a later run tries again."""


@dataclass(frozen=True)
class ArchivePlan:
    session_id: uuid.UUID
    key: str
    version: int  # the session's history version when its key was recorded


@dataclass(frozen=True)
class WrittenArchive:
    plan: ArchivePlan
    sha256: str  # of the JSON before compression
    size: int
    messages: int


@dataclass(frozen=True)
class VerifiedArchive:
    written: WrittenArchive
    e_tag: str | None  # the object's version tag when it read back right


# --- archiving, step by step


async def begin_archive(
    archiver: Archiver, session_id: uuid.UUID, cutoff: datetime, *, now: datetime | None = None
) -> ArchivePlan | None:
    """Step 1: record the object key on the session, if it is due (idle since `cutoff`, not
    archived, not restored since). None when it is not due."""
    key = object_key(session_id, now or datetime.now(UTC))
    async with archiver.sessionmaker() as db, db.begin():
        claimed = await archive_crud.claim(db, session_id, key, cutoff)
    return ArchivePlan(session_id, claimed[0], claimed[1]) if claimed else None


async def _unchanged(archiver: Archiver, plan: ArchivePlan) -> ChatSession:
    async with archiver.sessionmaker() as db:
        row = await archive_crud.get_session(db, plan.session_id)
    if (
        row is None
        or row.archived_at is not None
        or row.archive_key != plan.key
        or row.history_version != plan.version
    ):
        raise ArchiveAborted(f"session {plan.session_id} changed while it was being archived")
    return row


async def write_archive(archiver: Archiver, plan: ArchivePlan) -> WrittenArchive:
    """Step 2: the session's JSON export, gzipped, streamed into the object (constant memory).
    The messages are read in several statements; the upload is completed only if the session
    is still as it was when they started, so the object never holds a torn copy."""
    session = await _unchanged(archiver, plan)
    digest = hashlib.sha256()
    size = 0
    count = 0

    async def counted() -> AsyncIterator[list[export.Document]]:
        nonlocal count
        async for batch in export.message_documents(archiver.source, export.Exportable(session)):
            count += len(batch)
            yield batch

    async def gzipped() -> AsyncIterator[bytes]:
        nonlocal size
        compressor = zlib.compressobj(wbits=_GZIP_WBITS)
        async for text in export.render_json(session, counted()):
            data = text.encode("utf-8")
            digest.update(data)
            size += len(data)
            if compressed := compressor.compress(data):
                yield compressed
        await _unchanged(archiver, plan)  # raises: the upload is abandoned
        yield compressor.flush()

    await archiver.store.write(plan.key, gzipped())
    return WrittenArchive(plan, digest.hexdigest(), size, count)


async def verify_archive(archiver: Archiver, written: WrittenArchive) -> VerifiedArchive:
    """Step 3: read the object back; it must decompress to exactly the bytes written."""
    info, chunks = await archiver.store.read_stream(written.plan.key)
    decompressor = zlib.decompressobj(wbits=_GZIP_WBITS)
    digest = hashlib.sha256()
    size = 0
    try:
        async for chunk in chunks:
            data = decompressor.decompress(chunk)
            digest.update(data)
            size += len(data)
        data = decompressor.flush()
    except zlib.error as exc:
        raise ArchiveAborted(f"the archive object {written.plan.key} is not gzip") from exc
    digest.update(data)
    size += len(data)
    if not decompressor.eof or size != written.size or digest.hexdigest() != written.sha256:
        raise ArchiveAborted(f"the archive object {written.plan.key} does not read back as written")
    return VerifiedArchive(written, info.e_tag)


async def commit_archive(
    archiver: Archiver, verified: VerifiedArchive, *, now: datetime | None = None
) -> None:
    """Step 4, one transaction: mark the session archived if it is unchanged since step 1,
    check under its row lock that the object is still the verified one, then delete the
    messages. (release_archive deletes objects under the same lock, so none can go between the
    check and the commit.)"""
    plan = verified.written.plan
    async with archiver.sessionmaker() as db, db.begin():
        marked = await archive_crud.mark_archived(
            db, plan.session_id, plan.key, plan.version, now or datetime.now(UTC)
        )
        if not marked:
            raise ArchiveAborted(f"session {plan.session_id} changed while it was being archived")
        info = await archiver.store.info(plan.key)
        if info is None or info.e_tag != verified.e_tag:
            raise ArchiveAborted(f"the archive object {plan.key} changed after it was verified")
        await archive_crud.delete_messages(db, plan.session_id)


async def archive_session(
    archiver: Archiver, session_id: uuid.UUID, cutoff: datetime
) -> int | None:
    """All four steps; the number of messages archived, or None when the session is not due.
    Raises ArchiveAborted when it changed meanwhile (it stays in the database)."""
    plan = await begin_archive(archiver, session_id, cutoff)
    if plan is None:
        return None
    written = await write_archive(archiver, plan)
    verified = await verify_archive(archiver, written)
    await commit_archive(archiver, verified)
    return written.messages


# --- restoring, step by step


@dataclass(frozen=True)
class LoadedArchive:
    session_id: uuid.UUID
    user_id: uuid.UUID
    key: str
    messages: list[export.Document] = field(repr=False)


async def load_archive(
    db: AsyncSession, store: ArchiveStore, session_id: uuid.UUID, *, user_id: uuid.UUID | None
) -> LoadedArchive | None:
    """Step 1: the archived session's messages, read from its object and checked. None when the
    session is not archived (or not `user_id`'s)."""
    row = await archive_crud.get_session(db, session_id, user_id=user_id)
    if row is None or row.archived_at is None or row.archive_key is None:
        return None
    document = await export.read_archive(store, row.archive_key, session_id)
    return LoadedArchive(session_id, row.user_id, row.archive_key, document["messages"])


async def insert_archived_messages(db: AsyncSession, loaded: LoadedArchive) -> None:
    """Step 2: the messages as they were (ids, seqs, versions, times); rows a stopped restore
    inserted already are skipped."""
    rows = [
        export.message_row(
            document,
            message_id=uuid.UUID(document["id"]),
            session_id=loaded.session_id,
            user_id=loaded.user_id,
            seq=document["seq"],
            created_version=document["created_version"],
            version=document["version"],
            default_time=datetime.now(UTC),
        )
        for document in loaded.messages
    ]
    await archive_crud.insert_missing_messages(db, rows)


async def mark_restored(db: AsyncSession, loaded: LoadedArchive) -> bool:
    """Step 3: the session is live again (its object stays until release_archive)."""
    return await archive_crud.mark_restored(db, loaded.session_id, datetime.now(UTC))


async def release_archive(archiver: Archiver, session_id: uuid.UUID, key: str) -> bool:
    """Step 4 (and what the job does to a half-way session no longer due): forget the key of a
    session that is not archived and delete its object, in one transaction holding the row lock.
    False when the session is archived again (or gone, or holds another key): nothing done."""
    async with archiver.sessionmaker() as db, db.begin():
        if not await archive_crud.release_key(db, session_id, key):
            return False
        await archiver.store.delete(key)
    return True


async def restore_in(
    db: AsyncSession, archiver: Archiver, session_id: uuid.UUID, *, user_id: uuid.UUID | None
) -> str | None:
    """Steps 1 to 3 in `db`, committed by the caller; returns the key whose object
    release_archive deletes after that commit, or None when the session is not archived."""
    loaded = await load_archive(db, archiver.store, session_id, user_id=user_id)
    if loaded is None:
        return None
    await insert_archived_messages(db, loaded)
    await mark_restored(db, loaded)
    logger.info("restored session %s (%d messages)", session_id, len(loaded.messages))
    return loaded.key


def _release_after_commit(
    db: AsyncSession, archiver: Archiver, session_id: uuid.UUID, key: str
) -> None:
    async def release() -> None:
        # A failure leaves the session half-way: the job deletes the object later.
        await release_archive(archiver, session_id, key)

    hooks.after_commit(db, release)


async def ensure_restored(
    db: AsyncSession, archiver: Archiver, principal: Principal, session_id: uuid.UUID
) -> None:
    """The session lookup every message access goes through (api/messages.py, api/streams.py,
    the direct path): an archived session's messages are put back in this request's
    transaction before anything reads or writes them. A missing session or another owner's is
    left to the access itself to answer (404)."""
    if await archive_crud.is_archived(db, principal.user_id, session_id):
        await _restore_for_access(db, archiver, principal.user_id, session_id)


async def restore_for_access(
    app: AppState, db: AsyncSession, user_id: uuid.UUID, session_id: uuid.UUID
) -> None:
    """AppState.restore_archived: what a message route does when its own statement found the
    session archived."""
    await _restore_for_access(db, Archiver(app.sessionmaker, app.archive), user_id, session_id)


async def _restore_for_access(
    db: AsyncSession, archiver: Archiver, user_id: uuid.UUID, session_id: uuid.UUID
) -> None:
    """Steps 1 to 3 in the request's transaction, the object released once it commits;
    nothing when the session is not archived."""
    key = await restore_in(db, archiver, session_id, user_id=user_id)
    if key is not None:
        _release_after_commit(db, archiver, session_id, key)


async def restore_chat_session(
    db: AsyncSession, archiver: Archiver, principal: Principal, session_id: uuid.UUID
) -> ChatSessionRead:
    """POST /sessions/{id}/restore: the session, its messages back in the database."""
    key = await restore_in(db, archiver, session_id, user_id=principal.user_id)
    if key is not None:
        _release_after_commit(db, archiver, session_id, key)
    row = await archive_crud.get_session(db, session_id, user_id=principal.user_id)
    if row is None:
        raise ChatSessionNotFound()
    return ChatSessionRead.from_model(row)


# --- the job


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
