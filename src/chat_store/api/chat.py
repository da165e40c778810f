"""Chat turns the service answers itself with a model (docs/generation.md)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request, Response
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse
from starlette.types import Receive, Scope, Send

from chat_store.api.archive import restore_archived_session
from chat_store.api.deps import API_PREFIX, Context, IdempotencyKey
from chat_store.api.direct import DirectRoute, direct
from chat_store.api.errors import problem_response
from chat_store.api.middleware import CLIENT_LEFT
from chat_store.api.responses import problems
from chat_store.api.streams import event_stream
from chat_store.errors import (
    AppError,
    ArchiveUnavailable,
    ChatSessionNotFound,
    IdempotencyKeyReused,
    InvalidTransition,
    MessageNotFound,
    PayloadTooLarge,
    SeqConflict,
)
from chat_store.schemas.chat import ChatTurn, ChatTurnCreate
from chat_store.schemas.messages import MessageRead
from chat_store.services.generation import GenerationRunner
from chat_store.services.generation import turns as turn_service
from chat_store.services.generation.errors import (
    GenerationBusy,
    GenerationInProgress,
    GenerationUnavailable,
    NothingToAnswer,
    ProviderError,
    ProviderTimeout,
    ToolResultsMissing,
    TooManyGenerations,
)
from chat_store.services.generation.turns import TurnContext
from chat_store.services.streams import StreamContext

# The busy `POST /chat` is served by the direct path (api/direct.py) when well formed.
# An archived session's messages come back first: /chat's own statement finds it archived,
# cancel and continue through restore_archived_session.
router = APIRouter(
    prefix=API_PREFIX + "/sessions/{session_id}",
    tags=["chat"],
    route_class=DirectRoute,
    responses=problems(ArchiveUnavailable),
)


# Example message ids of a failed turn (its answer names both messages).
_USER_MESSAGE = uuid.UUID("7b0e3c1a-52f4-4d8e-9a61-2c9f0d3e8b17")
_ANSWER_MESSAGE = uuid.UUID("c4a9e2d0-1f37-4b6a-8e25-93d71f0a6c48")
_GENERATING = GenerationInProgress(
    _ANSWER_MESSAGE, f"An answer of this session is being generated (message {_ANSWER_MESSAGE})"
)
_CANNOT_START = (GenerationUnavailable, GenerationBusy(4), TooManyGenerations(2))
_CHAT_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "`stream: true`: Server-Sent Events: `turn` with both messages, then the "
        "answer's message stream (`delta` events whose id is the offset, then `done`).",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    202: {
        "model": ChatTurn,
        "description": "`stream: false`, and REQUEST_TIMEOUT_SECONDS came before the answer "
        "ended: both messages as they stand; the answer goes on being generated.",
    },
    **problems(
        ChatSessionNotFound,
        SeqConflict(41),
        _GENERATING,
        IdempotencyKeyReused,
        # Without `content`: the stored history must end with something to answer.
        NothingToAnswer(
            "A turn without content answers the stored history, and this session's last "
            "message is an assistant's (or it has none): append a user or tool message first"
        ),
        ToolResultsMissing(
            "The last assistant message's tool calls call_b have no result yet: append a tool "
            "message for each (tool_call_id) before the model goes on",
            tool_call_ids=["call_b"],
        ),
        PayloadTooLarge("content is over the limit of 1048576 bytes of UTF-8"),
        *_CANNOT_START,
        # `stream: false` only: the turn is stored, its answer failed.
        ProviderError("Error code: 500 - the provider failed", _USER_MESSAGE, _ANSWER_MESSAGE),
        ProviderTimeout(
            "The model provider sent nothing of the answer for 60 s (LLM_TIMEOUT_SECONDS)",
            _USER_MESSAGE,
            _ANSWER_MESSAGE,
        ),
    ),
}

_CHAT_EXAMPLES = {
    "plain": {"summary": "A turn", "value": {"content": "Why does test_billing fail on CI?"}},
    "rag": {
        "summary": "A turn with retrieved documents",
        "value": {
            "content": "Where is the request timeout set?",
            "context": {
                "documents": [
                    {
                        "id": "doc-7",
                        "title": "settings.py",
                        "text": "REQUEST_TIMEOUT_SECONDS = 30",
                    }
                ]
            },
            "stream": False,
        },
    },
    "tools": {
        "summary": "A turn with tools the model may call",
        "value": {
            "content": "Why does test_billing fail?",
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "read_file",
                        "description": "Read a file of the project",
                        "parameters": {
                            "type": "object",
                            "properties": {"path": {"type": "string"}},
                            "required": ["path"],
                        },
                    },
                }
            ],
        },
    },
    "tool_choice": {
        "summary": "A turn whose model must call read_file, once",
        "value": {
            "content": "Show me billing.py",
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "read_file",
                        "parameters": {
                            "type": "object",
                            "properties": {"path": {"type": "string"}},
                            "required": ["path"],
                        },
                    },
                }
            ],
            "tool_choice": {"type": "function", "function": {"name": "read_file"}},
            "parallel_tool_calls": False,
        },
    },
    "tool_results": {
        "summary": "After appending the tool results: answer them (no content)",
        "value": {"tools": [{"type": "function", "function": {"name": "read_file"}}]},
    },
}
ChatTurnBody = Annotated[ChatTurnCreate, Body(openapi_examples=_CHAT_EXAMPLES)]


async def get_turn_context(ctx: Context, request: Request) -> TurnContext:
    """The request's context with this process's generation runner (None without a provider)."""
    runner: GenerationRunner | None = request.app.state.generation
    return TurnContext(ctx.db, ctx.principal, ctx.app, runner)


Turn = Annotated[TurnContext, Depends(get_turn_context)]


class _AnswerWhenDone(Response):
    """Waits for the answer before it decides its status: it runs once the turn is committed
    (after the request's session has ended), so the generation it waits for has started.

    A client that leaves meanwhile ends the wait (not the answer, which is generated on): the
    request is recorded as 499, never as the 201 nobody received."""

    def __init__(
        self, wait: Callable[[], Awaitable[tuple[int, ChatTurn]]], streams: StreamContext
    ) -> None:
        super().__init__()
        self._wait = wait
        self._streams = streams

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response: Response
        watching = asyncio.create_task(_until_the_client_leaves(receive, self._streams))
        try:
            status, turn = await self._wait()
            response = JSONResponse(turn.model_dump(mode="json"), status_code=status)
        except AppError as exc:
            response = problem_response(
                None,
                status=exc.status,
                code=exc.code,
                title=exc.title,
                detail=exc.detail,
                path=scope["path"],
                **exc.extra,
            )
        finally:
            left = watching.done() and not watching.cancelled() and not watching.exception()
            watching.cancel()
        if left:
            scope.setdefault("state", {})[CLIENT_LEFT] = True
            return
        await response(scope, receive, send)


async def _until_the_client_leaves(receive: Receive, streams: StreamContext) -> None:
    # The body is read: what comes now is the client's disconnect.
    while (await receive())["type"] != "http.disconnect":
        pass
    # The wait ends as at shutdown: the answer's follower stops, the turn is read as it stands
    # (no read cut inside the driver).
    streams.shutdown.set()


@router.post(
    "/chat",
    status_code=201,
    response_model=ChatTurn,
    responses=_CHAT_ANSWERS,
)
@direct
async def chat(
    ctx: Turn, session_id: uuid.UUID, body: ChatTurnBody, idempotency_key: IdempotencyKey = None
) -> Response:
    """Send a user message; the service answers it with the model and stores the answer."""
    deadline = time.monotonic() + ctx.settings.request_timeout_seconds
    turn = await turn_service.start_turn(ctx, session_id, body, idempotency_key)
    streams = StreamContext(ctx.app, ctx.principal, counted=body.stream)
    if body.stream:
        response: EventSourceResponse = event_stream(
            turn_service.turn_events(streams, turn), streams
        )
        return response

    async def wait() -> tuple[int, ChatTurn]:
        # The request's own time limit: what is left of it once the turn is stored. A server
        # that begins to stop ends the wait too: the turn is answered as it stands (202) and
        # the answer is handed over, rather than the request cut at the end of the graceful
        # shutdown (a 500).
        left = max(0.0, deadline - time.monotonic())
        stopping = asyncio.create_task(_stop_on_exit(streams))
        try:
            return await turn_service.wait_for_answer(streams, turn, left)
        finally:
            stopping.cancel()

    return _AnswerWhenDone(wait, streams)


async def _stop_on_exit(streams: StreamContext) -> None:
    """Set the stream context's shutdown once the server begins to stop, as live streams are
    told (sse_starlette's watcher of the server's exit, as of 3.7: pyproject.toml's floor)."""
    await EventSourceResponse._listen_for_exit_signal()
    streams.shutdown.set()


@router.post(
    "/messages/{message_id}/cancel",
    dependencies=[Depends(restore_archived_session)],
    responses=problems(
        ChatSessionNotFound,
        MessageNotFound,
        InvalidTransition("Only an assistant message is generated, and can be cancelled"),
    ),
)
async def cancel_message(ctx: Turn, session_id: uuid.UUID, message_id: uuid.UUID) -> MessageRead:
    """Stop generating an answer, wherever it runs: `cancelled`, its text kept."""
    return await turn_service.cancel(ctx, session_id, message_id)


@router.post(
    "/messages/{message_id}/continue",
    dependencies=[Depends(restore_archived_session)],
    status_code=202,
    responses=problems(
        ChatSessionNotFound,
        MessageNotFound,
        InvalidTransition("A complete answer cannot be continued"),
        _GENERATING,
        *_CANNOT_START,
    ),
)
async def continue_message(ctx: Turn, session_id: uuid.UUID, message_id: uuid.UUID) -> MessageRead:
    """Generate the rest of a failed or abandoned answer, after its stored text."""
    return await turn_service.continue_message(ctx, session_id, message_id)
