"""Export: one versioned format, `chat-store/1` (docs/export-format.md), streamed.

A session is a document of its fields and its messages, every field of every message (the
streamed text of an open message folded into partial_content). The same document is what an
archive object holds (services/archive.py) and what an import takes back (services/imports.py).

Nothing is read whole: messages are read in keyset batches by seq, each batch in a short session
of its own (a streaming answer never holds the request's session), and each batch is encoded
and sent before the next is read, so an export's memory does not grow with its size.

An answer goes on for as long as its client reads, so the credential it was asked with is
checked again between batches, as a live stream's is (`export_credential`): once it no longer
holds, the answer is cut (`ExportCut`).
"""

from __future__ import annotations

import functools
import gzip
import json
import logging
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chat_store.crud import archive as archive_crud
from chat_store.crud import chat_sessions as chat_session_crud
from chat_store.crud import export as export_crud
from chat_store.crud import messages as message_crud
from chat_store.crud.messages import StoredMessage
from chat_store.db import read_snapshot, run_to_the_end
from chat_store.errors import ArchiveUnavailable, ChatSessionNotFound
from chat_store.models import ChatSession, User
from chat_store.schemas.messages import OPEN_STATUSES
from chat_store.services import messages as message_service
from chat_store.services.principals import CredentialCheck, Principal
from chat_store.settings import Settings
from chat_store.storage import ArchiveStore

logger = logging.getLogger(__name__)

T = TypeVar("T")

FORMAT = "chat-store/1"
ExportFormat = Literal["json", "jsonl", "markdown"]
MEDIA_TYPES: dict[str, str] = {
    "json": "application/json",
    "jsonl": "application/jsonl",
    "markdown": "text/markdown; charset=utf-8",
}
EXTENSIONS: dict[str, str] = {"json": "json", "jsonl": "jsonl", "markdown": "md"}

# Messages per read: large enough that the round trips do not dominate, small enough that a
# batch of long answers stays a few megabytes.
MESSAGE_BATCH = 500
SESSION_BATCH = 100

Document = dict[str, Any]


class ExportCut(Exception):
    """The credential an export answer was asked with no longer holds: the answer ends here.

    Raised from the answer's body, after its 200 went out: the answer is left without the end
    of its body (api/export.py), so the client sees it incomplete, never a shorter file that
    looks whole (a JSONL export has no closing line). Not an AppError: there is no status left
    to answer with."""


def export_credential(principal: Principal, settings: Settings) -> CredentialCheck | None:
    """What an export answer to `principal` re-checks between its batches, at most every
    STREAM_CREDENTIAL_CHECK_SECONDS: a key revoked or expired, an access token expired or a user
    deleted while it runs cuts it. None for a guest without a row (its client id owns nothing
    that could be revoked)."""
    if principal.unsaved:
        return None
    return CredentialCheck(principal, settings.stream_credential_check_seconds)


async def _check(credential: CredentialCheck, db: AsyncSession) -> None:
    if not await credential.holds(db):
        logger.info(
            "export cut: the credential of user %s no longer holds", credential.principal.user_id
        )
        raise ExportCut("the credential the export was asked with no longer holds")


@dataclass(frozen=True)
class ExportSource:
    """Where an export reads: short read sessions, and the archive for archived sessions; for
    an answer, the caller's credential to check between batches (the archiver has none)."""

    sessionmaker: async_sessionmaker[AsyncSession]
    archive: ArchiveStore
    credential: CredentialCheck | None = None

    async def read(
        self, work: Callable[[AsyncSession], Awaitable[T]], *, snapshot: bool = False
    ) -> T:
        """`work` (one batch) in a short session of its own, the credential checked in it first
        when it is due; with `snapshot`, every statement of it reads one point in time
        (db.read_snapshot). It runs to its end if the client goes away meanwhile
        (db.run_to_the_end)."""

        async def in_a_session() -> T:
            async with self.sessionmaker() as db:
                if snapshot:
                    await read_snapshot(db)
                if self.credential is not None and self.credential.due():
                    await _check(self.credential, db)
                return await work(db)

        return await run_to_the_end(in_a_session())

    async def recheck(self) -> None:
        """Before a batch that reads nothing from the database (an archive's messages): the
        credential checked in a session of its own when it is due."""
        if self.credential is not None and self.credential.due():
            await self.read(_nothing)


