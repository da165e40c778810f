"""Archiving one session, step by step: record the key, write the object, read it back, then
mark the session archived and delete its messages; and what an aborted archive leaves."""

from __future__ import annotations

import hashlib
import uuid
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from chat_store.crud import archive as archive_crud
from chat_store.crud import generations as generation_crud
from chat_store.models import ChatSession
from chat_store.services import export
from chat_store.services.archive.archiver import (
    GENERATIONS,
    ArchiveAborted,
    ArchivedGeneration,
    Archiver,
    object_key,
)

# gzip framing for zlib's streaming (de)compressor.
_GZIP_WBITS = 16 + zlib.MAX_WBITS


@dataclass(frozen=True)
class ArchivePlan:
    session_id: uuid.UUID
    key: str
    version: int  # the session's history version when its key was recorded
    cutoff: datetime  # idle since: a lease that ran out before it holds nothing back


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


async def begin_archive(
    archiver: Archiver, session_id: uuid.UUID, cutoff: datetime, *, now: datetime | None = None
) -> ArchivePlan | None:
    """Step 1: record the object key on the session, if it is due (idle since `cutoff`, not
    archived, not restored since). None when it is not due."""
    key = object_key(session_id, now or datetime.now(UTC))
    async with archiver.sessionmaker() as db, db.begin():
        claimed = await archive_crud.claim(db, session_id, key, cutoff)
    return ArchivePlan(session_id, claimed[0], claimed[1], cutoff) if claimed else None


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


async def _with_generations(
    archiver: Archiver, plan: ArchivePlan, document: AsyncIterator[str]
) -> AsyncIterator[str]:
    """`document` (render_json's JSON object) with one member more, the session's generations,
    read after the messages: the check that the session did not change follows them."""
    last: str | None = None
    async for text in document:
        if last is not None:
            yield last
        last = text
    # The document ends with its closing brace and a newline: the member goes in before them.
    if last is None or not last.endswith("}\n"):
        raise RuntimeError("the export's JSON document does not end as expected")
    async with archiver.sessionmaker() as db:
        rows = await archive_crud.generations(db, plan.session_id)
    members = [ArchivedGeneration.from_row(row).to_dict() for row in rows]
    yield f"{last[:-2]},{export.encode(GENERATIONS)}:{export.encode(members)}}}\n"


async def write_archive(archiver: Archiver, plan: ArchivePlan) -> WrittenArchive:
    """Step 2: the session's JSON export, with its generations, gzipped, streamed into the
    object (constant memory). The messages are read in several statements; the upload is
    completed only if the session is still as it was when they started, so the object never
    holds a torn copy."""
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
        document = export.render_json(session, counted())
        async for text in _with_generations(archiver, plan, document):
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
    messages, keeping their ids taken. (release_archive deletes objects under the same lock, so
    none can go between the check and the commit.)"""
    plan = verified.written.plan
    async with archiver.sessionmaker() as db, db.begin():
        # The lease rows first (the messages' deletion reaches them by cascade): the lock
        # order of crud/generations.py, which a /continue of one of its answers takes.
        await generation_crud.lock_leases_of_sessions(db, [plan.session_id])
        marked = await archive_crud.mark_archived(
            db, plan.session_id, plan.key, plan.version, now or datetime.now(UTC)
        )
        if not marked:
            raise ArchiveAborted(f"session {plan.session_id} changed while it was being archived")
        if await archive_crud.is_generating(db, plan.session_id, plan.cutoff):
            raise ArchiveAborted(f"session {plan.session_id} has an answer being generated")
        info = await archiver.store.info(plan.key)
        if info is None or info.e_tag != verified.e_tag:
            raise ArchiveAborted(f"the archive object {plan.key} changed after it was verified")
        await archive_crud.keep_archived_ids(db, plan.session_id)
        await archive_crud.delete_messages(db, plan.session_id)


async def abandon_archive(archiver: Archiver, plan: ArchivePlan) -> bool:
    """After an aborted archive: delete the object it wrote, unless the session still has its
    key. A session that does is half-way or archived (by another run, whose verified object it
    is): the job archives or releases it. One that does not (deleted, released, or given
    another key while the object was written) would leave the object to no one, with the
    messages in it. Under the session's row lock, as release_archive, so no archive commits on
    the object and no key is recorded meanwhile. True when it was deleted."""
    async with archiver.sessionmaker() as db, db.begin():
        if await archive_crud.lock_archive_key(db, plan.session_id) == plan.key:
            return False
        await archiver.store.delete(plan.key)
    return True


async def archive_session(
    archiver: Archiver, session_id: uuid.UUID, cutoff: datetime
) -> int | None:
    """All four steps; the number of messages archived, or None when the session is not due.
    Raises ArchiveAborted when it changed meanwhile (it stays in the database, or is gone);
    the object written is not left behind for no session."""
    plan = await begin_archive(archiver, session_id, cutoff)
    if plan is None:
        return None
    try:
        written = await write_archive(archiver, plan)
        verified = await verify_archive(archiver, written)
        await commit_archive(archiver, verified)
    except ArchiveAborted:
        await abandon_archive(archiver, plan)
        raise
    return written.messages
