from __future__ import annotations

import json
import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Header, Query, Response

from chat_store.api.archive import finds_archived_itself, restore_archived_session
from chat_store.api.deps import API_PREFIX, Context, IdempotencyKey, PaginationParams
from chat_store.api.direct import DirectRoute, direct
from chat_store.api.responses import Responses, problems
from chat_store.errors import (
    ArchiveUnavailable,
    ChatSessionNotFound,
    IdempotencyKeyReused,
    InvalidTransition,
    MessageExists,
    MessageNotFound,
    NothingToResume,
    OffsetMismatch,
    PayloadTooLarge,
    SeqConflict,
    UnknownToolCall,
)
from chat_store.schemas.chat_sessions import ChatSessionRead
from chat_store.schemas.common import INT32_MAX, Deleted, Page
from chat_store.schemas.messages import (
    ContextWindow,
    DeltaAppend,
    ForkCreate,
    MessageAppend,
    MessageBatchCreate,
    MessageRead,
    MessageUpdate,
    MessageWithLength,
    ResumePoint,
)
from chat_store.services import messages as message_service
from chat_store.services.history_cache import SerializedPage

# Every route here reaches the session's messages: an archived session's come back first
# (through the router's dependency, or, on the routes marked so, found by their own statement).
router = APIRouter(
    prefix=API_PREFIX + "/sessions/{session_id}",
    tags=["messages"],
    route_class=DirectRoute,
    dependencies=[Depends(restore_archived_session)],
    responses=problems(ArchiveUnavailable),
)


def _append_errors(where: str, loc: list[str | int]) -> Responses:
    """An append's error answers; `where` and `loc` name a message's fields as its request
    does (`messages[0].` and `messages, 0` in a batch)."""
    return problems(
        ChatSessionNotFound,
        MessageExists(message_service.ID_TAKEN),
        SeqConflict(41),
        IdempotencyKeyReused,
        PayloadTooLarge(f"{where}content is over the limit of 1048576 bytes of UTF-8"),
        UnknownToolCall(
            "tool_call_id 'call_zz' answers no tool call of an earlier assistant message of "
            "this session (among its last 1000 messages)",
            ["body", *loc, "tool_call_id"],
        ),
    )


_APPEND_ERRORS = _append_errors("", [])
_BATCH_ERRORS = _append_errors("messages[0].", ["messages", 0])
_MESSAGE_ERRORS = problems(ChatSessionNotFound, MessageNotFound)

_APPEND_EXAMPLES = {
    "user": {
        "summary": "A user turn",
        "value": {"role": "user", "content": "Why does test_billing fail on CI?"},
    },
    "streaming": {
        "summary": "An assistant answer about to be streamed",
        "value": {"role": "assistant", "status": "pending", "model": "gpt-4o"},
    },
    "rag": {
        "summary": "An answer with retrieved documents",
        "value": {
            "role": "assistant",
            "content": "The timeout is set in settings.py.",
            "context": {"documents": [{"id": "doc-7", "score": 0.82}], "reranker": "bge-v2"},
            "token_count": 9,
        },
    },
}
MessageAppendBody = Annotated[MessageAppend, Body(openapi_examples=_APPEND_EXAMPLES)]


@router.post("/messages", status_code=201, responses=_APPEND_ERRORS)
@direct
@finds_archived_itself
async def append_message(
    ctx: Context, session_id: uuid.UUID, body: MessageAppendBody, key: IdempotencyKey = None
) -> MessageRead:
    """Append one message; the server gives it the next seq."""
    return await message_service.create_message(ctx, session_id, body, key)


@router.post("/messages/batch", status_code=201, responses=_BATCH_ERRORS)
@finds_archived_itself
async def append_messages(
    ctx: Context, session_id: uuid.UUID, body: MessageBatchCreate, key: IdempotencyKey = None
) -> Page[MessageRead]:
    """Append several messages at once: all of them or none."""
    return await message_service.create_messages(ctx, session_id, body, key)


@router.get("/messages", response_model=Page[MessageRead], responses=_MESSAGE_ERRORS)
@direct
@finds_archived_itself
async def list_messages(
    ctx: Context,
    session_id: uuid.UUID,
    pagination: PaginationParams,
    after_seq: Annotated[
        int | None, Query(ge=0, le=INT32_MAX, description="Only seqs above this.")
    ] = None,
    before_seq: Annotated[
        int | None, Query(ge=1, le=INT32_MAX, description="Only seqs below this.")
    ] = None,
) -> Response:
    """The session's messages in seq order (`order=desc` for the newest first)."""
    page = await message_service.list_messages(
        ctx, session_id, pagination, after_seq=after_seq, before_seq=before_seq
    )
    return page_response(page)


