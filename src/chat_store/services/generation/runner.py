"""The generations of one process: tasks that call the model and write its answer into the store.

A generation belongs to the process, not to the request that started it: it runs as a task
here, so a client that goes away changes nothing. Its text is written through the durable
delta path, coalesced: the first text at once, then at most one write per
GENERATION_FLUSH_SECONDS, and the rest at the end.

Each live generation holds a lease in the database (crud/generations.py), which this process
renews every third of GENERATION_LEASE_SECONDS. A generation whose lease ran out while its answer
is open lost its process (SIGKILL, OOM, a lost container): the sweep, run when the process starts
and every GENERATION_SWEEP_SECONDS, claims it (one compare-and-set, so one process wins) and
continues it from its stored text, as /continue does. At shutdown a process writes what it holds
and hands its generations over (their leases end at once).

A cancel is written to the store by whoever receives it (the answer becomes `cancelled`, the
lease is cleared) and announced on the bus; the generating process stops its provider call when
the announcement arrives, and otherwise at its next write or lease renewal, which both fail.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chat_store.cache.bus import Bus
from chat_store.errors import (
    ChatSessionNotFound,
    InvalidTransition,
    MessageNotFound,
    OffsetMismatch,
    PayloadTooLarge,
)
from chat_store.metrics import GenerationMetrics
from chat_store.schemas.messages import MessageRead, MessageUpdate
from chat_store.services.generation import prompt as prompt_builder
from chat_store.services.generation import store
from chat_store.services.generation.errors import GenerationBusy
from chat_store.services.generation.provider import (
    ChatRequest,
    Finish,
    Provider,
    ProviderFailure,
)
from chat_store.services.principals import Principal
from chat_store.settings import Settings, activate

logger = logging.getLogger(__name__)

# The bus channel of stop requests (internal: "_" channels are not counted as readers).
STOP_CHANNEL = "_generation"
# A write that fails for a database reason is tried again after 0.2, 0.4, ... s; past that, the
# generation gives up its lease to whichever process can write.
_WRITE_TRIES = 6
_SHUTDOWN_SECONDS = 5.0

Outcome = Literal["complete", "failed", "cancelled", "handed_over", "superseded"]
StopReason = Literal["cancelled", "lost", "shutdown"]


@dataclass(frozen=True)
class GenerationParams:
    """What a turn asked for; kept with the lease, so a continuation asks the same."""

    model: str
    temperature: float | None = None
    max_output_tokens: int | None = None
    system: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "temperature": self.temperature,
            "max_output_tokens": self.max_output_tokens,
            "system": self.system,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], default_model: str) -> GenerationParams:
        return cls(
            model=str(data.get("model") or default_model),
            temperature=data.get("temperature"),
            max_output_tokens=data.get("max_output_tokens"),
            system=data.get("system"),
        )


@dataclass(frozen=True)
class StopRequest:
    """Stop generating this answer (it was cancelled): sent on the bus to every process."""

    message_id: uuid.UUID

    def to_dict(self) -> dict[str, Any]:
        return {"type": "generation.stop", "message_id": str(self.message_id)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StopRequest | None:
        if data.get("type") != "generation.stop":
            return None
        try:
            return cls(uuid.UUID(str(data["message_id"])))
        except (KeyError, ValueError):
            return None


@dataclass(frozen=True)
class Job:
    message_id: uuid.UUID
    session_id: uuid.UUID
    user_id: uuid.UUID
    attempt: int
    params: GenerationParams
    takeover: bool = False


class Slot:
    """A place among this process's LLM_MAX_CONCURRENT generations, held from a turn's checks
    to its launch. One that is never launched (the turn failed) is given back with `release`,
    or by itself after `lifetime` seconds (a commit that failed after the turn was built)."""

    def __init__(self, runner: GenerationRunner, lifetime: float) -> None:
        self._runner = runner
        self.expires = time.monotonic() + lifetime

    def release(self) -> None:
        self._runner._reserved.discard(self)


@dataclass
class _Live:
    job: Job
    task: asyncio.Task[None] | None = None
    reader: asyncio.Task[Finish] | None = None
    stop_reason: StopReason | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self, reason: StopReason) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        if self.reader is not None:
            self.reader.cancel()


class _Superseded(Exception):
    """The answer moved on without this process: cancelled, completed, taken over, deleted."""


class _StoreUnavailable(Exception):
    """The database refused writes for longer than the retries last."""


class _Buffer:
    """Text read from the provider and not yet written."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.changed = asyncio.Event()
        self.first_at: float | None = None

    def add(self, text: str) -> None:
        if self.first_at is None:
            self.first_at = time.monotonic()
        self.text.append(text)
        self.changed.set()

    def take(self) -> str:
        taken, self.text = "".join(self.text), []
        self.changed.clear()
        return taken


