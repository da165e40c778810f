"""One answer being generated: the model's text read, coalesced into few writes through the
durable delta path, and the answer completed with its usage (or failed, its text kept), in one
transaction with the end of its lease.

The first text is written at once; then, while a write is under way and for
GENERATION_FLUSH_SECONDS after it, what arrives waits and goes in the next write; the rest is
written when the stream ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession

from chat_store.crud.generations import LeaseHolder
from chat_store.errors import (
    ChatSessionNotFound,
    InvalidTransition,
    MessageNotFound,
    OffsetMismatch,
    PayloadTooLarge,
)
from chat_store.metrics import GenerationMetrics
from chat_store.schemas.messages import MAX_TOOL_CALLS, MessageRead, MessageUpdate, ToolCall
from chat_store.services.context import RequestContext
from chat_store.services.generation import prompt as prompt_builder
from chat_store.services.generation import store
from chat_store.services.generation.jobs import Job
from chat_store.services.generation.provider import (
    ChatRequest,
    Finish,
    Provider,
    ProviderFailure,
)
from chat_store.services.generation.store import PromptSource
from chat_store.services.principals import Principal
from chat_store.state import AppState

logger = logging.getLogger(__name__)

# A write that fails for a database reason is tried again after 0.2, 0.4, ... s; past that, the
# generation gives up its lease to whichever process can write.
_WRITE_TRIES = 6

# "undone": started with its turn, whose transaction did not commit (nothing was written).
Outcome = Literal["complete", "failed", "cancelled", "handed_over", "superseded", "undone"]
StopReason = Literal["cancelled", "lost", "shutdown"]
# Set on a failed answer; gone once it is continued to completion.
_FAILURE_KEYS = frozenset({"error_kind", "provider_status"})


@dataclass
class Live:
    """An answer being generated in this process."""

    job: Job
    # Until when its turn's transaction may commit: a generation started with its turn calls
    # the provider at once, and writes nothing before `committed` says the turn is stored.
    commit_by: float
    committed: asyncio.Future[bool] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    task: asyncio.Task[None] | None = None
    reader: asyncio.Task[Finish] | None = None
    call: _Call | None = None  # the provider call, once made
    stop_reason: StopReason | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def settle(self, committed: bool) -> None:
        """The turn's transaction committed (True), or was undone (False)."""
        if not self.committed.done():
            self.committed.set_result(committed)

    def is_stored(self) -> bool:
        return self.committed.done() and self.committed.result()

    def stop(self, reason: StopReason) -> None:
        """Stop reading the model: `cancelled` and `lost` (taken over) write nothing more,
        `shutdown` writes what was read and hands the answer over (or, when the provider had
        already answered all, ends it: see `_halted`)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        if self.reader is not None:
            self.reader.cancel()


@dataclass
class _Call:
    """A provider call under way: the answer it writes, and its text as `reader` receives it."""

    answer: MessageRead
    buffer: _Buffer
    reader: asyncio.Task[Finish]
    started: float  # time.monotonic()


class _Superseded(Exception):
    """The answer moved on without this process: cancelled, completed, taken over, deleted."""


class _StoreUnavailable(Exception):
    """The database refused writes for longer than the retries last."""


class _Buffer:
    """Text read from the provider and not yet written."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.changed = asyncio.Event()

    def add(self, text: str) -> None:
        self.text.append(text)
        self.changed.set()

    def take(self) -> str:
        taken, self.text = "".join(self.text), []
        self.changed.clear()
        return taken


async def _wait_committed(live: Live) -> bool:
    """Whether the answer's turn is stored: its transaction committed before `commit_by`."""
    try:
        async with asyncio.timeout(max(0.0, live.commit_by - time.monotonic())):
            return await asyncio.shield(live.committed)
    except TimeoutError:
        return False


# The ends a provider reports for an answer that calls tools (Ollama says `stop`): the answer
# ends with its calls. Any other (`length`: cut off by the output limit, its last call's
# arguments likely cut too; `content_filter`) is kept, so that the client sees it.
_CALLING_ENDS = frozenset({None, "stop", "tool_calls", "function_call"})


def _finish_reason(reported: str | None, calls_tools: bool) -> str | None:
    return "tool_calls" if calls_tools and reported in _CALLING_ENDS else reported


