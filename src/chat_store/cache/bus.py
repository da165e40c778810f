"""Publish/subscribe for live streams: Redis pub/sub across processes, or in-process.

One Redis connection per process carries every subscription: a reader subscribes a local queue,
the first local reader of a channel SUBSCRIBEs it and the last one to leave UNSUBSCRIBEs, so 500
readers cost 500 queues, not 500 connections. The channels that readers joined or left while a
command was on the wire go in the next one: 100 streams that start at once wait for one or two
commands, not for 100 sent one after another. An event's readers in the process that publishes
it have it at once; Redis carries it to the other processes (each event on the wire names the
process it came from, whose listener skips it). The bus is a wake-up signal, never the record:
readers re-read the database whenever they may have missed something.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from chat_store.cache.connection import redis_client

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 1.0
# Events waiting for the publisher beyond this are dropped (Redis is too slow to keep up);
# their readers re-read the store on their timer.
OUTBOX_LIMIT = 10_000
# How long a SUBSCRIBE or UNSUBSCRIBE on the pub/sub connection may take before it counts as
# failed (the listener tries again): the lock it is sent under is every new stream's.
SUBSCRIBE_SECONDS = 1.0
# A pub/sub connection quiet this long is asked whether it is still there (PING); one that has
# said nothing for LISTEN_DEAD_SECONDS is taken for gone and made anew. A connection can die
# without a word (a Redis node gone in a failover, a NAT that forgot the flow): its reads just
# wait, and the process would not hear the others again.
LISTEN_PING_SECONDS = 5.0
LISTEN_DEAD_SECONDS = 15.0
# Channels the service uses for itself (not readers of a stream); not counted as subscriptions.
INTERNAL_CHANNEL_PREFIX = "_"
QUEUE_SIZE = 1024  # a reader that falls this far behind drops events and re-reads the store


class Subscription:
    """Events of one channel for one reader; `lost` is set when events were dropped."""

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        self.lost = False

    def deliver(self, event: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.lost = True

    async def next(self, wait_seconds: float) -> dict[str, Any] | None:
        """The next event, or None after `wait_seconds` without one."""
        try:
            async with asyncio.timeout(wait_seconds):
                return await self.queue.get()
        except TimeoutError:
            return None


class Bus(Protocol):
    backend: str

    async def publish(self, channel: str, event: dict[str, Any]) -> None: ...
    def subscribe(self, channel: str) -> contextlib.AbstractAsyncContextManager[Subscription]: ...
    def subscriber_count(self) -> int: ...
    async def close(self) -> None: ...


class _LocalFanout:
    """Channel → local subscriptions, shared by both buses."""

    def __init__(self) -> None:
        self.channels: dict[str, set[Subscription]] = {}

    def add(self, subscription: Subscription) -> bool:
        """Register; True when this is the channel's first local reader."""
        readers = self.channels.setdefault(subscription.channel, set())
        readers.add(subscription)
        return len(readers) == 1

    def remove(self, subscription: Subscription) -> bool:
        """Unregister; True when the channel has no local reader left."""
        readers = self.channels.get(subscription.channel)
        if readers is None:
            return False
        readers.discard(subscription)
        if not readers:
            del self.channels[subscription.channel]
            return True
        return False

    def deliver(self, channel: str, event: dict[str, Any]) -> None:
        for subscription in list(self.channels.get(channel, ())):
            subscription.deliver(event)

    def count(self) -> int:
        return sum(
            len(readers)
            for channel, readers in self.channels.items()
            if not channel.startswith(INTERNAL_CHANNEL_PREFIX)
        )


class MemoryBus:
    backend = "memory"

    def __init__(self) -> None:
        self._fanout = _LocalFanout()

    async def publish(self, channel: str, event: dict[str, Any]) -> None:
        self._fanout.deliver(channel, event)

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
        subscription = Subscription(channel)
        self._fanout.add(subscription)
        try:
            yield subscription
        finally:
            self._fanout.remove(subscription)

    def subscriber_count(self) -> int:
        return self._fanout.count()

    async def close(self) -> None:
        self._fanout.channels.clear()