# Set on a failed answer; gone once it is continued to completion.
_FAILURE_KEYS = frozenset({"error_kind", "provider_status"})


def _without_failure(metadata: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in metadata.items() if key not in _FAILURE_KEYS}


def process_owner() -> str:
    """This process's name in leases: host and pid, and a random part, because a restarted
    container's process often has the pid its predecessor had."""
    return f"{socket.gethostname()[:120]}:{os.getpid()}:{secrets.token_hex(4)}"


class GenerationRunner:
    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        bus: Bus,
        provider: Provider,
        metrics: GenerationMetrics,
    ) -> None:
        self.settings = settings
        self.owner = process_owner()
        self._sessionmaker = sessionmaker
        self._bus = bus
        self._provider = provider
        self._metrics = metrics
        self._live: dict[uuid.UUID, _Live] = {}
        self._reserved: set[Slot] = set()
        self._background: list[asyncio.Task[None]] = []
        self._closing = False
        self._listening = asyncio.Event()

    # --- capacity and launching

    def lease_until(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.settings.generation_lease_seconds)

    def _in_use(self) -> int:
        now = time.monotonic()
        self._reserved = {slot for slot in self._reserved if slot.expires > now}
        return len(self._live) + len(self._reserved)

    def reserve(self) -> Slot:
        """A place for one more generation in this process; GenerationBusy when full."""
        limit = self.settings.llm_max_concurrent
        if self._closing or self._in_use() >= limit:
            raise GenerationBusy(limit)
        slot = Slot(self, self.settings.request_timeout_seconds + 5.0)
        self._reserved.add(slot)
        return slot

    def launch(self, job: Job, slot: Slot) -> None:
        slot.release()
        if job.message_id in self._live or self._closing:
            return
        live = _Live(job)
        self._live[job.message_id] = live
        self._metrics.live.inc()
        live.task = asyncio.create_task(self._run(live), name=f"generation-{job.message_id}")

    def running(self, message_id: uuid.UUID) -> bool:
        return message_id in self._live

    async def wait(self, message_id: uuid.UUID) -> None:
        """Until this process's generation of the message has ended (at once if none)."""
        live = self._live.get(message_id)
        if live is not None:
            await live.done.wait()

    def stop(self, message_id: uuid.UUID, reason: StopReason) -> None:
        live = self._live.get(message_id)
        if live is not None:
            live.stop(reason)

    async def request_stop(self, message_id: uuid.UUID) -> None:
        """Tell every process (this one included) to stop generating the message."""
        self.stop(message_id, "cancelled")
        await self._bus.publish(STOP_CHANNEL, StopRequest(message_id).to_dict())

    # --- the process's background work

    async def start(self) -> None:
        self._background = [
            asyncio.create_task(self._listen(), name="generation-stops"),
            asyncio.create_task(self._keep(), name="generation-leases"),
        ]
        # Stops are heard from here on.
        await asyncio.wait_for(self._listening.wait(), timeout=5.0)

    async def close(self) -> None:
        """Stop the background work; write what the live generations hold and hand them over."""
        self._closing = True
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        lives = list(self._live.values())
        for live in lives:
            live.stop("shutdown")
        tasks = [live.task for live in lives if live.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=_SHUTDOWN_SECONDS)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._provider.close()

    async def _listen(self) -> None:
        async with self._bus.subscribe(STOP_CHANNEL) as subscription:
            self._listening.set()
            while True:
                event = await subscription.next(1.0)
                request = StopRequest.from_dict(event) if event is not None else None
                if request is not None:
                    self.stop(request.message_id, "cancelled")

    async def _keep(self) -> None:
        """Renew this process's leases every third of the lease; sweep for dead ones at once,
        then every GENERATION_SWEEP_SECONDS."""
        renew_every = self.settings.generation_lease_seconds / 3
        next_sweep = time.monotonic()
        while True:
            try:
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + self.settings.generation_sweep_seconds
                    await self.sweep()
                await self._renew()
            except Exception:  # the database may be away for a while: try again next time
                logger.exception("generation lease upkeep failed")
            wait = min(renew_every, max(0.0, next_sweep - time.monotonic()))
            await asyncio.sleep(wait)

    async def _renew(self) -> None:
        ids = list(self._live)
        if not ids:
            return
        async with store.transaction(self._sessionmaker) as db:
            held = await store.renew(db, self.owner, ids, self.lease_until(datetime.now(UTC)))
        for message_id in ids:
            if message_id not in held:
                # Cancelled (the cancel cleared the lease) or taken over: stop without writing.
                self.stop(message_id, "lost")

    async def sweep(self) -> int:
        """Continue the generations whose process died (their lease ran out); returns how many
        this process took."""
        free = self.settings.llm_max_concurrent - self._in_use()
        if free <= 0 or self._closing:
            return 0
        async with store.transaction(self._sessionmaker) as db:
            expired = await store.expired(db, datetime.now(UTC), free)
        taken = 0
        for message_id in expired:
            if self._closing or self.running(message_id):
                continue
            try:
                slot = self.reserve()
            except GenerationBusy:
                break
            job = await self._take_over(message_id)
            if job is None:
                slot.release()
                continue
            logger.info(
                "taking over generation %s (run %d); its process stopped renewing its lease",
                message_id,
                job.attempt,
            )
            self._metrics.takeovers.inc()
            self.launch(job, slot)
            taken += 1
        return taken

    async def _take_over(self, message_id: uuid.UUID) -> Job | None:
        now = datetime.now(UTC)
        async with store.transaction(self._sessionmaker) as db:
            claimed = await store.claim(
                db, message_id, owner=self.owner, lease_until=self.lease_until(now), now=now
            )
            if claimed is None:  # another process was quicker
                return None
            principal = store.owner_principal(claimed.user_id)
            try:
                answer = await store.get_message(db, principal, claimed.session_id, message_id)
            except (MessageNotFound, ChatSessionNotFound):
                return None
            if not store.is_open(answer):
                await store.release(db, message_id, now)
                return None
            if claimed.attempt > self.settings.generation_max_attempts:
                await self._fail_in(
                    db,
                    principal,
                    answer,
                    f"Gave up after {self.settings.generation_max_attempts} runs "
                    "(GENERATION_MAX_ATTEMPTS): each one's process stopped",
                    {"error_kind": "attempts"},
                )
                return None
            default_model = self.settings.llm_model or ""
            return Job(
                message_id=message_id,
                session_id=claimed.session_id,
                user_id=claimed.user_id,
                attempt=claimed.attempt,
                params=GenerationParams.from_dict(claimed.params, default_model),
                takeover=True,
            )

    # --- one generation

    async def _run(self, live: _Live) -> None:
        activate(self.settings)  # the limits request validation applies, in this task too
        job = live.job
        principal = store.owner_principal(job.user_id)
        outcome: Outcome = "failed"
        try:
            outcome = await self._generate(live, principal)
        except _Superseded:
            outcome = "superseded"
        except _StoreUnavailable:
            logger.warning("generation %s: the database refused its writes", job.message_id)
            outcome = "handed_over"
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
                pass
            except Exception:  # the lease runs out and another process continues
                logger.exception("generation %s: could not record the failure", job.message_id)
        finally:
            if live.reader is not None and not live.reader.done():
                live.reader.cancel()
            self._live.pop(job.message_id, None)
            self._metrics.live.dec()
            self._metrics.outcomes.labels(outcome).inc()
            live.done.set()

    async def _generate(self, live: _Live, principal: Principal) -> Outcome:
        job = live.job
        async with store.transaction(self._sessionmaker) as db:
            source = await store.prompt_source(
                db, principal, job.session_id, job.message_id, self.settings.llm_context_tokens
            )
        answer = source.answer
        if not store.is_open(answer):
            return "superseded"
        if live.stop_reason is not None:
            return await self._stopped(live, principal, answer, "")
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
        )
        prefix = answer.partial_content or ""
        offset = len(prefix)
        buffer = _Buffer()
        started = time.monotonic()
        reader = asyncio.create_task(self._read(request, buffer))
        live.reader = reader
        if live.stop_reason is not None:  # stopped while the prompt was read
            reader.cancel()
        flush_every = self.settings.generation_flush_seconds
        while True:
            if not buffer.text and not reader.done():
                changed = asyncio.create_task(buffer.changed.wait())
                await asyncio.wait({changed, reader}, return_when=asyncio.FIRST_COMPLETED)
                changed.cancel()
            if live.stop_reason is not None:
                return await self._stopped(live, principal, answer, buffer.take(), offset)
            text = buffer.take()
            if text:
                try:
                    offset = await self._write(principal, answer, text, offset)
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
        if live.stop_reason is not None:
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
        ttft = None if buffer.first_at is None else buffer.first_at - started
        if ttft is not None:
            self._metrics.ttft.observe(ttft)
        reported = (("prompt", finish.prompt_tokens), ("completion", finish.completion_tokens))
        for kind, count in reported:
            if count:
                self._metrics.tokens.labels(kind).inc(count)
        token_count = finish.completion_tokens
        if token_count is not None and prefix:
            # A continued answer: the provider counted the continuation only.
            token_count += store.estimate_tokens(prefix)
        usage = {
            "finish_reason": finish.reason,
            "prompt_tokens": finish.prompt_tokens,
            "completion_tokens": finish.completion_tokens,
            "ttft_ms": None if ttft is None else round(ttft * 1000),
            "provider_model": finish.model,
            "attempt": job.attempt,
        }
        await self._complete(principal, answer, token_count, round((ended - started) * 1000), usage)
        return "complete"

    async def _read(self, request: ChatRequest, buffer: _Buffer) -> Finish:
        finish = Finish(reason=None)
        try:
            async for part in self._provider.stream(request):
                if isinstance(part, Finish):
                    finish = part
                else:
                    buffer.add(part)
        finally:
            buffer.changed.set()
        return finish

    async def _stopped(
        self, live: _Live, principal: Principal, answer: MessageRead, text: str, offset: int = 0
    ) -> Outcome:
        if live.stop_reason != "shutdown":
            return "cancelled" if live.stop_reason == "cancelled" else "superseded"
        # Shutdown: keep what was read, and let another process (or the next start) go on.
        if text:
            await self._write(principal, answer, text, offset)
        async with store.transaction(self._sessionmaker) as db:
            await store.release(db, answer.id, datetime.now(UTC), owner=self.owner, hand_over=True)
        return "handed_over"

    async def _write(
        self, principal: Principal, answer: MessageRead, text: str, offset: int
    ) -> int:
        delay = 0.2
        for attempt in range(_WRITE_TRIES):
            try:
                async with store.transaction(self._sessionmaker) as db:
                    return await store.append(
                        db, self.settings, self._bus, principal, answer, text, offset
                    )
            except (OffsetMismatch, InvalidTransition, MessageNotFound, ChatSessionNotFound):
                raise _Superseded from None
            except (DBAPIError, PoolTimeout, OSError):
                if attempt + 1 == _WRITE_TRIES:
                    raise _StoreUnavailable from None
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    async def _complete(
        self,
        principal: Principal,
        answer: MessageRead,
        token_count: int | None,
        latency_ms: int,
        usage: dict[str, Any],
    ) -> None:
        async with store.transaction(self._sessionmaker) as db:
            try:
                current = await store.get_message(db, principal, answer.session_id, answer.id)
                await store.update(
                    db,
                    self.settings,
                    self._bus,
                    principal,
                    current,
                    MessageUpdate(
                        status="complete",
                        token_count=token_count,
                        latency_ms=latency_ms,
                        metadata={**_without_failure(current.metadata), **usage},
                    ),
                )
            except (InvalidTransition, MessageNotFound, ChatSessionNotFound):
                raise _Superseded from None
            await store.release(db, answer.id, datetime.now(UTC), owner=self.owner)

    async def _fail(
        self, principal: Principal, job: Job, error: str, details: dict[str, Any]
    ) -> None:
        async with store.transaction(self._sessionmaker) as db:
            try:
                current = await store.get_message(db, principal, job.session_id, job.message_id)
            except (MessageNotFound, ChatSessionNotFound):
                raise _Superseded from None
            if not store.is_open(current):
                raise _Superseded
            await self._fail_in(db, principal, current, error, details)

    async def _fail_in(
        self,
        db: AsyncSession,
        principal: Principal,
        answer: MessageRead,
        error: str,
        details: dict[str, Any],
    ) -> None:
        """Fail the answer, keeping its text, and clear its lease (one transaction)."""
        await store.update(
            db,
            self.settings,
            self._bus,
            principal,
            answer,
            MessageUpdate(
                status="failed",
                error_message=error,
                metadata={**answer.metadata, **details},
            ),
        )
        await store.release(db, answer.id, datetime.now(UTC))
