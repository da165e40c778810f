"""Chat turns: the rules of `POST /chat`, `/cancel` and `/continue`.

- A turn stores the user's message and the pending answer in one transaction, with the lease of
  its generation, and reads the prompt's messages in it. Once its checks have passed, its
  generation starts in this process with the provider call, while the turn's last writes (the
  lease, the Idempotency-Key's answer) and its commit go on; it writes nothing before the
  commit, and a turn that is undone closes the call.
- A turn without content stores only the answer, to the history as it stands: there must be
  something to answer (409 nothing_to_answer), every tool call with its result (409
  tool_results_missing).
- One live generation per session (409 generation_in_progress), at most
  GENERATION_CONCURRENCY_PER_USER per user (429), at most LLM_MAX_CONCURRENT per process (503).
- A turn sent again with the same Idempotency-Key is the same turn: no second message, no second
  model call; its answer is followed wherever it is generated.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from chat_store.errors import InvalidTransition, ValidationFailed
from chat_store.schemas.chat import ChatTurn, ChatTurnCreate
from chat_store.schemas.messages import MessageRead, MessageUpdate
from chat_store.services import hooks, idempotency, limits
from chat_store.services import streams as stream_service
from chat_store.services.context import RequestContext
from chat_store.services.events import STOP_CHANNEL, StopRequest
from chat_store.services.generation import store
from chat_store.services.generation.errors import (
    GenerationInProgress,
    GenerationUnavailable,
    NothingToAnswer,
    ProviderError,
    ProviderTimeout,
    ToolResultsMissing,
    TooManyGenerations,
)
from chat_store.services.generation.jobs import GenerationParams, Job
from chat_store.services.generation.runner import GenerationRunner, Slot
from chat_store.services.streams import StreamContext, StreamEvent
from chat_store.settings import Settings

CANCELLED = "Cancelled by request"


@dataclass(frozen=True, slots=True)
class TurnContext(RequestContext):
    """A request's context with this process's generation runner (None without a provider)."""

    runner: GenerationRunner | None = None

    def generating(self) -> GenerationRunner:
        if self.runner is None:
            raise GenerationUnavailable()
        return self.runner


def choose_model(settings: Settings, requested: str | None) -> str:
    allowed = settings.allowed_models
    if requested is None:
        return allowed[0]
    if requested not in allowed:
        raise ValidationFailed(
            f"model must be one of {', '.join(allowed)} (LLM_MODEL, LLM_MODELS)",
            ["body", "model"],
        )
    return requested


async def _check_limits(
    ctx: TurnContext, session_id: uuid.UUID, *, besides: uuid.UUID | None = None
) -> None:
    """At most GENERATION_CONCURRENCY_PER_USER open generations of the user (429), then one
    per session (409); `besides` (the generation being started) is not counted. One read.

    Open: live, or waiting for a sweep to continue it (its process died, or handed it over at
    shutdown). Counted alike, since the takeover generates it again: left out, a turn started
    meanwhile was generated beside it once it was taken over."""
    user_id = ctx.principal.user_id
    live = [
        generation
        for generation in await store.open_for(ctx.db, user_id, session_id)
        if generation.message_id != besides
    ]
    limit = ctx.settings.generation_concurrency_per_user
    if sum(1 for generation in live if generation.user_id == user_id) >= limit:
        raise TooManyGenerations(limit)
    in_session = [g.message_id for g in live if g.session_id == session_id]
    if in_session:
        raise GenerationInProgress(
            in_session[0],
            f"An answer of this session is being generated (message {in_session[0]})",
        )


def _launch_after_commit(ctx: TurnContext, job: Job, slot: Slot) -> None:
    runner = ctx.generating()

    async def launch() -> None:
        runner.launch(job, slot)

    hooks.after_commit(ctx.db, launch)


async def start_turn(
    ctx: TurnContext, session_id: uuid.UUID, body: ChatTurnCreate, idempotency_key: str | None
) -> ChatTurn:
    runner = ctx.generating()
    model = choose_model(ctx.settings, body.model)
    params = GenerationParams(
        model=model,
        temperature=body.temperature,
        max_output_tokens=body.max_output_tokens,
        system=body.system,
        tools=body.tool_definitions(),
        tool_choice=body.tool_choice_sent(),
        parallel_tool_calls=body.parallel_tool_calls,
    )
    # Before the Idempotency-Key's fingerprint, which serialises the body: a JSON value too
    # deep to serialise is the 422 it is without a key, not a 500.
    limits.check_tools(ctx.settings, params.tools, ["body", "tools"])
    limits.check_context(ctx.settings, body.context, ["body", "context"])
    made: list[uuid.UUID] = []  # the answers generated with this request's turn
    stored: list[uuid.UUID] = []  # the one of them the committed turn holds

    async def settle() -> None:
        for message_id in made:
            runner.settle_turn(message_id, message_id in stored)

    # Registered before the turn's own after-commit work (its events): the generation writes
    # as soon as the commit is done.
    hooks.after_commit(ctx.db, settle)

    async def produce() -> ChatTurn:
        slot = runner.reserve()
        try:
            now = datetime.now(UTC)
            await store.begin(ctx.db)
            # Writes first (a missing session is a 404 here): creating the messages locks the
            # session's row until commit, so the checks below see every turn of this session
            # committed before, and none can start meanwhile.
            turn = store.NewTurn(body.content, body.context, model, body.expected_last_seq)
            created = await store.create_turn(ctx, session_id, turn)
            user, answer = created.user, created.answer
            # The prompt's messages, read here: the generation calls the provider with them
            # once the checks below have passed, without reading them again.
            source = await store.answer_prompt_source(
                ctx, answer, created.system_prompt, ctx.settings.llm_context_tokens
            )
            if user is None:
                check_answerable(source.before_answer())
            await _check_limits(ctx, session_id, besides=answer.id)
        except BaseException:
            slot.release()
            raise
        # Every check that may refuse the turn has passed: the provider is called now, and the
        # turn's last writes (the lease, the Idempotency-Key's answer) and its commit go on
        # meanwhile. Should they fail, the turn is undone and the call closed (`settle`).
        runner.start_with_turn(
            Job(answer.id, session_id, ctx.principal.user_id, 1, params, source=source), slot
        )
        made.append(answer.id)
        await asyncio.sleep(0)  # the call's task runs first: the request is on its way
        # A new message has no generation: the insert cannot find one.
        await store.add_generation(
            ctx.db,
            answer,
            ctx.principal,
            owner=runner.owner,
            lease_until=runner.lease_until(now),
            params=params.to_dict(),
            now=now,
        )
        return ChatTurn(user_message=user, assistant_message=answer)

    # `stream` is how the caller reads the answer, not part of the turn: a retry may change it.
    turn_body = body.model_copy(update={"stream": True})
    create = idempotency.Create("chat_turn", str(session_id), turn_body, ChatTurn)
    try:
        turn = await idempotency.run_once(ctx, idempotency_key, create, produce)
    except BaseException:
        for message_id in made:
            runner.settle_turn(message_id, False)
        raise
    for message_id in made:
        if message_id == turn.assistant_message.id:
            stored.append(message_id)
        else:  # made, but another turn is answered (run_once replays a stored one): undone
            runner.settle_turn(message_id, False)
    return turn


def check_answerable(history: list[MessageRead]) -> None:
    """A turn without content answers the stored history: its last message must not be an
    assistant's (409 nothing_to_answer), and when it ends with tool messages, they answer every
    call of the assistant message before them (409 tool_results_missing)."""
    if not history or history[-1].role == "assistant":
        raise NothingToAnswer(
            "A turn without content answers the stored history, and this session's last "
            "message is an assistant's (or it has none): append a user or tool message first"
        )
    first_result = len(history)
    while first_result > 0 and history[first_result - 1].role == "tool":
        first_result -= 1
    caller = history[first_result - 1] if first_result > 0 else None
    if first_result == len(history) or caller is None or not caller.tool_calls:
        return
    answered = {message.tool_call_id for message in history[first_result:]}
    missing = [call.id for call in caller.tool_calls if call.id not in answered]
    if missing:
        raise ToolResultsMissing(
            f"The last assistant message's tool calls {', '.join(missing)} have no result yet: "
            "append a tool message for each (tool_call_id) before the model goes on",
            tool_call_ids=missing,
        )


async def turn_events(context: StreamContext, turn: ChatTurn) -> AsyncIterator[StreamEvent]:
    """`turn` with both messages, then exactly the events of the answer's message stream."""
    yield StreamEvent("turn", turn.model_dump(mode="json"), "0")
    answer = turn.assistant_message
    async for event in stream_service.follow_message(context, answer.session_id, answer.id, 0):
        yield event