async def _nothing(db: AsyncSession) -> None:
    return None


def time(value: datetime | None) -> str | None:
    """RFC 3339 in UTC with a Z, as the API writes times."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def encode(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def session_document(row: ChatSession) -> Document:
    has_workspace = any((row.workspace_repo, row.workspace_branch, row.workspace_path))
    return {
        "id": str(row.id),
        "title": row.title,
        "is_favorite": row.is_favorite,
        "status": row.status,
        "metadata": row.metadata_,
        "system_prompt": row.system_prompt,
        "workspace": {
            "repo": row.workspace_repo,
            "branch": row.workspace_branch,
            "path": row.workspace_path,
        }
        if has_workspace
        else None,
        "message_count": row.message_count,
        "total_tokens": row.total_tokens,
        "last_seq": row.last_seq,
        "last_message_at": time(row.last_message_at),
        "created_at": time(row.created_at),
        "updated_at": time(row.updated_at),
        "ended_at": time(row.ended_at),
    }


async def _message_batches(
    db: AsyncSession, session_id: uuid.UUID, after_seq: int | None, up_to_seq: int
) -> tuple[list[Document], int | None]:
    """One batch of the session's messages after `after_seq` and up to `up_to_seq`, as
    documents, and the last seq read (None when there are none)."""
    rows, _ = await message_crud.list_by_seq(db, session_id, MESSAGE_BATCH, after_seq=after_seq)
    rows = [row for row in rows if row.seq <= up_to_seq]
    if not rows:
        return [], None
    # As the API shows a message (its streamed text joined), plus the versions.
    open_ids = [row.id for row in rows if row.status in OPEN_STATUSES]
    chunks = await message_crud.chunk_texts(db, open_ids)
    documents = [
        {
            "id": str(row.id),
            "seq": row.seq,
            "role": row.role,
            "content": row.content,
            "partial_content": message_service.shown_partial(row, chunks.get(row.id)),
            "status": row.status,
            "error_message": row.error_message,
            "context": row.context,
            "metadata": row.metadata_,
            "token_count": row.token_count,
            "model": row.model,
            "latency_ms": row.latency_ms,
            "created_at": time(row.created_at),
            "updated_at": time(row.updated_at),
            "completed_at": time(row.completed_at),
            "created_version": row.created_version,
            "version": row.version,
            "tool_calls": row.tool_calls,
            "tool_call_id": row.tool_call_id,
        }
        for row in rows
    ]
    return documents, rows[-1].seq


@dataclass(frozen=True)
class Exportable:
    session: ChatSession
    # An archived session's messages, read from its object (not restored: an export changes
    # nothing). None: they are in the database.
    archived: list[Document] | None = None


async def exportable(source: ExportSource, session: ChatSession) -> Exportable:
    """The session, with its archived messages read now (before an answer starts, so that an
    unreadable archive is a real 503)."""
    if session.archived_at is None or session.archive_key is None:
        return Exportable(session)
    document = await read_archive(source.archive, session.archive_key, session.id)
    return Exportable(session, document["messages"])


async def _batch_and_archive_state(
    db: AsyncSession, *, session_id: uuid.UUID, after_seq: int | None, up_to_seq: int
) -> tuple[list[Document], int | None, ChatSession | None]:
    batch, last_seq = await _message_batches(db, session_id, after_seq, up_to_seq)
    # Read after the batch, in its snapshot: an archive that took the messages out of the
    # database before the batch was read shows here (one committed after it, with the next
    # batch).
    return batch, last_seq, await archive_crud.get_session(db, session_id)


async def message_documents(
    source: ExportSource, exported: Exportable
) -> AsyncIterator[list[Document]]:
    """The session's messages in seq order, in batches."""
    if exported.archived is not None:
        for start in range(0, len(exported.archived), MESSAGE_BATCH):
            await source.recheck()
            yield exported.archived[start : start + MESSAGE_BATCH]
        return
    session_id = exported.session.id
    # The messages the session had when its record was read (the export's header): those
    # stored since are left out, so that its counts and its messages agree (but for messages
    # deleted meanwhile).
    up_to_seq = exported.session.last_seq
    after_seq: int | None = None
    while True:
        # The rows and the chunks of the open ones in one state: an answer completed between
        # two reads would be exported without its text (its chunks folded away).
        batch, last_seq, now = await source.read(
            functools.partial(
                _batch_and_archive_state,
                session_id=session_id,
                after_seq=after_seq,
                up_to_seq=up_to_seq,
            ),
            snapshot=True,
        )
        if batch:
            yield batch
            after_seq = last_seq
        if now is not None and now.archived_at is not None and now.archive_key is not None:
            # Archived while it was exported: the rest is in its object (which holds every
            # message), not silently missing.
            document = await read_archive(source.archive, now.archive_key, session_id)
            rest = [
                m
                for m in document["messages"]
                if (after_seq is None or m["seq"] > after_seq) and m["seq"] <= up_to_seq
            ]
            for start in range(0, len(rest), MESSAGE_BATCH):
                await source.recheck()
                yield rest[start : start + MESSAGE_BATCH]
            return
        if not batch:
            return


