"""Restoring one session, step by step: read and check its object, put the messages back, mark
it live, then delete the object; and the restore every message access goes through."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from chat_store.crud import archive as archive_crud
from chat_store.db import begins_without_write_lock, runs_in_autocommit
from chat_store.errors import ArchiveUnavailable, ChatSessionNotFound
from chat_store.schemas.chat_sessions import ChatSessionRead
from chat_store.services import export, hooks
from chat_store.services.archive.archiver import (
    GENERATIONS,
    ArchiveConflict,
    ArchivedGeneration,
    Archiver,
)
from chat_store.services.principals import Principal
from chat_store.state import AppState
from chat_store.storage import ArchiveStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedArchive:
    session_id: uuid.UUID
    user_id: uuid.UUID
    key: str
    messages: list[export.Document] = field(repr=False)
    generations: list[ArchivedGeneration] = field(default_factory=list, repr=False)


def _generations(key: str, document: export.Document) -> list[ArchivedGeneration]:
    """The generations the object carries (none in one written before it carried them)."""
    members = document.get(GENERATIONS, [])
    try:
        if not isinstance(members, list):
            raise TypeError(GENERATIONS)
        return [ArchivedGeneration.from_dict(member) for member in members]
    except (KeyError, TypeError, ValueError):
        raise ArchiveUnavailable(f"The archive object {key} holds malformed generations") from None


async def load_archive(
    db: AsyncSession, store: ArchiveStore, session_id: uuid.UUID, *, user_id: uuid.UUID | None
) -> LoadedArchive | None:
    """Step 1: the archived session's messages and generations, read from its object and
    checked. None when the session is not archived (or not `user_id`'s)."""
    row = await archive_crud.get_session(db, session_id, user_id=user_id)
    if row is None or row.archived_at is None or row.archive_key is None:
        return None
    document = await export.read_archive(store, row.archive_key, session_id)
    generations = _generations(row.archive_key, document)
    return LoadedArchive(
        session_id, row.user_id, row.archive_key, document["messages"], generations
    )


# The conflicts a refused restore names in its log line.
_SHOWN_CONFLICTS = 20


async def _check_ids_free(db: AsyncSession, loaded: LoadedArchive, ids: list[uuid.UUID]) -> None:
    """ArchiveConflict when another session's message has one of the archived messages' ids.
    The insert would skip that message, the restore commit, and its object (the only copy) be
    deleted. While a session is archived its ids are kept taken (archived_message), so this
    finds only what that could not prevent."""
    taken = await archive_crud.taken_elsewhere(db, loaded.session_id, ids)
    if not taken:
        return
    shown = list(taken.items())[:_SHOWN_CONFLICTS]
    logger.error(
        "restore of session %s refused: its archive %s holds %d messages whose ids other "
        "sessions' messages have (message: session) %s%s; the session stays archived, its "
        "object kept",
        loaded.session_id,
        loaded.key,
        len(taken),
        ", ".join(f"{message_id}: {session_id}" for message_id, session_id in shown),
        ", ..." if len(taken) > len(shown) else "",
    )
    raise ArchiveConflict(
        f"The archived session cannot be restored: {len(taken)} of its messages have ids "
        "that other messages have now. Nothing was changed; the session stays archived"
    )


async def insert_archived_messages(db: AsyncSession, loaded: LoadedArchive) -> None:
    """Step 2: the messages as they were (ids, seqs, versions, times), then their generations
    (no process holding them); rows a stopped restore inserted already are skipped. Refused
    (ArchiveConflict) when another session's message has one of their ids."""
    ids = [uuid.UUID(document["id"]) for document in loaded.messages]
    await _check_ids_free(db, loaded, ids)
    rows = [
        export.message_row(
            document,
            message_id=message_id,
            session_id=loaded.session_id,
            user_id=loaded.user_id,
            seq=document["seq"],
            created_version=document["created_version"],
            version=document["version"],
            default_time=datetime.now(UTC),
        )
        for message_id, document in zip(ids, loaded.messages, strict=True)
    ]
    await archive_crud.insert_missing_messages(db, rows)
    await archive_crud.forget_archived_ids(db, loaded.session_id)
    restored = set(ids)
    generations = [
        generation.columns(loaded.session_id, loaded.user_id)
        for generation in loaded.generations
        if generation.message_id in restored
    ]
    await archive_crud.insert_missing_generations(db, generations)


async def mark_restored(db: AsyncSession, loaded: LoadedArchive) -> bool:
    """Step 3: the session is live again (its object stays until release_archive). False when
    it is not archived under the loaded key any more: another restore came first."""
    return await archive_crud.mark_restored(db, loaded.session_id, loaded.key, datetime.now(UTC))


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
    """Steps 1 to 3 in `db` (a transaction), committed by the caller; returns the key whose
    object release_archive deletes after that commit, or None when the session is not archived.

    Step 3 runs before step 2: marking the session takes its row lock, so a concurrent restore
    of the same session waits, and finds it restored. Inserted after another restore committed
    (and a message was deleted meanwhile), the loaded messages would bring that message back."""
    loaded = await load_archive(db, archiver.store, session_id, user_id=user_id)
    if loaded is None:
        return None
    if not await mark_restored(db, loaded):
        return None
    await insert_archived_messages(db, loaded)
    logger.info("restored session %s (%d messages)", session_id, len(loaded.messages))
    return loaded.key


async def _restore_in_request(
    db: AsyncSession, archiver: Archiver, user_id: uuid.UUID, session_id: uuid.UUID
) -> None:
    """Steps 1 to 3 in the request's transaction (a read's on SQLite: _restore_apart); step 4
    once the request has committed. Nothing when the session is not archived."""
    apart = begins_without_write_lock(db) or runs_in_autocommit(db)
    if apart:
        key = await _restore_apart(db, archiver, user_id, session_id)
    else:
        key = await restore_in(db, archiver, session_id, user_id=user_id)
    if key is None:
        return

    async def release() -> None:
        # A failure leaves the session half-way: the job deletes the object later.
        await release_archive(archiver, session_id, key)

    if apart:
        # Committed already: released now, whatever becomes of the request (an after-commit
        # hook would be dropped by a read that then fails).
        try:
            await release()
        except ArchiveUnavailable as exc:  # the store's failure, in one line (no secret)
            logger.warning(
                "releasing the archive of restored session %s failed (the job deletes it "
                "later): %s",
                session_id,
                exc.detail,
            )
        except Exception:
            logger.exception("releasing the archive of restored session %s failed", session_id)
        return
    hooks.after_commit(db, release)


async def _restore_apart(
    db: AsyncSession, archiver: Archiver, user_id: uuid.UUID, session_id: uuid.UUID
) -> str | None:
    """Steps 1 to 3 in a transaction of their own, for a read. On Postgres a read's session
    runs in autocommit, where each step would commit by itself. On SQLite its transaction began
    without the write lock, so its first write would be refused if another process wrote
    meanwhile, where this one waits for the lock (up to the busy timeout). The read's
    transaction is committed first: it has only read (or written the key's last-used time, kept
    so), its snapshot would not show the messages, and the process's one connection is the one
    the restore writes with. The read goes on in a new transaction; what it loaded stays loaded
    (expire_on_commit=False). Returns the key as restore_in does."""
    await db.commit()
    async with archiver.sessionmaker() as own, own.begin():
        return await restore_in(own, archiver, session_id, user_id=user_id)


async def ensure_restored(
    db: AsyncSession, archiver: Archiver, principal: Principal, session_id: uuid.UUID
) -> None:
    """The session lookup every message access goes through (api/messages.py, api/streams.py,
    the direct path): an archived session's messages are put back in this request's
    transaction before anything reads or writes them. A missing session or another owner's is
    left to the access itself to answer (404)."""
    if await archive_crud.is_archived(db, principal.user_id, session_id):
        await _restore_in_request(db, archiver, principal.user_id, session_id)


async def restore_for_access(
    app: AppState, db: AsyncSession, user_id: uuid.UUID, session_id: uuid.UUID
) -> None:
    """AppState.restore_archived: what a message route does when its own statement found the
    session archived."""
    await _restore_in_request(db, Archiver(app.sessionmaker, app.archive), user_id, session_id)


async def restore_chat_session(
    db: AsyncSession, archiver: Archiver, principal: Principal, session_id: uuid.UUID
) -> ChatSessionRead:
    """POST /sessions/{id}/restore: the session, its messages back in the database."""
    await _restore_in_request(db, archiver, principal.user_id, session_id)
    row = await archive_crud.get_session(db, session_id, user_id=principal.user_id)
    if row is None:
        raise ChatSessionNotFound()
    return ChatSessionRead.from_model(row)