def page_response(page: SerializedPage) -> Response:
    """The list answer (a Page[MessageRead]) around messages that are JSON already."""
    first = json.dumps(page.ids[0]) if page.ids else "null"
    last = json.dumps(page.ids[-1]) if page.ids else "null"
    content = (
        f'{{"object":"list","data":[{",".join(page.documents)}],"first_id":{first},'
        f'"last_id":{last},"has_more":{"true" if page.has_more else "false"}}}'
    )
    return Response(content=content.encode(), media_type="application/json")


@router.get("/messages/{message_id}", responses=_MESSAGE_ERRORS)
async def get_message(ctx: Context, session_id: uuid.UUID, message_id: uuid.UUID) -> MessageRead:
    """One message."""
    return await message_service.get_message(ctx, session_id, message_id)


@router.patch(
    "/messages/{message_id}",
    responses=problems(
        ChatSessionNotFound,
        MessageNotFound,
        InvalidTransition("A complete message cannot become in_progress"),
        PayloadTooLarge("content is over the limit of 1048576 bytes of UTF-8"),
    ),
)
async def update_message(
    ctx: Context, session_id: uuid.UUID, message_id: uuid.UUID, body: MessageUpdate
) -> MessageRead:
    """Change status (forward only), text, error, metadata, token count or latency."""
    return await message_service.update_message(ctx, session_id, message_id, body)


@router.delete("/messages/{message_id}", responses=_MESSAGE_ERRORS)
async def delete_message(ctx: Context, session_id: uuid.UUID, message_id: uuid.UUID) -> Deleted:
    """Delete a message (its seq is never reused)."""
    await message_service.delete_message(ctx, session_id, message_id)
    return Deleted(id=message_id, object="message.deleted")


def _minimal(prefer: str | None) -> bool:
    return prefer is not None and "return=minimal" in prefer.replace(" ", "").lower()


_MINIMAL_APPLIED = {"Preference-Applied": "return=minimal"}


@router.post(
    "/messages/{message_id}/append",
    responses=problems(
        ChatSessionNotFound,
        MessageNotFound,
        OffsetMismatch(120),
        InvalidTransition("Deltas go to pending or in_progress messages; this one is complete"),
        PayloadTooLarge("The message text would be over the limit of 1048576 bytes"),
    ),
)
@direct
@finds_archived_itself
async def append_delta(
    ctx: Context,
    session_id: uuid.UUID,
    message_id: uuid.UUID,
    body: DeltaAppend,
    response: Response,
    prefer: Annotated[
        str | None,
        Header(
            description="`return=minimal`: answer without the text so far (partial_content "
            "null), so each delta costs the same however long the answer grows."
        ),
    ] = None,
) -> MessageWithLength:
    """Stream a delta into a pending/in_progress message at `offset` (code points)."""
    minimal = _minimal(prefer)
    if minimal:
        response.headers.update(_MINIMAL_APPLIED)
    return await message_service.append_delta(
        ctx, session_id, message_id, body, return_text=not minimal
    )


@router.post("/resume", responses=problems(ChatSessionNotFound, NothingToResume))
async def resume_message(
    ctx: Context, session_id: uuid.UUID, history_limit: Annotated[int, Query(ge=0, le=1000)] = 50
) -> ResumePoint:
    """Where to continue: the newest unfinished assistant message, its offset, and history."""
    return await message_service.resume(ctx, session_id, history_limit)


@router.post(
    "/fork",
    status_code=201,
    responses=problems(ChatSessionNotFound, MessageNotFound, IdempotencyKeyReused),
)
async def fork_chat_session(
    ctx: Context, session_id: uuid.UUID, body: ForkCreate, key: IdempotencyKey = None
) -> ChatSessionRead:
    """A new session holding copies of the messages up to and including `message_id`."""
    return await message_service.fork(ctx, session_id, body, key)


@router.get("/context", responses=problems(ChatSessionNotFound))
async def get_context_window(
    ctx: Context, session_id: uuid.UUID, max_tokens: Annotated[int, Query(ge=1, le=10_000_000)]
) -> ContextWindow:
    """The newest messages that fit `max_tokens` (a tool call and its results stay together)."""
    return await message_service.context_window(ctx, session_id, max_tokens)