def parse_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).astimezone(UTC)


def message_row(
    document: Document,
    *,
    message_id: uuid.UUID,
    session_id: uuid.UUID,
    user_id: uuid.UUID,
    seq: int,
    created_version: int,
    version: int,
    default_time: datetime,
) -> StoredMessage:
    """The stored message a message document stands for: what a restore puts back and an
    import inserts. The streamed text is stored folded (no chunks), as a failed or cancelled
    message keeps it."""
    status = document["status"]
    complete = status == "complete"
    content = document.get("content") if complete else None
    partial = None if complete else document.get("partial_content")
    if partial is None and status in OPEN_STATUSES:
        partial = ""
    text = (content if complete else partial) or ""
    created_at = parse_time(document.get("created_at")) or default_time
    return StoredMessage(
        **{name: document.get(name) for name in _STORED_AS_EXPORTED},
        id=message_id,
        session_id=session_id,
        user_id=user_id,
        seq=seq,
        role=document["role"],
        content=content,
        partial_content=partial,
        partial_length=len(text),
        partial_bytes=len(text.encode("utf-8")),
        status=status,
        metadata_=document.get("metadata") or {},
        created_version=created_version,
        version=version,
        created_at=created_at,
        updated_at=parse_time(document.get("updated_at")) or created_at,
        completed_at=parse_time(document.get("completed_at")) or (created_at if complete else None),
    )


# What a stored message takes from its document as it is.
_STORED_AS_EXPORTED = (
    "error_message",
    "context",
    "token_count",
    "model",
    "latency_ms",
    "tool_calls",
    "tool_call_id",
)


async def read_archive(store: ArchiveStore, key: str, session_id: uuid.UUID) -> Document:
    """The session's archive object: a gzipped chat-store/1 JSON document of that session.
    ArchiveUnavailable when it is missing, unreadable or another session's."""
    try:
        document = json.loads(gzip.decompress(await store.read(key)))
    except FileNotFoundError:
        raise ArchiveUnavailable(f"The archive object {key} is missing") from None
    except (ValueError, OSError, zlib.error, EOFError):
        raise ArchiveUnavailable(f"The archive object {key} is not a gzipped document") from None
    if (
        not isinstance(document, dict)
        or document.get("format") != FORMAT
        or document.get("session", {}).get("id") != str(session_id)
        or not isinstance(document.get("messages"), list)
    ):
        raise ArchiveUnavailable(f"The archive object {key} is not this session's {FORMAT}")
    return document


# --- one session


async def get_exportable(
    db: AsyncSession, source: ExportSource, principal: Principal, session_id: uuid.UUID
) -> Exportable:
    """The caller's session, checked before the answer starts (a 404 is a real 404)."""
    row = await chat_session_crud.get_for_owner(db, principal.user_id, session_id)
    if row is None:
        raise ChatSessionNotFound()
    return await exportable(source, row)


