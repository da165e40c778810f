"""Resuming an unfinished answer, and forking a session at a message."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

from chat_store.crud import chat_sessions as chat_session_crud
from chat_store.crud import messages as message_crud
from chat_store.errors import NothingToResume
from chat_store.ids import uuid7
from chat_store.models import ChatSession
from chat_store.schemas.chat_sessions import ChatSessionRead
from chat_store.schemas.messages import OPEN_STATUSES, ForkCreate, ResumePoint
from chat_store.services import chat_sessions as chat_session_service
from chat_store.services import idempotency
from chat_store.services.context import RequestContext
from chat_store.services.messages.reading import owned_message, streamed_text, to_reads

_COPY_BATCH = 500


async def resume(ctx: RequestContext, session_id: uuid.UUID, history_limit: int) -> ResumePoint:
    db = ctx.db
    await chat_session_service.get_owned(ctx, session_id)
    row = await message_crud.newest_resumable(db, session_id)
    if row is None:
        raise NothingToResume("Every assistant message of this session is complete")
    history_rows, _ = await message_crud.list_by_seq(
        db, session_id, history_limit, before_seq=row.seq, descending=True
    )
    history_rows.reverse()
    reads = await to_reads(ctx, [*history_rows, row])
    message = reads[-1]
    offset = len(message.partial_content or "")
    return ResumePoint(message=message, offset=offset, history=reads[:-1])


async def fork(
    ctx: RequestContext, session_id: uuid.UUID, body: ForkCreate, idempotency_key: str | None
) -> ChatSessionRead:
    async def produce() -> ChatSessionRead:
        return await _fork(ctx, session_id, body.message_id)

    creating = idempotency.Create("fork_chat_session", str(session_id), body, ChatSessionRead)
    return await idempotency.run_once(ctx, idempotency_key, creating, produce)


async def _fork(
    ctx: RequestContext, session_id: uuid.UUID, message_id: uuid.UUID
) -> ChatSessionRead:
    db = ctx.db
    # Under the session's row lock (which every write of its messages takes first): the rows
    # and the chunks of open ones are read in turn, and an answer completed between the two
    # reads would be copied without its text (its chunks folded into it and deleted).
    source = await chat_session_service.get_owned(ctx, session_id, for_update=True)
    last = await owned_message(ctx, session_id, message_id)
    now = datetime.now(UTC)
    copy = ChatSession(
        id=uuid7(),
        user_id=ctx.principal.user_id,
        title=source.title,
        metadata_={
            **source.metadata_,
            "forked_from": {"session_id": str(source.id), "seq": last.seq},
        },
        workspace_repo=source.workspace_repo,
        workspace_branch=source.workspace_branch,
        workspace_path=source.workspace_path,
        system_prompt=source.system_prompt,
        last_activity_at=now,
        created_at=now,
        updated_at=now,
    )
    await chat_session_crud.create(db, copy)
    seq = 0
    tokens = 0
    after_seq: int | None = None
    while True:  # copy in batches: a long session is never held in memory whole
        rows, _ = await message_crud.list_by_seq(
            db, session_id, _COPY_BATCH, after_seq=after_seq, before_seq=last.seq + 1
        )
        if not rows:
            break
        chunks = await message_crud.chunk_texts(
            db, [row.id for row in rows if row.status in OPEN_STATUSES]
        )
        copies = []
        for row in rows:
            seq += 1
            tokens += row.token_count or 0
            copied = dataclasses.replace(
                row,
                id=uuid7(),
                session_id=copy.id,
                seq=seq,
                partial_content=streamed_text(row, chunks.get(row.id)),
                # Each copy a version of its own, as a batch append gives them: the change feed's
                # event ids are versions, and a reader resumes after the last one it had.
                created_version=seq,
                version=seq,
                updated_at=now,
            )
            if row.status in OPEN_STATUSES:
                # The lengths of the text copied: the row and its chunks were read apart, and a
                # delta may have come in between (the copy's next delta goes at its length).
                text = copied.partial_content or ""
                copied = dataclasses.replace(
                    copied, partial_length=len(text), partial_bytes=len(text.encode())
                )
            copies.append(copied)
        await message_crud.insert_messages(db, copies)
        after_seq = rows[-1].seq
    copy.message_count = seq
    copy.last_seq = seq
    copy.history_version = max(seq, 1)
    copy.total_tokens = tokens
    copy.last_message_at = now if seq else None
    await chat_session_crud.flush(db)
    return ChatSessionRead.from_model(copy)