async def wait_for_answer(
    context: StreamContext, turn: ChatTurn, wait_seconds: float
) -> tuple[int, ChatTurn]:
    """The turn once its answer has ended (201), or as it stands after `wait_seconds` (202).
    A failed answer is a 502 provider_error or 504 provider_timeout naming both messages."""
    answer = turn.assistant_message
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait_seconds):
            events = cast(
                AsyncGenerator[StreamEvent, None],
                stream_service.follow_message(context, answer.session_id, answer.id, 0),
            )
            async with contextlib.aclosing(events):
                async for event in events:
                    if event.event in ("done", "close"):
                        break
    async with context.app.snapshot_sessionmaker() as db:
        request = RequestContext(db, context.principal, context.app)
        user = turn.user_message
        if user is not None:
            user = await store.get_message(request, answer.session_id, user.id)
        answer = await store.get_message(request, answer.session_id, answer.id)
    if answer.status == "failed":
        error = ProviderTimeout if answer.metadata.get("error_kind") == "timeout" else ProviderError
        raise error(
            answer.error_message or "The answer failed",
            None if user is None else user.id,
            answer.id,
        )
    status = 202 if store.is_open(answer) else 201
    return status, ChatTurn(user_message=user, assistant_message=answer)


async def cancel(ctx: TurnContext, session_id: uuid.UUID, message_id: uuid.UUID) -> MessageRead:
    """Stop an answer wherever it is generated: `cancelled`, its text kept. Cancelling it
    again answers the same."""
    now = datetime.now(UTC)
    await store.begin(ctx.db)
    # The lease ends with the answer: its process sees that at its next renewal or write, even
    # if the stop request below is lost. Written first (undone with the rest if the checks
    # refuse): the lease row before the session's (crud/generations.py's lock order).
    await store.release(ctx.db, message_id, now)
    answer = await store.get_message(ctx, session_id, message_id)
    if answer.role != "assistant":
        raise InvalidTransition("Only an assistant message is generated, and can be cancelled")
    if answer.status == "cancelled":
        return answer
    cancelled = await store.update(
        ctx,
        answer,
        MessageUpdate(
            status="cancelled",
            error_message=CANCELLED,
            metadata={**answer.metadata, "finish_reason": "cancelled"},
        ),
    )

    async def announce() -> None:
        if ctx.runner is not None:
            await ctx.runner.request_stop(message_id)
        else:
            await ctx.bus.publish(STOP_CHANNEL, StopRequest(message_id).to_dict())

    hooks.after_commit(ctx.db, announce)
    return cancelled