async def render_session(
    source: ExportSource, exported: Exportable, export_format: ExportFormat
) -> AsyncIterator[bytes]:
    if export_format == "json":
        renderer = render_json(exported.session, message_documents(source, exported))
    elif export_format == "jsonl":
        renderer = _jsonl_session(source, exported, header=True)
    else:
        renderer = _markdown_session(source, exported)
    async for text in renderer:
        yield text.encode("utf-8")


async def render_json(
    session: ChatSession, batches: AsyncIterator[list[Document]]
) -> AsyncIterator[str]:
    """The JSON form, one message per line: valid JSON that is also easy to skim."""
    head = {"format": FORMAT, "exported_at": time(datetime.now(UTC))}
    yield encode(head)[:-1] + ',"session":' + encode(session_document(session)) + ',"messages":['
    separator = "\n"
    async for batch in batches:
        parts = []
        for document in batch:
            parts.append(separator + encode(document))
            separator = ",\n"
        yield "".join(parts)
    yield "\n]}\n"


async def _jsonl_session(
    source: ExportSource, exported: Exportable, *, header: bool
) -> AsyncIterator[str]:
    session = exported.session
    line: Document = {"type": "session", "session": session_document(session)}
    if header:
        line = {"format": FORMAT, "exported_at": time(datetime.now(UTC)), **line}
    yield encode(line) + "\n"
    session_id = str(session.id)
    async for batch in message_documents(source, exported):
        yield "".join(
            encode({"type": "message", "session_id": session_id, "message": document}) + "\n"
            for document in batch
        )


def _readable(value: str | None) -> str:
    """An export time, to the second, for people."""
    return f"{value[:19].replace('T', ' ')} UTC" if value else ""


def _markdown_heading(document: Document) -> str:
    parts = [document["role"]]
    if document.get("model"):
        parts.append(document["model"])
    parts.append(_readable(document["created_at"]))
    if document["status"] != "complete":
        parts.append(document["status"])
    return "### " + " · ".join(parts)


async def _markdown_session(source: ExportSource, exported: Exportable) -> AsyncIterator[str]:
    """For people to read: the text of each message under a heading; not for import."""
    session = exported.session
    header = [f"# {session.title or 'Untitled session'}", ""]
    header.append(f"- Session: `{session.id}`")
    header.append(f"- Created: {_readable(time(session.created_at))}")
    header.append(f"- Messages: {session.message_count}")
    if session.workspace_repo:
        where = session.workspace_repo
        if session.workspace_branch:
            where += f" ({session.workspace_branch})"
        header.append(f"- Workspace: {where}")
    yield "\n".join(header) + "\n"
    async for batch in message_documents(source, exported):
        parts = []
        for document in batch:
            text = document["content"]
            if text is None:
                text = document["partial_content"] or ""
            block = [_markdown_heading(document), "", text.rstrip("\n")]
            if document["error_message"]:
                block += ["", f"> {document['error_message']}"]
            parts.append("\n" + "\n".join(block) + "\n")
        yield "".join(parts)


# --- everything an account owns


async def render_account(source: ExportSource, user: User) -> AsyncIterator[bytes]:
    """JSONL: an account line, then each session (oldest first) followed by its messages.
    Sessions are read in keyset batches by id, their messages as a single export reads them."""
    head = {
        "format": FORMAT,
        "type": "account",
        "exported_at": time(datetime.now(UTC)),
        "user": {
            "id": str(user.id),
            "email": user.email,
            "display_name": user.display_name,
            "created_at": time(user.created_at),
        },
    }
    yield (encode(head) + "\n").encode("utf-8")
    after: uuid.UUID | None = None
    while True:
        sessions = await source.read(
            functools.partial(
                export_crud.sessions_after, user_id=user.id, after=after, limit=SESSION_BATCH
            )
        )
        if not sessions:
            return
        for listed in sessions:
            # Read again: the batch may have been read long ago (the client sets the pace), and
            # the session archived, restored or deleted since.
            session = await source.read(
                functools.partial(archive_crud.get_session, session_id=listed.id, user_id=user.id)
            )
            if session is None:
                continue  # deleted meanwhile
            # An unreadable archive ends the answer here: it has started, no status can change.
            exported = await exportable(source, session)
            async for text in _jsonl_session(source, exported, header=False):
                yield text.encode("utf-8")
        after = sessions[-1].id
