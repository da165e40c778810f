"""The generations of one process: each runs as a task here (answer.py writes it), so a client
that goes away changes nothing.

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
import contextlib
import logging
import os
import secrets
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta

from chat_store.db import is_connection_error
from chat_store.errors import ChatSessionNotFound, MessageNotFound
from chat_store.metrics import GenerationMetrics
from chat_store.services.context import RequestContext
from chat_store.services.events import STOP_CHANNEL, StopRequest
from chat_store.services.generation import store
from chat_store.services.generation.answer import (
    AnswerGenerator,
    Live,
    Outcome,
    StopReason,
    log_failed,
)
from chat_store.services.generation.errors import GenerationBusy
from chat_store.services.generation.jobs import GenerationParams, Job
from chat_store.services.generation.provider import Provider
from chat_store.state import AppState

logger = logging.getLogger(__name__)

_SHUTDOWN_SECONDS = 5.0


class Slot:
    """A place among this process's LLM_MAX_CONCURRENT generations, held from a turn's checks
    to its launch. One that is never launched (the turn failed) is given back with `release`,
    or by itself after `lifetime` seconds (a commit that failed after the turn was built)."""

    def __init__(self, runner: GenerationRunner, lifetime: float) -> None:
        self._runner = runner
        self.expires = time.monotonic() + lifetime

    def release(self) -> None:
        self._runner._reserved.discard(self)


def process_owner() -> str:
    """This process's name in leases: host and pid, and a random part, because a restarted
    container's process often has the pid its predecessor had."""
    return f"{socket.gethostname()[:120]}:{os.getpid()}:{secrets.token_hex(4)}"