class _Rounds:
    """Work that one task does in rounds: a caller joins the next round and returns once it has
    run; what callers ask for while a round runs goes in the next one. Under load, many callers
    share one round trip to Redis."""

    def __init__(self, name: str, run_round: Callable[[], Awaitable[None]]) -> None:
        self._name = name
        self._run_round = run_round
        self._next: asyncio.Future[None] | None = None
        self._running: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    async def join(self) -> None:
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        joined = self._next
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=self._name)
        # Shielded: a caller that is cancelled must not cancel the round others wait on.
        await asyncio.shield(joined)

    def drop_next(self) -> None:
        """Let the callers of the next round go without it (what they asked for was dropped)."""
        _resolve(self._next)
        self._next = None

    async def close(self, wait_seconds: float) -> None:
        """Let the round under way finish (for at most `wait_seconds`), then stop; no caller is
        left waiting."""
        if self._task is not None:
            if wait_seconds > 0:
                await asyncio.wait({self._task}, timeout=wait_seconds)
            self._task.cancel()
        _resolve(self._running)
        self.drop_next()

    async def _run(self) -> None:
        while self._next is not None:
            self._running, self._next = self._next, None
            try:
                await self._run_round()
            finally:
                _resolve(self._running)
                self._running = None


class RedisBus:
    backend = "redis"

    def __init__(self, url: str, prefix: str) -> None:
        self._redis = redis_client(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        # The listener blocks on reads: no socket timeout on its own connection. Nor a retry:
        # a pub/sub connection made anew behind its back would hide the events lost meanwhile
        # (the listener flags its readers `lost` when it makes one itself).
        self._listen_redis = Redis.from_url(url, socket_connect_timeout=0.5)
        self._prefix = prefix
        self._fanout = _LocalFanout()
        self._pubsub: PubSub | None = None
        self._listener: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        # The channels (prefixed) the pub/sub connection is subscribed to, and the round of
        # SUBSCRIBE/UNSUBSCRIBE that readers who joined or left since the last one wait for.
        self._redis_channels: set[str] = set()
        self._subscribing = _Rounds("redis-subscribe", self._sync_round)
        self.errors = 0
        self._skip_until = 0.0
        self._closing = False
        # Events not yet handed to Redis, and the future each batch resolves when it has been
        # sent (or dropped); their writers wait on it.
        self._outbox: list[tuple[str, str]] = []
        self._publishing = _Rounds("redis-publish", self._publish_round)
        # Put before each event on the wire (JSON never starts with it): the listener skips
        # the events of this process, which its readers had when they were published.
        self._origin = f"~{uuid.uuid4().hex}~"

    async def publish(self, channel: str, event: dict[str, Any]) -> None:
        """Send the event, in order, and return once Redis has it (or it was dropped).

        Events are queued for one publisher task, which sends all that queued while its
        previous batch was on the wire as one pipeline: under load many writers share a round
        trip. A writer still answers only after its event is out, so a reader following the
        stream has the delta no later than the writer has its answer.
        """
        if self._closing:
            return
        # This process's readers need no round trip through Redis (about a millisecond before
        # a streamed answer's delta reaches its own client).
        self._fanout.deliver(channel, event)
        # After a failure, Redis is left alone for a second: a write that publishes many events
        # must not wait out a timeout for each of them.
        if time.monotonic() < self._skip_until:
            return
        if len(self._outbox) >= OUTBOX_LIMIT:
            self.errors += 1
            return
        self._outbox.append((self._prefix + channel, self._origin + json.dumps(event)))
        await self._publishing.join()

    async def _publish_round(self) -> None:
        batch, self._outbox = self._outbox, []
        try:
            async with self._redis.pipeline(transaction=False) as pipeline:
                for channel, data in batch:
                    pipeline.publish(channel, data)
                await pipeline.execute()
        except Exception as exc:  # a background task: log it, never leave a writer waiting
            # Readers notice the gap (their timer re-reads the store): fail open, and drop
            # what queued up behind it rather than wait out a timeout for each batch.
            self.errors += 1
            self._skip_until = time.monotonic() + RETRY_AFTER_SECONDS
            logger.warning("redis publish failed: %s", type(exc).__name__)
            self._outbox.clear()
            self._publishing.drop_next()

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
        subscription = Subscription(channel)
        if self._fanout.add(subscription):
            await self._redis_subscribe(channel)
        try:
            yield subscription
        finally:
            if self._fanout.remove(subscription):
                await self._redis_unsubscribe(channel)

    async def _redis_subscribe(self, channel: str) -> None:
        await self._sync_channels()

    async def _redis_unsubscribe(self, channel: str) -> None:
        await self._sync_channels()

    async def _sync_channels(self) -> None:
        """Bring the pub/sub connection's channels to those local readers follow; return once
        a round begun after this call has sent its commands."""
        await self._subscribing.join()

    async def _sync_round(self) -> None:
        async with self._lock:
            await self._send_channel_changes()

    async def _send_channel_changes(self) -> None:
        wanted = {self._prefix + channel for channel in self._fanout.channels}
        joined, left = wanted - self._redis_channels, self._redis_channels - wanted
        try:
            # Bounded: a Redis that stalls must not hold up the streams that subscribe (their
            # own process's events reach them without Redis, the rest by their re-reads).
            async with asyncio.timeout(SUBSCRIBE_SECONDS):
                if joined:
                    if self._pubsub is None:
                        self._pubsub = self._listen_redis.pubsub(ignore_subscribe_messages=True)
                    await self._pubsub.subscribe(*joined)
                    self._redis_channels |= joined
                if left and self._pubsub is not None and self._pubsub.subscribed:
                    await self._pubsub.unsubscribe(*left)
                self._redis_channels -= left
        except (RedisError, OSError, TimeoutError) as exc:
            self.errors += 1
            logger.warning("redis subscribe failed: %s", type(exc).__name__)
        # Started even when the subscribe failed: the listener retries, subscribing every
        # channel that has local readers once Redis answers again (and flags them `lost`).
        if joined and (self._listener is None or self._listener.done()):
            self._listener = asyncio.create_task(self._listen(), name="redis-bus")

    async def _listen(self) -> None:
        heard = asked = time.monotonic()  # the connection's last word, and our last PING
        while not self._closing:
            pubsub = self._pubsub
            if pubsub is None:
                return
            try:
                if not pubsub.subscribed:
                    if self._fanout.channels:  # readers waiting, subscription lost: retry
                        await asyncio.sleep(1.0)
                        await self._resubscribe()
                    else:
                        await asyncio.sleep(0.2)
                    heard = asked = time.monotonic()
                    continue
                message = await pubsub.get_message(timeout=1.0)
                now = time.monotonic()
                if message is not None:  # an event, a PING's answer, a (un)subscribe
                    heard = now
                elif now - heard > LISTEN_DEAD_SECONDS:
                    raise ConnectionError("the pub/sub connection stopped answering")
                elif now - max(heard, asked) >= LISTEN_PING_SECONDS:
                    asked = now
                    await pubsub.ping()
            except (RedisError, OSError) as exc:
                self.errors += 1
                logger.warning("redis pub/sub connection lost: %s", type(exc).__name__)
                await asyncio.sleep(1.0)
                await self._resubscribe()
                heard = asked = time.monotonic()
                continue
            if message is None or message.get("type") != "message":
                continue
            channel = message["channel"]
            if isinstance(channel, bytes):
                channel = channel.decode()
            origin, event = from_wire(message["data"])
            if origin == self._origin or not isinstance(event, dict):
                continue  # this process's (its readers have it), or not an event
            self._fanout.deliver(channel[len(self._prefix) :], event)

    async def _resubscribe(self) -> None:
        """After a lost connection: a new pub/sub with every channel that has local readers."""
        async with self._lock:
            old = self._pubsub
            self._pubsub = self._listen_redis.pubsub(ignore_subscribe_messages=True)
            if old is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(SUBSCRIBE_SECONDS):
                        await old.aclose()  # type: ignore[no-untyped-call]
            channels = [self._prefix + channel for channel in self._fanout.channels]
            self._redis_channels = set()
            if channels:
                try:
                    # Bounded, under the lock every new stream's subscribe takes: a Redis that
                    # came back stalled is tried again by the listener a second later.
                    async with asyncio.timeout(SUBSCRIBE_SECONDS):
                        await self._pubsub.subscribe(*channels)
                    self._redis_channels = set(channels)
                except (RedisError, OSError, TimeoutError) as exc:
                    self.errors += 1
                    logger.warning("redis resubscribe failed: %s", type(exc).__name__)
            # Readers may have missed events while the connection was down.
            for readers in self._fanout.channels.values():
                for subscription in readers:
                    subscription.lost = True

    def subscriber_count(self) -> int:
        return self._fanout.count()

    async def close(self) -> None:
        await self._subscribing.close(0.0)
        # What was committed before shutdown still reaches its readers.
        await self._publishing.close(2.0)
        self._closing = True
        if self._listener is not None:
            # redis-py's reads run under asyncio.timeout(), which can swallow a cancellation that
            # lands as its own timeout fires; the flag ends the loop then, at its next turn.
            self._listener.cancel()
            await asyncio.wait({self._listener}, timeout=2.0)
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self._redis.aclose()
        await self._listen_redis.aclose()


def from_wire(data: bytes | str) -> tuple[str, Any]:
    """An event as Redis carries it: the publishing process's mark (`~<hex>~`, empty for a
    bare event) and the event (None when it is not JSON)."""
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    origin = ""
    if text.startswith("~"):
        end = text.find("~", 1) + 1
        origin, text = text[:end], text[end:]
    try:
        return origin, json.loads(text)
    except ValueError:
        return origin, None


def _resolve(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


def create_bus(redis_url: str | None, prefix: str) -> Bus:
    if redis_url:
        return RedisBus(redis_url, prefix)
    return MemoryBus()
