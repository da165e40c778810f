"""Messages and live streams against real server processes, driven by the project's client."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from chat_store.client import AsyncChatStoreClient, StreamDelta, StreamDone, StreamReset
from tests.assertions import metric_sample
from tests.backends import Backend
from tests.e2e.conftest import NO_LIMITS, ServerProcess, start_server
from tests.e2e.test_client_flows import new_account
from tests.e2e.writer_process import delta_text

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


async def test_fifty_concurrent_appends_get_seq_1_to_50(stream_server: ServerProcess) -> None:
    client, _ = await new_account(stream_server)
    async with client:
        session = await client.create_session()
        created = await asyncio.gather(
            *(client.append_message(session.id, "user", f"turn {i}") for i in range(50))
        )
        assert sorted(m.seq for m in created) == list(range(1, 51))
        stored = [m async for m in client.iter_messages(session.id)]
        assert [m.seq for m in stored] == list(range(1, 51))
        # Each append is stored once, under the seq it was answered with.
        assert {m.id: m.seq for m in stored} == {m.id: m.seq for m in created}
        assert (await client.get_session(session.id)).message_count == 50


async def test_a_killed_writer_is_resumed_byte_identical(stream_server: ServerProcess) -> None:
    client, _ = await new_account(stream_server)
    async with client:
        key = await client.create_api_key("writer")
        session = await client.create_session()
        writer = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.e2e.writer_process",
                stream_server.base_url,
                key.key,
                str(session.id),
                "200",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert writer.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(writer.stdout.readline), 60)
            assert line.strip(), writer.stderr.read() if writer.stderr else ""
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.wait(10)
        answer_id = line.strip()

        sent = "".join(delta_text(i) for i in range(200))
        point = await client.resume(session.id)
        assert str(point.message.id) == answer_id
        assert point.message.status == "in_progress"
        assert point.message.partial_content == sent
        assert point.offset == len(sent)
        assert [m.content for m in point.history] == ["Explain the failing test"]

        offset = point.offset
        rest = [delta_text(i) for i in range(200, 300)]
        for text in rest:
            offset = (await client.append_delta(session.id, answer_id, text, offset)).length
        await client.complete_message(session.id, answer_id)

        history = [m async for m in client.iter_messages(session.id)]
        assert [m.role for m in history] == ["user", "assistant"]
        assert history[1].status == "complete"
        assert history[1].content is not None
        assert history[1].content.encode() == (sent + "".join(rest)).encode()


async def _follow_all(
    client: AsyncChatStoreClient, session_id: object, message_id: object, drops: int = 0
) -> tuple[str, str]:
    """Follow to the end; with `drops`, disconnect that many times and reconnect from the last
    offset (what `follow` does by itself after a network error)."""
    text, offset = "", 0
    for attempt in range(drops + 1):
        seen = 0
        async for item in client.follow(session_id, message_id, offset=offset):  # type: ignore[arg-type]
            if isinstance(item, StreamDone):
                assert item.length == len(text)
                return text, item.status
            assert isinstance(item, StreamDelta)
            assert item.offset == len(text) + len(item.delta)
            text += item.delta
            offset = item.offset
            seen += 1
            if attempt < drops and seen >= 20:
                break  # drop the connection mid-stream
    raise AssertionError("the stream ended without done")


async def _stream_answer(
    writer: AsyncChatStoreClient, session_id: object, message_id: object, count: int
) -> str:
    offset, written = 0, []
    for index in range(count):
        text = delta_text(index)
        offset = (await writer.append_delta(session_id, message_id, text, offset)).length  # type: ignore[arg-type]
        written.append(text)
        if index % 50 == 0:
            await asyncio.sleep(0.01)  # let readers interleave with the writer
    await writer.complete_message(session_id, message_id)  # type: ignore[arg-type]
    return "".join(written)


async def _readers_follow_a_writer(write_to: ServerProcess, read_from: ServerProcess) -> None:
    writer, email = await new_account(write_to)
    async with writer:
        session = await writer.create_session()
        answer = await writer.append_message(session.id, "assistant", status="pending")
        readers = [read_from.client(), read_from.client(), read_from.client()]
        for reader in readers:
            await reader.login(email, "correct horse battery staple")
        try:
            follows = [
                asyncio.create_task(_follow_all(readers[0], session.id, answer.id)),
                asyncio.create_task(_follow_all(readers[1], session.id, answer.id)),
                asyncio.create_task(_follow_all(readers[2], session.id, answer.id, drops=2)),
            ]
            await asyncio.sleep(0.3)  # readers are connected before the first delta
            written = await _stream_answer(writer, session.id, answer.id, 500)
            results = await asyncio.wait_for(asyncio.gather(*follows), 45)
        finally:
            for reader in readers:
                await reader.aclose()
    for text, status in results:
        assert status == "complete"
        assert text.encode() == written.encode()


async def test_readers_on_another_process_follow_a_writer(
    e2e_backend: Backend, stream_server: ServerProcess
) -> None:
    """On Postgres + Redis deltas cross processes over pub/sub. On the embedded default each
    process has its own in-process bus, so readers there catch up by re-reading the store on
    their timer: slower, and still exact."""
    # With Redis the readers' process re-reads the store only once a minute: if pub/sub did
    # not carry the deltas across, the readers would time out.
    poll = "60" if e2e_backend.redis_url else "1"
    second = await start_server(
        e2e_backend, migrate=False, **{**NO_LIMITS, "STREAM_POLL_SECONDS": poll}
    )
    try:
        await _readers_follow_a_writer(stream_server, second)
    finally:
        second.close()


async def test_readers_follow_a_writer_on_one_process(stream_server: ServerProcess) -> None:
    await _readers_follow_a_writer(stream_server, stream_server)


async def _metric(server: ServerProcess, name: str) -> float:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        text = (await http.get("/metrics")).text
    assert f"\n{name} " in text, f"{name} not in /metrics"
    return metric_sample(text, name)


async def test_dropped_readers_leave_nothing_behind(stream_server: ServerProcess) -> None:
    client, _ = await new_account(stream_server)
    async with client:
        session = await client.create_session()
        answer = await client.append_message(session.id, "assistant", status="pending")
        assert client.access_token is not None
        headers = {"Authorization": f"Bearer {client.access_token}"}
        url = f"/api/v1/sessions/{session.id}/messages/{answer.id}/stream"
        base_streams = await _metric(stream_server, "chat_store_streams_open")
        limits = httpx.Limits(max_connections=250)
        async with httpx.AsyncClient(
            base_url=stream_server.base_url, limits=limits, timeout=30
        ) as http:

            async def open_stream() -> httpx.Response:
                response = await http.send(
                    http.build_request("GET", url, headers=headers), stream=True
                )
                assert response.status_code == 200
                return response

            responses = await asyncio.gather(*(open_stream() for _ in range(200)))
            for _ in range(100):
                if await _metric(stream_server, "chat_store_streams_open") >= base_streams + 200:
                    break
                await asyncio.sleep(0.1)
            assert await _metric(stream_server, "chat_store_streams_open") == base_streams + 200
            for response in responses:
                await response.aclose()
        for _ in range(150):
            open_now = await _metric(stream_server, "chat_store_streams_open")
            subscriptions = await _metric(stream_server, "chat_store_bus_subscriptions")
            if open_now == base_streams and subscriptions == 0:
                break
            await asyncio.sleep(0.2)
        assert await _metric(stream_server, "chat_store_streams_open") == base_streams
        assert await _metric(stream_server, "chat_store_bus_subscriptions") == 0


async def test_sigterm_ends_streams_and_keeps_every_acknowledged_delta(
    e2e_backend: Backend,
) -> None:
    server = await start_server(e2e_backend, **NO_LIMITS)
    try:
        writer, email = await new_account(server)
        async with writer:
            session = await writer.create_session()
            answer = await writer.append_message(session.id, "assistant", status="pending")
            reader = server.client()
            await reader.login(email, "correct horse battery staple")
            received: list[str] = []

            async def follow() -> None:
                async for item in reader.follow(session.id, answer.id, max_retries=0):
                    if isinstance(item, StreamDelta):
                        received.append(item.delta)

            follower = asyncio.create_task(follow())
            acknowledged: list[str] = []
            offset = 0

            async def write_until_refused() -> None:
                nonlocal offset
                for index in range(100_000):
                    text = delta_text(index)
                    try:
                        offset = (
                            await writer.append_delta(session.id, answer.id, text, offset)
                        ).length
                    except (httpx.TransportError, Exception):
                        return
                    acknowledged.append(text)
                    if index == 50:
                        server.terminate()

            await asyncio.wait_for(write_until_refused(), 60)
            assert server.wait(30) is not None  # exited within the grace period
            with pytest.raises(Exception):  # noqa: B017 - the stream ended with the server
                await asyncio.wait_for(follower, 30)
            await reader.aclose()
        assert len(acknowledged) >= 51
    finally:
        server.close()

    # Everything the server acknowledged is stored.
    restarted = await start_server(e2e_backend, migrate=False, **NO_LIMITS)
    try:
        client = restarted.client()
        async with client:
            await client.login(email, "correct horse battery staple")
            stored = await client.get_message(session.id, answer.id)
            assert stored.partial_content == "".join(acknowledged)
    finally:
        restarted.close()


@pytest.mark.parametrize("replace", ["partial_content", "content"])
async def test_a_follower_is_told_when_the_text_is_replaced(
    stream_server: ServerProcess, replace: str
) -> None:
    """The writer replaces the streamed text (PATCH partial_content), or completes the answer
    with another content: the follower got a `reset` with the whole text (it kept the old text
    and appended what came after, or was cut off beyond it), and a reconnect from the offset
    it reached goes on from there."""
    client, _ = await new_account(stream_server)
    async with client:
        session = await client.create_session()
        answer = await client.append_message(session.id, "assistant", status="pending")
        await client.append_delta(session.id, answer.id, "Hello world", 0)
        items: list[object] = []
        first = asyncio.Event()

        async def follow() -> None:
            async for item in client.follow(session.id, answer.id):
                items.append(item)
                first.set()

        following = asyncio.create_task(follow())
        await asyncio.wait_for(first.wait(), 10)
        if replace == "partial_content":
            await client.update_message(session.id, answer.id, partial_content="Hi")
            await client.append_delta(session.id, answer.id, " there", 2)
            await client.complete_message(session.id, answer.id)
        else:
            await client.complete_message(session.id, answer.id, content="Hi there")
        await asyncio.wait_for(following, 10)

        text = ""
        for item in items:
            if isinstance(item, StreamDelta):
                text += item.delta
                assert item.offset == len(text)
            elif isinstance(item, StreamReset):
                text = item.text
                assert item.offset == len(text)
        done = items[-1]
        assert isinstance(done, StreamDone)
        assert (text, done.status, done.length) == ("Hi there", "complete", 8)
        assert any(isinstance(item, StreamReset) for item in items)
        again = [item async for item in client.follow(session.id, answer.id, offset=done.length)]
        assert again == [StreamDone(status="complete", error_message=None, length=8)]