class GenerationRunner:
    def __init__(self, app: AppState, provider: Provider, metrics: GenerationMetrics) -> None:
        self.settings = app.settings
        self.owner = process_owner()
        self._app = app
        self._sessionmaker = app.sessionmaker
        self._bus = app.bus
        self._provider = provider
        self._metrics = metrics
        self._answers = AnswerGenerator(app, provider, metrics, self.owner)
        self._live: dict[uuid.UUID, Live] = {}
        self._reserved: set[Slot] = set()
        self._listener: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._waiting: set[asyncio.Task[None]] = set()  # launches after a run still ending
        self._closing = False
        self._closed = asyncio.Event()  # set with _closing: the lease keeper's pause ends
        self._listening = asyncio.Event()

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
        """Generate an answer whose lease is committed. A run of it still ending here (its
        last write committed, its after-commit work going on, or stopping for a lease it lost)
        goes first: this one starts when that one is done."""
        previous = self._live.get(job.message_id)
        if previous is None:
            self._launch_now(job, slot)
            return

        async def after_previous() -> None:
            await previous.done.wait()
            self._launch_now(job, slot)

        task = asyncio.create_task(after_previous(), name=f"generation-{job.message_id}-next")
        self._waiting.add(task)
        task.add_done_callback(self._waiting.discard)

    def _launch_now(self, job: Job, slot: Slot) -> None:
        live = self._start(job, slot)
        if live is not None:
            live.settle(True)

    def start_with_turn(self, job: Job, slot: Slot) -> None:
        """Generate a turn's answer from the prompt the turn read, before its transaction
        commits: the provider is called at once (its first token takes the longest; the
        request is built here and sent at the caller's next await), nothing is written until
        `settle_turn` says the turn is stored, and the call is closed when the turn is undone
        or not committed within the slot's lifetime."""
        self._start(job, slot, call_now=True)

    def settle_turn(self, message_id: uuid.UUID, committed: bool) -> None:
        live = self._live.get(message_id)
        if live is not None:
            live.settle(committed)

    def _start(self, job: Job, slot: Slot, *, call_now: bool = False) -> Live | None:
        slot.release()
        if job.message_id in self._live or self._closing:
            return None
        live = Live(job, commit_by=slot.expires)
        self._live[job.message_id] = live
        self._metrics.live.inc()
        if call_now and job.source is not None:
            # Its task before the run's: the request goes out first. Should the request not be
            # made here, the run makes it, and records a failure as it would.
            with contextlib.suppress(Exception):
                self._answers.call(live, job.source)
        live.task = asyncio.create_task(self._run(live), name=f"generation-{job.message_id}")
        return live

    async def _run(self, live: Live) -> None:
        outcome: Outcome = "handed_over"  # unless it ends: cut at shutdown, the lease runs out
        try:
            outcome = await self._answers.run(live)
        finally:
            self._live.pop(live.job.message_id, None)
            self._metrics.live.dec()
            if outcome != "undone":  # a turn that was never stored: no generation ran
                self._metrics.outcomes.labels(outcome).inc()
            live.done.set()

    def running(self, message_id: uuid.UUID) -> bool:
        return message_id in self._live

    def stop(self, message_id: uuid.UUID, reason: StopReason) -> None:
        live = self._live.get(message_id)
        if live is not None:
            live.stop(reason)

    async def request_stop(self, message_id: uuid.UUID) -> None:
        """Tell every process (this one included) to stop generating the message."""
        self.stop(message_id, "cancelled")
        await self._bus.publish(STOP_CHANNEL, StopRequest(message_id).to_dict())

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen(), name="generation-stops")
        self._keeper = asyncio.create_task(self._keep(), name="generation-leases")
        # Stops are heard from here on (a bus that does not answer is retried by itself).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), timeout=5.0)

    async def close(self) -> None:
        """Stop the background work; write what the live generations hold and hand them over."""
        self._closing = True
        self._closed.set()
        for task in [self._listener, *self._waiting]:
            if task is not None:
                task.cancel()
        await asyncio.gather(
            *(task for task in [self._listener, *self._waiting] if task is not None),
            return_exceptions=True,
        )
        if self._keeper is not None:
            # Its round ends by itself (the sweep claims nothing more once closing): cancelled
            # between a claim and its launch, it would leave the lease held until it runs out,
            # and the answer's next run counted as though this process had died.
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._keeper, timeout=_SHUTDOWN_SECONDS)
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
                if request is None:
                    continue
                if request.taken_by is None:
                    self.stop(request.message_id, "cancelled")
                elif request.taken_by != self.owner:
                    # Its lease ran out while this process went on (a long pause), and another
                    # took it over: stop at once, writing nothing more, before the renewal
                    # would tell.
                    self.stop(request.message_id, "lost")

    async def _keep(self) -> None:
        """Renew this process's leases every third of the lease; sweep for dead ones at once,
        then every GENERATION_SWEEP_SECONDS; until the process closes."""
        renew_every = self.settings.generation_lease_seconds / 3
        next_sweep = time.monotonic()
        while not self._closing:
            # Apart: the leases held here are renewed whatever the sweep ran into.
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + self.settings.generation_sweep_seconds
                try:
                    await self.sweep()
                except Exception as exc:  # the database may be away for a while: try again
                    _log_failure("generation sweep failed", exc)
            try:
                await self._renew()
            except Exception as exc:
                _log_failure("generation lease renewal failed", exc)
            wait = min(renew_every, max(0.0, next_sweep - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), timeout=wait)

    async def _renew(self) -> None:
        # Not the answers whose turn is still committing: their lease is not visible yet.
        runs = {
            message_id: live.job.attempt
            for message_id, live in self._live.items()
            if live.is_stored()
        }
        if not runs:
            return
        async with store.transaction(self._sessionmaker) as db:
            held = await store.renew(db, self.owner, runs, self.lease_until(datetime.now(UTC)))
        for message_id in runs:
            if message_id not in held:
                # Cancelled (the cancel cleared the lease) or taken over (by another process, or
                # by a /continue here after its lease ran out): stop without writing.
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
        for message_id, handed_over in expired:
            if self._closing or self.running(message_id):
                continue
            try:
                slot = self.reserve()
            except GenerationBusy:
                break
            try:
                job = await self._take_over(message_id)
            except Exception:
                # This answer only: the others expired are still taken.
                slot.release()
                logger.exception("taking over generation %s failed", message_id)
                continue
            if job is None:
                slot.release()
                continue
            if self._closing:
                # The process began to stop while this claim was made: given back at once, as
                # a run stopped at shutdown hands its answer over (not counted as a run).
                slot.release()
                await self._give_back(job)
                break
            if handed_over:  # its process let it go (stopping, or another writer): none died
                logger.info(
                    "continuing generation %s (run %d), which its process let go",
                    message_id,
                    job.attempt,
                )
            else:
                logger.info(
                    "taking over generation %s (run %d); its process stopped renewing its lease",
                    message_id,
                    job.attempt,
                )
                self._metrics.takeovers.inc()
            # Launched at once: from here on, close() stops it and hands it over.
            self.launch(job, slot)
            taken += 1
            # A process still running it (alive, but its lease ran out) stops writing now.
            await self._bus.publish(
                STOP_CHANNEL, StopRequest(message_id, taken_by=self.owner).to_dict()
            )
        return taken

    async def _give_back(self, job: Job) -> None:
        try:
            await self._answers.hand_over(job)
        except Exception:  # its lease then runs out, and a sweep takes it over
            logger.exception("handing generation %s back failed", job.message_id)

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
                ctx = RequestContext(db, principal, self._app)
                answer = await store.get_message(ctx, claimed.session_id, message_id)
            except (MessageNotFound, ChatSessionNotFound):
                return None
            if not store.is_open(answer):
                await store.release(db, message_id, now)
                return None
            # The runs before this claim, but those that handed the answer over at shutdown (a
            # rolling restart is no crash): GENERATION_MAX_ATTEMPTS of them, and it is given up.
            if claimed.attempt - 1 - claimed.handovers >= self.settings.generation_max_attempts:
                await self._answers.fail_in(
                    db,
                    principal,
                    answer,
                    f"Gave up after {self.settings.generation_max_attempts} runs "
                    "(GENERATION_MAX_ATTEMPTS): each one's process stopped",
                    # The last run there was (this claim's would be one more).
                    {"error_kind": "attempts", "attempt": claimed.attempt - 1},
                )
                log_failed(
                    message_id,
                    "attempts",
                    f"gave up after {self.settings.generation_max_attempts} runs",
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


def _log_failure(what: str, exc: Exception) -> None:
    """A database that is away is one line every time it is tried (a warning to alert on); any
    other failure is an error with its traceback."""
    if is_connection_error(exc) or isinstance(exc, OSError | TimeoutError):
        logger.warning("%s: the database cannot be reached (%s)", what, type(exc).__name__)
    else:
        logger.exception(what)