async def continue_message(
    ctx: TurnContext, session_id: uuid.UUID, message_id: uuid.UUID
) -> MessageRead:
    """Generate the rest of a failed or abandoned answer: the model is given the stored text
    as the start of its answer, and what it sends is appended at the stored length."""
    runner = ctx.generating()
    now = datetime.now(UTC)
    lease_until = runner.lease_until(now)
    slot = runner.reserve()
    try:
        await store.begin(ctx.db)
        # The claim first (undone with the rest if the checks refuse): one compare-and-set, so
        # a generation that is live anywhere is not claimed, and two continues never both win.
        claimed = await store.claim(
            ctx.db, message_id, owner=runner.owner, lease_until=lease_until, now=now
        )
        # The session's row locked until commit, as a turn locks it (after the lease row: the
        # lock order of crud/generations.py, which deletions take too): the checks below see
        # every turn and continue of this session committed before, and none can start
        # meanwhile.
        await store.lock_session(ctx, session_id)
        answer = await store.get_message(ctx, session_id, message_id)
        if answer.role != "assistant":
            raise InvalidTransition("Only an assistant message can be continued")
        if answer.status not in ("failed", "pending", "in_progress"):
            raise InvalidTransition(f"A {answer.status} answer cannot be continued")
        if claimed is not None:
            params = GenerationParams.from_dict(claimed.params, ctx.settings.allowed_models[0])
            attempt = claimed.attempt
        elif await store.get_generation(ctx.db, message_id) is not None:
            raise _live(message_id)
        else:
            # An answer a client wrote: generated from now on, with its model if allowed.
            model = answer.model if answer.model in ctx.settings.allowed_models else None
            params = GenerationParams(model=choose_model(ctx.settings, model))
            attempt = 1
            if not await store.add_generation(
                ctx.db,
                answer,
                ctx.principal,
                owner=runner.owner,
                lease_until=lease_until,
                params=params.to_dict(),
                now=now,
            ):
                raise _live(message_id)
        await _check_limits(ctx, session_id, besides=message_id)
        if answer.status in ("failed", "pending"):
            # Generated from now on (docs/api.md: the answer is `in_progress`).
            answer = await store.update(ctx, answer, MessageUpdate(status="in_progress"))
    except BaseException:
        slot.release()
        raise
    job = Job(message_id, session_id, ctx.principal.user_id, attempt, params)
    _launch_after_commit(ctx, job, slot)
    return answer


def _live(message_id: uuid.UUID) -> GenerationInProgress:
    return GenerationInProgress(
        message_id, f"Message {message_id} is being generated; follow its stream or cancel it"
    )