def _halted(live: Live, reader: asyncio.Task[Finish]) -> bool:
    """Whether the run stops here. A shutdown that comes once the provider has answered all
    (its call ended by itself, with its answer or a ProviderFailure) does not stop it: the
    answer is completed or failed with what was read, rather than handed over to call the
    model again. A cancel, or a lease lost, stops it whatever was read."""
    if live.stop_reason is None:
        return False
    if live.stop_reason != "shutdown" or not reader.done() or reader.cancelled():
        return True
    error = reader.exception()
    return error is not None and not isinstance(error, ProviderFailure)


def _without_failure(metadata: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in metadata.items() if key not in _FAILURE_KEYS}


def log_failed(message_id: uuid.UUID, kind: str, error: str) -> None:
    """The one line every failed answer has, for one alert on them all: what the answer now
    says (its error_message holds no secret). An operator sees a provider that fails in the
    log, not only in the metrics."""
    logger.warning("generation %s failed (%s): %s", message_id, kind, " ".join(error.split())[:300])


class AnswerGenerator:
    """Writes answers for one process (`owner` in their leases)."""

    def __init__(
        self, app: AppState, provider: Provider, metrics: GenerationMetrics, owner: str
    ) -> None:
        self.settings = app.settings
        self.owner = owner
        self._app = app
        self._sessionmaker = app.sessionmaker
        self._provider = provider
        self._metrics = metrics

    def _acting(self, db: AsyncSession, principal: Principal) -> RequestContext:
        """The context the message services are given: this transaction, the answer's owner."""
        return RequestContext(db, principal, self._app)

    def lease(self, job: Job) -> LeaseHolder:
        """The lease `job`'s run holds: this process, in the run's attempt. A run acts on its
        lease only while it holds it in that attempt: an earlier run of this process (its lease
        ran out, then a /continue here claimed the answer) never touches the new run's lease."""
        return LeaseHolder(self.owner, job.attempt)

    async def run(self, live: Live) -> Outcome:
        """Generate the answer of `live.job` until it ends, is stopped, or moves on without
        this process; never raises (but for cancellation)."""
        job = live.job
        principal = store.owner_principal(job.user_id)
        try:
            return await self._generate(live, principal)
        except _Superseded:
            await self._let_go(job)
            return "superseded"
        except _StoreUnavailable:
            logger.warning("generation %s: the database refused its writes", job.message_id)
            return "handed_over"
        except Exception:
            logger.exception("generation %s failed", job.message_id)
            try:
                await self._fail(
                    principal,
                    job,
                    "The service failed while generating",
                    {"error_kind": "internal"},
                )
            except _Superseded:
                await self._let_go(job)
                return "superseded"
            except Exception:  # the lease runs out and another process continues
                logger.exception("generation %s: could not record the failure", job.message_id)
            return "failed"
        finally:
            if live.reader is not None and not live.reader.done():
                live.reader.cancel()

    async def _let_go(self, job: Job) -> None:
        """The answer moved on without this run: should this process still hold its lease (the
        text moved under it: another writer it never heard of), hand it over at once, so that
        a sweep continues it from what is stored instead of waiting for the lease to end."""
        try:
            async with store.transaction(self._sessionmaker) as db:
                await store.release(
                    db,
                    job.message_id,
                    datetime.now(UTC),
                    holder=self.lease(job),
                    hand_over="superseded",
                )
        except Exception:  # the lease then runs out by itself
            logger.exception("generation %s: could not hand its lease over", job.message_id)

    def call(self, live: Live, source: PromptSource) -> None:
        """Call the provider for `live`'s answer with the prompt `source` makes: the request is
        built now, and a task of its own sends it (at the caller's next await) and reads the
        answer's text into a buffer, which `run` writes."""
        job = live.job
        max_output = job.params.max_output_tokens or self.settings.llm_max_output_tokens
        built = prompt_builder.build(
            source,
            system=job.params.system,
            context_tokens=self.settings.llm_context_tokens,
            max_output_tokens=max_output,
        )
        request = ChatRequest(
            model=job.params.model,
            messages=built.messages,
            temperature=job.params.temperature,
            max_output_tokens=max_output,
            tools=job.params.tools,
            tool_choice=job.params.tool_choice,
            parallel_tool_calls=job.params.parallel_tool_calls,
        )
        buffer = _Buffer()
        started = time.monotonic()
        reader = asyncio.create_task(self._read(request, buffer, started))
        # The writer waits for the buffer alone: the call's end (even cancelled before it ran)
        # wakes it too.
        reader.add_done_callback(lambda _: buffer.changed.set())
        live.reader = reader
        live.call = _Call(source.answer, buffer, reader, started)

    async def _generate(self, live: Live, principal: Principal) -> Outcome:
        job = live.job
        if live.call is None:
            source = job.source
            if source is None:
                async with store.transaction(self._sessionmaker) as db:
                    source = await store.prompt_source(
                        self._acting(db, principal),
                        job.session_id,
                        job.message_id,
                        self.settings.llm_context_tokens,
                    )
            if not store.is_open(source.answer):
                return "superseded"
            if live.stop_reason is not None:
                return await self._stopped(live, principal, source.answer, "")
            self.call(live, source)
        assert live.call is not None
        answer, buffer, reader, started = (
            live.call.answer,
            live.call.buffer,
            live.call.reader,
            live.call.started,
        )
        prefix = answer.partial_content or ""
        offset = len(prefix)
        if not await _wait_committed(live):
            reader.cancel()
            return "undone"
        if live.stop_reason is not None:  # stopped while the prompt was read
            reader.cancel()
        flush_every = self.settings.generation_flush_seconds
        while True:
            if not buffer.text and not reader.done():
                await buffer.changed.wait()  # text came, or the call ended (see `call`)
            if _halted(live, reader):
                return await self._stopped(live, principal, answer, buffer.take(), offset)
            text = buffer.take()
            if text:
                try:
                    offset = await self._write(principal, job, answer, text, offset)
                except PayloadTooLarge:
                    reader.cancel()
                    await self._fail(
                        principal,
                        job,
                        "The answer reached MAX_MESSAGE_BYTES; the text so far is kept",
                        {"error_kind": "too_long"},
                    )
                    return "failed"
            if reader.done() and not buffer.text:
                break
            # Coalesce: what arrives meanwhile goes in the next write (sooner if it ends).
            await asyncio.wait({reader}, timeout=flush_every)
        if _halted(live, reader):
            return await self._stopped(live, principal, answer, "", offset)
        ended = time.monotonic()
        try:
            finish = reader.result()
        except ProviderFailure as failure:
            self._metrics.provider_errors.labels(failure.kind).inc()
            await self._fail(
                principal,
                job,
                failure.message,
                {"error_kind": failure.kind, "attempt": job.attempt}
                | ({"provider_status": failure.status} if failure.status else {}),
            )
            return "failed"
        # The first content, text or a tool call: an answer may only call tools.
        ttft = None if finish.first_at is None else finish.first_at - started
        reported = (("prompt", finish.prompt_tokens), ("completion", finish.completion_tokens))
        for kind, count in reported:
            if count:
                self._metrics.tokens.labels(kind).inc(count)
        token_count = finish.completion_tokens
        if token_count is not None and prefix:
            # A continued answer: the provider counted the continuation only.
            token_count += store.estimate_tokens(prefix)
        try:
            # What the store keeps of the calls (a function name it takes, distinct ids).
            tool_calls = MessageUpdate(tool_calls=finish.tool_calls or None).tool_calls
        except ValidationError:
            await self._fail(
                principal,
                job,
                "The model asked for tool calls the store cannot keep (at most "
                f"{MAX_TOOL_CALLS}, each with a function name of letters, digits, _ and -, "
                "ids that differ)",
                {"error_kind": "invalid_tool_call"},
            )
            return "failed"
        usage = {
            "finish_reason": _finish_reason(finish.reason, bool(tool_calls)),
            "prompt_tokens": finish.prompt_tokens,
            "completion_tokens": finish.completion_tokens,
            "ttft_ms": None if ttft is None else round(ttft * 1000),
            "provider_model": finish.model,
            "attempt": job.attempt,
        }
        latency_ms = round((ended - started) * 1000)
        try:
            await self._complete(principal, job, answer, token_count, latency_ms, usage, tool_calls)
        except PayloadTooLarge:
            await self._fail(
                principal,
                job,
                "A tool call's arguments reached MAX_MESSAGE_BYTES; the text so far is kept",
                {"error_kind": "too_long"},
            )
            return "failed"
        return "complete"

    async def _read(self, request: ChatRequest, buffer: _Buffer, started: float) -> Finish:
        """Read the provider's answer into `buffer`. Its time to first token is observed as the
        first content comes, whatever becomes of the call after it (a failure, a cancel)."""
        finish = Finish(reason=None)
        observed = False
        try:
            async for part in self._provider.stream(request):
                if isinstance(part, Finish):
                    finish = part
                    if not observed and part.first_at is not None:  # tool calls only
                        self._metrics.ttft.observe(part.first_at - started)
                    continue
                if not observed:
                    observed = True
                    self._metrics.ttft.observe(time.monotonic() - started)
                buffer.add(part)
        finally:
            buffer.changed.set()
        return finish

    async def _stopped(
        self, live: Live, principal: Principal, answer: MessageRead, text: str, offset: int = 0
    ) -> Outcome:
        if live.stop_reason != "shutdown":
            return "cancelled" if live.stop_reason == "cancelled" else "superseded"
        # Shutdown: keep what was read, and let another process (or the next start) go on.
        if text:
            await self._write(principal, live.job, answer, text, offset)
        await self.hand_over(live.job)
        return "handed_over"

    async def hand_over(self, job: Job) -> None:
        """End the lease of `job`'s run now, as its process stops: another process (or the next
        start) continues the answer at once, and this run is not counted against
        GENERATION_MAX_ATTEMPTS (it did not die)."""
        async with store.transaction(self._sessionmaker) as db:
            await store.release(
                db, job.message_id, datetime.now(UTC), holder=self.lease(job), hand_over="shutdown"
            )

    async def _write(
        self, principal: Principal, job: Job, answer: MessageRead, text: str, offset: int
    ) -> int:
        """Append `text` at `offset`, only while this run holds the answer's lease."""
        lease = self.lease(job)
        delay = 0.2
        for attempt in range(_WRITE_TRIES):
            try:
                async with store.transaction(self._sessionmaker) as db:
                    acting = self._acting(db, principal)
                    length = await store.append(acting, answer, text, offset, lease)
            except (OffsetMismatch, InvalidTransition, MessageNotFound, ChatSessionNotFound):
                raise _Superseded from None
            except (DBAPIError, PoolTimeout, OSError):
                if attempt + 1 == _WRITE_TRIES:
                    raise _StoreUnavailable from None
                await asyncio.sleep(delay)
                delay *= 2
                continue
            if length != offset + len(text):
                # The text at `offset` was this delta already, and more came after it: another
                # writer (a run whose lease this one took over, still going) wrote it. Appending
                # after it would repeat that text.
                raise _Superseded
            return length
        raise AssertionError("unreachable")

    async def _complete(
        self,
        principal: Principal,
        job: Job,
        answer: MessageRead,
        token_count: int | None,
        latency_ms: int,
        usage: dict[str, Any],
        tool_calls: list[ToolCall] | None,
    ) -> None:
        async with store.transaction(self._sessionmaker) as db:
            # Only the lease's holder completes the answer (and the lease goes with it). The lease
            # row first, then the session's and the message's (crud/generations.py's lock order).
            if not await store.release(db, answer.id, datetime.now(UTC), holder=self.lease(job)):
                raise _Superseded
            try:
                ctx = self._acting(db, principal)
                current = await store.get_message(ctx, answer.session_id, answer.id)
                await store.update(
                    ctx,
                    current,
                    MessageUpdate(
                        status="complete",
                        token_count=token_count,
                        latency_ms=latency_ms,
                        metadata={**_without_failure(current.metadata), **usage},
                        **({"tool_calls": tool_calls} if tool_calls else {}),
                    ),
                )
            except (InvalidTransition, MessageNotFound, ChatSessionNotFound):
                raise _Superseded from None

    async def _fail(
        self, principal: Principal, job: Job, error: str, details: dict[str, Any]
    ) -> None:
        async with store.transaction(self._sessionmaker) as db:
            # Only the lease's holder fails the answer: one that lost it leaves it to its taker.
            if not await store.release(
                db, job.message_id, datetime.now(UTC), holder=self.lease(job)
            ):
                raise _Superseded
            try:
                current = await store.get_message(
                    self._acting(db, principal), job.session_id, job.message_id
                )
            except (MessageNotFound, ChatSessionNotFound):
                raise _Superseded from None
            if not store.is_open(current):
                raise _Superseded
            # Every failure names its run: a continued answer's earlier failure is not its own.
            await self.fail_in(db, principal, current, error, {"attempt": job.attempt, **details})
        log_failed(job.message_id, details.get("error_kind", "internal"), error)

    async def fail_in(
        self,
        db: AsyncSession,
        principal: Principal,
        answer: MessageRead,
        error: str,
        details: dict[str, Any],
    ) -> None:
        """Fail the answer, keeping its text, and clear its lease (one transaction). The keys of
        an earlier failure (a run before a continue) go: `details` are this failure's."""
        await store.update(
            self._acting(db, principal),
            answer,
            MessageUpdate(
                status="failed",
                error_message=error,
                metadata={**_without_failure(answer.metadata), **details},
            ),
        )
        await store.release(db, answer.id, datetime.now(UTC))
