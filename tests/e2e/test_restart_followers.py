"""SIGTERM while an answer is being written and followed, then a new server on the same backend:
followers reconnect with Last-Event-ID and get exactly the rest of the text, the writer resumes
at the stored length, and no character is lost or repeated anywhere.

A follower on /stream counts code points (its cursor is the text's length); a follower on
/events counts history versions and rebuilds the text from the replayed state and the live
deltas. Both read the raw event stream, so that every id and offset is checked as sent.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from chat_store.client import AsyncChatStoreClient
from chat_store.client._follow import SseParser
from tests.backends import BACKEND, Backend
from tests.e2e.conftest import NO_LIMITS, ServerProcess, start_server
from tests.e2e.test_client_flows import PASSWORD, new_account
from tests.e2e.writer_process import delta_text

pytestmark = pytest.mark.e2e

BEFORE_SIGTERM = 40  # deltas written before the server is told to stop
TOTAL = 120  # deltas of the whole answer
FULL = "".join(delta_text(index) for index in range(TOTAL))

RECONNECTS = 16  # followers that connect while deltas are written
READ_SECONDS = 0.2  # how long each of them follows, once connected, before it hangs up
WRITTEN_WHILE_FOLLOWED = 5000  # at most: the writer stops once the followers are done
WHILE_FOLLOWED = "".join(delta_text(index) for index in range(WRITTEN_WHILE_FOLLOWED))


@dataclass
class Follower:
    """One reader of an event stream, across reconnects: what it was sent, checked as it comes."""

    session_id: str
    message_id: str
    token: str
    last_id: str | None = None
    text: str = ""
    status: str | None = None
    closed_for_shutdown: bool = False
    connections: int = 0
    connected: bool = False
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def run(self, server: ServerProcess, path: str) -> None:
        """Follow on `server` until its stream ends (done, or the server stops)."""
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "text/event-stream"}
        if self.last_id is not None:
            headers["Last-Event-ID"] = self.last_id
        self.connections += 1
        self.connected = False
        parser = SseParser()
        try:
            async with (
                httpx.AsyncClient(base_url=server.base_url, timeout=60) as http,
                http.stream("GET", path, headers=headers) as response,
            ):
                assert response.status_code == 200, await response.aread()
                self.connected = True
                async for line in response.aiter_lines():
                    event = parser.feed(line)
                    if event is None:
                        continue
                    data = json.loads(event.data) if event.data else {}
                    self.events.append((event.event, data))
                    if event.id is not None:
                        self.last_id = event.id
                    if self.take(event.event, data, event.id) == "end":
                        return
        except httpx.TransportError:
            pass  # the server went away without a close event: reconnect like after one

    @property
    def path(self) -> str:
        raise NotImplementedError

    def take(self, kind: str, data: dict[str, Any], event_id: str | None) -> str | None:
        """Check and keep one event; "end" when the stream is over."""
        raise NotImplementedError


@dataclass
class MessageFollower(Follower):
    """GET /sessions/{id}/messages/{id}/stream: ids are code-point offsets into the text."""

    @property
    def path(self) -> str:
        return f"/api/v1/sessions/{self.session_id}/messages/{self.message_id}/stream"

    def take(self, kind: str, data: dict[str, Any], event_id: str | None) -> str | None:
        if kind == "delta":
            self.text += data["delta"]
            assert data["offset"] == len(self.text), "a character lost or repeated"
            assert event_id == str(len(self.text))
        elif kind == "close":
            assert data == {"reason": "shutdown", "offset": len(self.text)}
            self.closed_for_shutdown = True
            return "end"
        elif kind == "done":
            assert data["length"] == len(self.text)
            self.status = data["status"]
            return "end"
        return None


@dataclass
class SessionFollower(Follower):
    """GET /sessions/{id}/events: ids are history versions; the answer's text is rebuilt from
    the replayed message state and the live deltas."""

    versions: list[int] = field(default_factory=list)

    @property
    def path(self) -> str:
        return f"/api/v1/sessions/{self.session_id}/events"

    def take(self, kind: str, data: dict[str, Any], event_id: str | None) -> str | None:
        if kind == "close":
            assert data == {"reason": "shutdown"}
            self.closed_for_shutdown = True
            return "end"
        assert event_id is not None
        version = int(event_id)
        assert not self.versions or version > self.versions[-1], "a version repeated"
        self.versions.append(version)
        message = data.get("message")
        if isinstance(message, dict) and message["id"] == self.message_id:
            self.status = message["status"]
            self.text = (
                message["content"] if self.status == "complete" else message["partial_content"]
            )
        elif kind == "message.delta" and data["message_id"] == self.message_id:
            assert data["start"] == len(self.text), "a delta lost or repeated"
            self.text += data["delta"]
            assert data["offset"] == len(self.text)
        return None


async def _write(
    writer: AsyncChatStoreClient,
    session_id: str,
    message_id: str,
    offset: int,
    first: int,
    last: int,
    on_written: Any = None,
) -> tuple[int, list[str]]:
    """Deltas `first`..`last - 1` from `offset`; stops at the first refusal. Returns the offset
    and the deltas acknowledged."""
    acknowledged: list[str] = []
    for index in range(first, last):
        text = delta_text(index)
        try:
            offset = (await writer.append_delta(session_id, message_id, text, offset)).length
        except Exception:
            break
        acknowledged.append(text)
        if on_written is not None:
            await on_written(index)
    return offset, acknowledged


async def _until(condition: Any, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_followers_and_writer_continue_exactly_after_sigterm(
    e2e_backend: Backend,
) -> None:
    first = await start_server(e2e_backend, **NO_LIMITS)
    try:
        writer, email = await new_account(first)
        async with writer:
            session = await writer.create_session()
            answer = await writer.append_message(session.id, "assistant", status="pending")
            assert writer.access_token is not None
            ids = (str(session.id), str(answer.id), writer.access_token)
            on_stream, on_events = MessageFollower(*ids), SessionFollower(*ids)
            following = [
                asyncio.create_task(on_stream.run(first, on_stream.path)),
                asyncio.create_task(on_events.run(first, on_events.path)),
            ]
            # Followers connect while nothing is written: a replay under concurrent writes is
            # the next test's subject.
            await _until(lambda: on_stream.connected and on_events.status == "pending")

            async def stop_when_followed(index: int) -> None:
                if index == BEFORE_SIGTERM:
                    # Both followers have seen part of the answer before the server stops.
                    await _until(lambda: on_stream.text and on_events.text)
                    first.terminate()

            _, acknowledged = await asyncio.wait_for(
                _write(writer, *ids[:2], 0, 0, TOTAL, stop_when_followed), 60
            )
            assert first.wait(30) is not None  # exited within the grace period
            await asyncio.wait_for(asyncio.gather(*following), 30)
    finally:
        first.close()

    acked = "".join(acknowledged)
    assert BEFORE_SIGTERM < len(acknowledged) < TOTAL
    for follower in (on_stream, on_events):
        # What a follower saw is the start of the text, within what was stored.
        assert FULL.startswith(follower.text), "a follower was sent a wrong character"
    assert on_stream.status is None  # not done yet
    assert on_events.status in ("pending", "in_progress")
    assert on_stream.closed_for_shutdown, on_stream.events[-3:]

    second = await start_server(e2e_backend, migrate=False, **NO_LIMITS)
    try:
        writer = second.client()
        async with writer:
            await writer.login(email, PASSWORD)
            following = [
                asyncio.create_task(on_stream.run(second, on_stream.path)),
                asyncio.create_task(on_events.run(second, on_events.path)),
            ]
            point = await writer.resume(session.id)
            stored = point.message.partial_content or ""
            # The replays bring both followers up to the stored text before writing goes on.
            await _until(lambda: on_stream.text == stored and on_events.text == stored)
            # Every acknowledged delta is stored, and nothing else but perhaps the one whose
            # answer was lost when the server stopped.
            assert stored.startswith(acked) and FULL.startswith(stored), (len(acked), len(stored))
            assert point.offset == len(stored)
            written = len(stored) - len(acked)
            assert written in (0, len(delta_text(len(acknowledged))))
            resume_at = len(acknowledged) + (1 if written else 0)
            offset, rest = await _write(writer, *ids[:2], point.offset, resume_at, TOTAL)
            assert len(rest) == TOTAL - resume_at and offset == len(FULL)
            await writer.complete_message(session.id, answer.id)

            await asyncio.wait_for(following[0], 30)  # /stream ends with done
            await _until(lambda: on_events.status == "complete")
            following[1].cancel()
            await asyncio.gather(following[1], return_exceptions=True)
            final = await writer.get_message(session.id, answer.id)
    finally:
        second.close()

    assert final.content == FULL
    assert (on_stream.text, on_stream.status) == (FULL, "complete")
    assert on_events.text == FULL
    assert on_stream.connections == on_events.connections == 2


async def _reconnect_while_writing(server: ServerProcess, follower_type: type[Follower]) -> None:
    """Followers connect again and again (from the start, or from an id they were sent) while
    deltas are being committed: each one's checks run on everything it is sent."""
    writer, _ = await new_account(server)
    async with writer:
        session = await writer.create_session()
        answer = await writer.append_message(session.id, "assistant", status="pending")
        assert writer.access_token is not None
        ids = (str(session.id), str(answer.id), writer.access_token)
        writing = asyncio.create_task(_write(writer, *ids[:2], 0, 0, WRITTEN_WHILE_FOLLOWED))
        try:
            resumed: Follower | None = None
            for attempt in range(RECONNECTS):
                follower = follower_type(*ids)
                if resumed is not None and attempt % 2:
                    # From where an earlier follower stopped, with what it had been sent.
                    follower.last_id, follower.text = resumed.last_id, resumed.text
                following = asyncio.create_task(follower.run(server, follower.path))
                await _until(lambda f=follower, t=following: f.connected or t.done())
                await asyncio.wait({following}, timeout=READ_SECONDS)
                following.cancel()  # still following: hang up
                [outcome] = await asyncio.gather(following, return_exceptions=True)
                if isinstance(outcome, Exception):
                    raise outcome  # a check of the follower failed
                assert follower.connected
                resumed = follower
                assert WHILE_FOLLOWED.startswith(follower.text)
        finally:
            writing.cancel()
            await asyncio.gather(writing, return_exceptions=True)


async def test_message_stream_reconnects_while_deltas_are_written(
    stream_server: ServerProcess,
) -> None:
    await _reconnect_while_writing(stream_server, MessageFollower)


@pytest.mark.xfail(
    BACKEND == "postgres",
    strict=True,
    reason="on Postgres a session feed's replay reads the session's version, the changed "
    "messages and their text in separate statements, without one snapshot: a delta committed "
    "in between is in the replayed text and is sent again live",
)
async def test_session_feed_reconnects_while_deltas_are_written(
    stream_server: ServerProcess,
) -> None:
    await _reconnect_while_writing(stream_server, SessionFollower)
