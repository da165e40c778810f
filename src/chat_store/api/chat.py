"""Chat turns the service answers itself with a model (docs/generation.md)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request, Response
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse
from starlette.types import Receive, Scope, Send

from chat_store.api.deps import API_PREFIX, Context, IdempotencyKey
from chat_store.api.errors import problem_response
from chat_store.api.responses import problems
from chat_store.api.streams import event_stream
from chat_store.errors import AppError
from chat_store.schemas.chat import ChatTurn, ChatTurnCreate
from chat_store.schemas.common import Problem
from chat_store.schemas.messages import MessageRead
from chat_store.services.generation import GenerationRunner
from chat_store.services.generation import turns as turn_service
from chat_store.services.generation.turns import TurnContext
from chat_store.services.streams import StreamContext

router = APIRouter(prefix=API_PREFIX + "/sessions/{session_id}", tags=["chat"])


def _problem(description: str) -> dict[str, Any]:
    return {
        "model": Problem,
        "description": description,
        "content": {"application/problem+json": {}},
    }


_UNAVAILABLE = _problem(
    "No provider configured (`generation_unavailable`), or this process is generating all it "
    "can (`generation_busy`, with Retry-After)."
)
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
    **problems(401, 404, 409, 413, 422),
    502: _problem("`stream: false`: the provider failed (`provider_error`); names both messages."),
    503: _UNAVAILABLE,
    504: _problem("`stream: false`: the provider went silent (`provider_timeout`)."),
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
    "tool_results": {
        "summary": "After appending the tool results: answer them (no content)",
        "value": {"tools": [{"type": "function", "function": {"name": "read_file"}}]},
    },
}


async def get_turn_context(ctx: Context, request: Request) -> TurnContext:
    """The request's context with this process's generation runner (None without a provider)."""
    runner: GenerationRunner | None = request.app.state.generation
    return TurnContext(ctx.db, ctx.principal, ctx.app, runner)


Turn = Annotated[TurnContext, Depends(get_turn_context)]


class _AnswerWhenDone(Response):
    """Waits for the answer before it decides its status: it runs once the turn is committed
    (after the request's session has ended), so the generation it waits for has started."""

    def __init__(self, wait: Callable[[], Awaitable[tuple[int, ChatTurn]]]) -> None:
        super().__init__()
        self._wait = wait

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response: Response
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
        await response(scope, receive, send)


@router.post(
    "/chat",
    status_code=201,
    response_model=ChatTurn,
    responses=_CHAT_ANSWERS,
)
async def chat(
    ctx: Turn,
    session_id: uuid.UUID,
    body: Annotated[ChatTurnCreate, Body(openapi_examples=_CHAT_EXAMPLES)],
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Send a user message; the service answers it with the model and stores the answer."""
    deadline = time.monotonic() + ctx.settings.request_timeout_seconds
    turn = await turn_service.start_turn(ctx, session_id, body, idempotency_key)
    streams = StreamContext(ctx.app, ctx.principal)
    if body.stream:
        response: EventSourceResponse = event_stream(
            turn_service.turn_events(streams, turn), streams
        )
        return response

    async def wait() -> tuple[int, ChatTurn]:
        # The request's own time limit: what is left of it once the turn is stored.
        left = max(0.0, deadline - time.monotonic())
        return await turn_service.wait_for_answer(streams, turn, left)

    return _AnswerWhenDone(wait)


@router.post(
    "/messages/{message_id}/cancel",
    responses=problems(401, 404, 409, 422),
)
async def cancel_message(ctx: Turn, session_id: uuid.UUID, message_id: uuid.UUID) -> MessageRead:
    """Stop generating an answer, wherever it runs: `cancelled`, its text kept."""
    return await turn_service.cancel(ctx, session_id, message_id)


@router.post(
    "/messages/{message_id}/continue",
    status_code=202,
    responses={**problems(401, 404, 409, 422), 503: _UNAVAILABLE},
)
async def continue_message(ctx: Turn, session_id: uuid.UUID, message_id: uuid.UUID) -> MessageRead:
    """Generate the rest of a failed or abandoned answer, after its stored text."""
    return await turn_service.continue_message(ctx, session_id, message_id)
