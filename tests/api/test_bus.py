"""The Redis bus's publisher: writers queue events and wait; one task sends them in order, in
batches.

Two buses on one Redis stand for two worker processes.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest

from chat_store.cache import bus as bus_module
from chat_store.cache.bus import RETRY_AFTER_SECONDS, SUBSCRIBE_SECONDS, RedisBus, Subscription
from tests.support.redis_server import RedisServer
from tests.support.silent_relay import SilencingRelay

CHANNEL = "session:bus-test"


@pytest.fixture
async def buses(redis_server: RedisServer) -> AsyncIterator[tuple[RedisBus, RedisBus]]:
    async with AsyncExitStack() as stack:
        publisher, reader = RedisBus(redis_server.url, "bus:"), RedisBus(redis_server.url, "bus:")
        stack.push_async_callback(reader.close)
        stack.push_async_callback(publisher.close)
        yield publisher, reader


async def _received(subscription: Subscription, count: int) -> list[int]:
    numbers: list[int] = []
    while len(numbers) < count:
        event = await subscription.next(wait_seconds=5.0)
        if event is None:
            break
        numbers.append(event["n"])
    return numbers


async def test_a_burst_arrives_whole_and_in_order(buses: tuple[RedisBus, RedisBus]) -> None:
    publisher, reader = buses
    async with reader.subscribe(CHANNEL) as subscription:
        # Many writers publishing at once, as under load: their events share round trips.
        await asyncio.gather(*(publisher.publish(CHANNEL, {"n": n}) for n in range(500)))
        assert await _received(subscription, 500) == list(range(500))
        assert not subscription.lost
    assert publisher.errors == 0


async def test_close_sends_what_was_queued_before_it(buses: tuple[RedisBus, RedisBus]) -> None:
    publisher, reader = buses
    async with reader.subscribe(CHANNEL) as subscription:
        # Writers whose events are queued, not yet sent, when the process shuts down.
        writers = [asyncio.create_task(publisher.publish(CHANNEL, {"n": n})) for n in range(50)]
        await asyncio.sleep(0)
        await publisher.close()
        assert all(writer.done() for writer in writers)
        assert await _received(subscription, 50) == list(range(50))
        # A closed bus takes no more events (and does not fail the caller).
        await publisher.publish(CHANNEL, {"n": 50})
        assert await subscription.next(wait_seconds=0.3) is None


async def test_redis_down_fails_open_and_publishing_resumes(
    redis_server: RedisServer, buses: tuple[RedisBus, RedisBus]
) -> None:
    publisher, reader = buses
    await publisher.publish(CHANNEL, {"n": 0})
    redis_server.stop()
    # The writer is never failed by the bus: the event is dropped and counted.
    await publisher.publish(CHANNEL, {"n": 1})
    assert publisher.errors == 1
    # Within the retry window later events are dropped without another attempt.
    await publisher.publish(CHANNEL, {"n": 2})
    assert publisher.errors == 1

    redis_server.start()
    await asyncio.sleep(RETRY_AFTER_SECONDS + 0.1)
    async with reader.subscribe(CHANNEL) as subscription:
        await publisher.publish(CHANNEL, {"n": 3})
        assert await _received(subscription, 1) == [3]
    assert publisher.errors == 1


async def test_the_first_event_after_a_redis_restart_is_not_lost(
    redis_server: RedisServer, buses: tuple[RedisBus, RedisBus]
) -> None:
    """The publisher's pooled connection outlives the restart; its first use fails with
    "Connection closed by server" and is tried once more on a new one."""
    publisher, reader = buses
    await publisher.publish(CHANNEL, {"n": 0})
    redis_server.stop()
    redis_server.start()
    async with reader.subscribe(CHANNEL) as subscription:
        await publisher.publish(CHANNEL, {"n": 1})
        assert await _received(subscription, 1) == [1]
    assert publisher.errors == 0


async def test_the_publishing_process_has_its_own_events_once_even_without_redis(
    redis_server: RedisServer, buses: tuple[RedisBus, RedisBus]
) -> None:
    """A reader in the process that publishes has each event at once, and not a second time
    when Redis hands it back; the other process's reader has it through Redis."""
    publisher, reader = buses
    async with publisher.subscribe(CHANNEL) as own, reader.subscribe(CHANNEL) as other:
        for n in range(3):
            await publisher.publish(CHANNEL, {"n": n})
        assert await _received(own, 3) == [0, 1, 2]
        assert await _received(other, 3) == [0, 1, 2]
        assert await own.next(wait_seconds=0.5) is None

        redis_server.stop()
        await publisher.publish(CHANNEL, {"n": 3})
        assert await _received(own, 1) == [3]
        assert await other.next(wait_seconds=0.3) is None
    assert not own.lost


async def test_a_stalled_redis_does_not_hold_up_new_streams(redis_server: RedisServer) -> None:
    """Redis restarts and comes back stalled (paused, overloaded): the listener's resubscribe
    waits for it under the lock every new stream's subscribe takes. Bounded, it gives up and
    tries again: a new stream subscribes within a few seconds, and hears its own process's
    events at once; once Redis answers, events from other processes flow again."""
    bus, other = RedisBus(redis_server.url, "bus:"), RedisBus(redis_server.url, "bus:")
    try:
        async with bus.subscribe("_evict"):  # as at startup
            redis_server.kill()
            await asyncio.sleep(2.5)  # the listener: connection lost, retrying every second
            redis_server.start()
            os.kill(redis_server.process.pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(2.5)  # the listener's resubscribe is waiting on Redis
                # The subscribe and the unsubscribe each wait for the listener's attempt under
                # the lock (its old connection's close and its subscribe, bounded each), the
                # subscribe then makes its own: bounded all (unbounded, this waited as long as
                # Redis stalled).
                async with asyncio.timeout(6 * SUBSCRIBE_SECONDS + 1.0):
                    async with bus.subscribe(CHANNEL) as subscription:
                        await bus.publish(CHANNEL, {"n": 1})
                        assert await subscription.next(1.0) == {"n": 1}
            finally:
                os.kill(redis_server.process.pid, signal.SIGCONT)
            async with bus.subscribe(CHANNEL) as subscription:
                for _ in range(50):  # the listener subscribes again, within seconds
                    await other.publish(CHANNEL, {"n": 2})
                    if await subscription.next(0.2) == {"n": 2}:
                        break
                else:
                    raise AssertionError("no event from the other process after Redis came back")
    finally:
        await bus.close()
        await other.close()


async def test_a_pubsub_connection_gone_silent_is_made_anew(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its reads waited forever and the process never heard the others again (nor told its
    readers): the listener now asks a quiet connection, and replaces one that does not answer."""
    monkeypatch.setattr(bus_module, "LISTEN_PING_SECONDS", 0.3)
    monkeypatch.setattr(bus_module, "LISTEN_DEAD_SECONDS", 1.0)
    relay = SilencingRelay(redis_server.port)
    await relay.start()
    this_process = RedisBus(relay.url(), "silent:")  # its connections go through the relay
    other_process = RedisBus(redis_server.url, "silent:")
    try:
        async with this_process.subscribe("session:x") as subscription:
            await other_process.publish("session:x", {"n": 0})
            assert await subscription.next(2.0) == {"n": 0}
            relay.silence()
            heard = None
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while loop.time() < deadline and heard != {"n": 1}:
                await other_process.publish("session:x", {"n": 1})
                heard = await subscription.next(0.5)
            assert heard == {"n": 1}, "no event from the other process after 10 s"
            assert subscription.lost  # its readers are told they may have missed events
    finally:
        await this_process.close()
        await other_process.close()
        await relay.close()
