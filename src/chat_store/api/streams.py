from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from sse_starlette import EventSourceResponse, ServerSentEvent

from chat_store.api.archive import restore_archived_session
from chat_store.api.deps import API_PREFIX, Context
from chat_store.api.responses import Responses, problems
from chat_store.errors import (
    ArchiveUnavailable,
    ChatSessionNotFound,
    MessageNotFound,
    OffsetMismatch,
    ValidationFailed,
)
from chat_store.schemas.common import INT32_MAX
from chat_store.services import streams as stream_service
from chat_store.services.streams import StreamContext, StreamEvent

# An archived session's messages come back before a stream reads them.
router = APIRouter(
    prefix=API_PREFIX + "/sessions/{session_id}",
    tags=["streams"],
    dependencies=[Depends(restore_archived_session)],
    responses=problems(ArchiveUnavailable),
)

_SSE: Responses = {
    200: {
        "description": "Server-Sent Events (`text/event-stream`).",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
}

LastEventId = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        max_length=20,
        description="Resume after this event id (sent by EventSource on reconnect).",
    ),
]


def _cursor(last_event_id: str | None, query_value: int | None) -> int:
    if last_event_id is not None and last_event_id.strip():
        # Digits only: int() also takes "1_000", "+5" and other spellings no event id has.
        if not (digits := last_event_id.strip()).isascii() or not digits.isdigit():
            raise ValidationFailed(
                "Last-Event-ID must be a non-negative integer", ["header", "Last-Event-ID"]
            )
        value = int(digits)
        if not 0 <= value <= INT32_MAX:
            raise ValidationFailed(
                f"Last-Event-ID must be an integer from 0 to {INT32_MAX}",
                ["header", "Last-Event-ID"],
            )
        return value
    return query_value or 0


# Characters that JSON leaves as they are but that many line readers end a line at (Python's
# str.splitlines(), and so httpx's iter_lines()): escaped, an event's data stays one line for
# every client. (SSE itself ends lines at CR and LF only, which JSON always escapes.)
_LINE_BREAKS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


def event_data(data: dict[str, Any]) -> str:
    """An event's data: compact JSON on one line, whatever line breaks its text holds."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).translate(_LINE_BREAKS)


def event_stream(events: AsyncIterator[StreamEvent], context: StreamContext) -> EventSourceResponse:
    """The events as Server-Sent Events, kept alive, ended when the server stops."""

    async def encoded() -> AsyncIterator[ServerSentEvent]:
        async for event in events:
            yield ServerSentEvent(
                data=event_data(event.data),
                event=event.event,
                id=event.id,
            )

    return EventSourceResponse(
        encoded(),
        ping=context.app.settings.stream_keepalive_seconds,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        shutdown_event=context.shutdown,
        shutdown_grace_period=2.0,
    )


@router.get(
    "/messages/{message_id}/stream",
    responses={
        **_SSE,
        **problems(ChatSessionNotFound, MessageNotFound, OffsetMismatch(120)),
    },
    response_class=EventSourceResponse,
)
async def stream_message(
    ctx: Context,
    session_id: uuid.UUID,
    message_id: uuid.UUID,
    last_event_id: LastEventId = None,
    offset: Annotated[
        int | None,
        Query(ge=0, le=INT32_MAX, description="Start at this code-point offset (default 0)."),
    ] = None,
) -> EventSourceResponse:
    """Follow a message's text live: `delta` events (id = offset), `stale`, then `done`."""
    start = _cursor(last_event_id, offset)
    await stream_service.check_message_stream(ctx, session_id, message_id, start)
    context = StreamContext(ctx.app, ctx.principal)
    return event_stream(
        stream_service.follow_message(context, session_id, message_id, start), context
    )


@router.get(
    "/events",
    responses={**_SSE, **problems(ChatSessionNotFound)},
    response_class=EventSourceResponse,
)
async def stream_session_events(
    ctx: Context,
    session_id: uuid.UUID,
    last_event_id: LastEventId = None,
    after_version: Annotated[
        int | None,
        Query(ge=0, le=INT32_MAX, description="Replay changes after this version (event id)."),
    ] = None,
) -> EventSourceResponse:
    """Follow the session's changes: message.created/updated/delta/deleted, session.updated,
    stale."""
    cursor = _cursor(last_event_id, after_version)
    await stream_service.check_session_feed(ctx, session_id)
    context = StreamContext(ctx.app, ctx.principal)
    return event_stream(stream_service.follow_session(context, session_id, cursor), context)
