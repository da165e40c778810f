"""Followers of an open answer whose writer falls silent are told so (`stale`), once a silence,
and go on following when the writer comes back."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from chat_store.client import (
    AsyncChatStoreClient,
    StreamDelta,
    StreamDone,
    StreamStale,
)
from chat_store.client.models import Message
from tests.backends import Backend
from tests.e2e.conftest import NO_LIMITS, ServerProcess, running_server
from tests.e2e.test_client_flows import new_account

pytestmark = pytest.mark.e2e

# An open message with no change for a second is stale.
STALE_SECONDS = 1
# Long enough for the streams to look again several times within one silence.
SILENCE_SECONDS = 3 * STALE_SECONDS + 0.5
FIRST, SECOND = ["Hé", "llo 🙂 "], ["wörld", "!"]

Event = tuple[str, dict[str, Any]]


@pytest.fixture(scope="module")
async def stale_server(e2e_backend: Backend) -> AsyncIterator[ServerProcess]:
    async with running_server(
        e2e_backend, STALE_STREAM_SECONDS=str(STALE_SECONDS), **NO_LIMITS
    ) as started:
        yield started


async def _read_events(
    http: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    into: list[Event],
    last: Callable[[Event], bool],
) -> None:
    """The stream's events, appended to `into` as they come, until `last` says one is."""
    async with http.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                into.append((event, json.loads(line.removeprefix("data: "))))
                if last(into[-1]):
                    return
    raise AssertionError(f"the stream ended after {into}")


@asynccontextmanager
async def _signed_in(
    server: ServerProcess,
) -> AsyncIterator[tuple[AsyncChatStoreClient, httpx.AsyncClient, dict[str, str]]]:
    """A new account's client, a plain HTTP client for the raw streams, and its headers."""
    client, _ = await new_account(server)
    async with client, httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:
        assert client.access_token is not None
        yield client, http, {"Authorization": f"Bearer {client.access_token}"}


def _followers(
    http: httpx.AsyncClient,
    answer: Message,
    headers: dict[str, str],
    streamed: list[Event],
    fed: list[Event],
) -> list[asyncio.Task[None]]:
    """A reader of the answer's stream (until `done`) and of its session's feed (until the
    answer is complete)."""
    base = f"/api/v1/sessions/{answer.session_id}"
    return [
        asyncio.create_task(
            _read_events(
                http,
                f"{base}/messages/{answer.id}/stream",
                headers,
                streamed,
                lambda event: event[0] == "done",
            )
        ),
        asyncio.create_task(_read_events(http, f"{base}/events", headers, fed, _completed)),
    ]


async def _follow(
    client: AsyncChatStoreClient, answer: Message, into: list[StreamDelta | StreamStale]
) -> StreamDone:
    async for item in client.follow(answer.session_id, answer.id):
        if isinstance(item, StreamDone):
            return item
        into.append(item)
    raise AssertionError(f"the follow ended after {into}")


async def _until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def _stale(events: list[Event]) -> list[dict[str, Any]]:
    return [data for event, data in events if event == "stale"]


def _completed(event: Event) -> bool:
    kind, data = event
    return kind == "message.updated" and data["message"]["status"] == "complete"


async def test_followers_are_told_once_a_silence_and_follow_on(
    stale_server: ServerProcess,
) -> None:
    async with _signed_in(stale_server) as (client, http, headers):
        session = await client.create_session()
        await client.append_message(session.id, "user", "Say hello")
        answer = await client.append_message(session.id, "assistant", status="pending")

        streamed: list[Event] = []  # the message stream's events
        fed: list[Event] = []  # the change feed's
        followed: list[StreamDelta | StreamStale] = []
        readers = _followers(http, answer, headers, streamed, fed)
        following = asyncio.create_task(_follow(client, answer, followed))

        offset = 0
        for text in FIRST:
            offset = (await client.append_delta(session.id, answer.id, text, offset)).length
        first_length = len("".join(FIRST))
        assert offset == first_length

        # The writer falls silent: each follower is told once, however long the silence lasts.
        await _until(
            lambda: (
                bool(_stale(streamed) and _stale(fed))
                and any(isinstance(item, StreamStale) for item in followed)
            )
        )
        await asyncio.sleep(SILENCE_SECONDS)
        told = (await client.get_message(session.id, answer.id)).updated_at
        for stale in (_stale(streamed), _stale(fed)):
            assert stale == [
                {
                    "message_id": str(answer.id),
                    "seq": answer.seq,
                    "status": "in_progress",
                    "length": first_length,
                    "since": stale[0]["since"],
                }
            ]
            assert datetime.fromisoformat(stale[0]["since"]) == told

        # The writer comes back: the followers get the rest, then the end, each part once.
        for text in SECOND:
            offset = (await client.append_delta(session.id, answer.id, text, offset)).length
        await client.complete_message(session.id, answer.id)
        done = await asyncio.wait_for(following, 30)
        await asyncio.wait_for(asyncio.gather(*readers), 30)
    full = "".join(FIRST + SECOND)

    # The message stream: the first deltas, one stale, the rest, done.
    kinds = [event for event, _ in streamed]
    assert kinds.count("stale") == 1 and kinds[-1] == "done"
    stale_at = kinds.index("stale")
    before = "".join(data["delta"] for event, data in streamed[:stale_at] if event == "delta")
    after = "".join(data["delta"] for event, data in streamed[stale_at:] if event == "delta")
    assert (before, after) == ("".join(FIRST), "".join(SECOND))
    assert streamed[-1][1] == {"status": "complete", "error_message": None, "length": len(full)}

    # The change feed: the answer's text so far and its deltas, one stale, then the rest.
    kinds = [event for event, _ in fed]
    assert kinds.count("stale") == 1
    stale_at = kinds.index("stale")
    created = [data["message"] for event, data in fed if event == "message.created"]
    assert [message["role"] for message in created] == ["user", "assistant"]
    text_before = created[1]["partial_content"] + "".join(
        data["delta"] for event, data in fed[:stale_at] if event == "message.delta"
    )
    text_after = "".join(
        data["delta"] for event, data in fed[stale_at:] if event == "message.delta"
    )
    assert (text_before, text_after) == ("".join(FIRST), "".join(SECOND))
    assert fed[-1][1]["message"]["content"] == full
    assert fed[-1][1]["message"]["stale"] is False

    # The Python client: deltas, a StreamStale, the rest of the deltas, StreamDone.
    stale_items = [item for item in followed if isinstance(item, StreamStale)]
    assert len(stale_items) == 1
    stale_item = stale_items[0]
    assert (stale_item.message_id, stale_item.seq, stale_item.status, stale_item.length) == (
        answer.id,
        answer.seq,
        "in_progress",
        first_length,
    )
    assert stale_item.since == told
    at = followed.index(stale_item)
    deltas_before = [item.delta for item in followed[:at] if isinstance(item, StreamDelta)]
    deltas_after = [item.delta for item in followed[at:] if isinstance(item, StreamDelta)]
    assert ("".join(deltas_before), "".join(deltas_after)) == ("".join(FIRST), "".join(SECOND))
    assert (done.status, done.length) == ("complete", len(full))


async def test_a_new_silence_is_told_again_and_a_late_follower_hears_of_it_at_once(
    stale_server: ServerProcess,
) -> None:
    async with _signed_in(stale_server) as (client, http, headers):
        session = await client.create_session()
        answer = await client.append_message(session.id, "assistant", status="pending")
        offset = (await client.append_delta(session.id, answer.id, "".join(FIRST), 0)).length
        # Already silent when it is followed: told right after the text stored so far.
        await asyncio.sleep(STALE_SECONDS + 0.5)
        streamed: list[Event] = []  # the message stream's events
        fed: list[Event] = []  # the change feed's
        readers = _followers(http, answer, headers, streamed, fed)
        await _until(lambda: bool(_stale(streamed) and _stale(fed)))
        assert [event for event, _ in streamed] == ["delta", "stale"]
        assert [event for event, _ in fed] == ["message.created", "stale"]

        # The writer moves, then falls silent again: a second silence, told once more.
        offset = (await client.append_delta(session.id, answer.id, "".join(SECOND), offset)).length
        await _until(lambda: len(_stale(streamed)) == 2 and len(_stale(fed)) == 2)
        await client.complete_message(session.id, answer.id)
        await asyncio.wait_for(asyncio.gather(*readers), 30)
    for stale in (_stale(streamed), _stale(fed)):
        assert [data["length"] for data in stale] == [len("".join(FIRST)), offset]
        first_since, second_since = (datetime.fromisoformat(data["since"]) for data in stale)
        assert first_since < second_since


async def test_the_terminal_follow_says_so_in_one_line_and_follows_on(
    stale_server: ServerProcess, tmp_path: Path
) -> None:
    client, _ = await new_account(stale_server)
    async with client:
        key = await client.create_api_key("terminal")
        session = await client.create_session()
        answer = await client.append_message(session.id, "assistant", status="pending")
        offset = (await client.append_delta(session.id, answer.id, "".join(FIRST), 0)).length
        env = {
            **os.environ,
            "CHAT_STORE_CONFIG_DIR": str(tmp_path / "config"),
            "CHAT_STORE_URL": stale_server.base_url,
            "CHAT_STORE_API_KEY": key.key,
            "NO_COLOR": "1",
        }
        stderr_path = tmp_path / "stderr"
        with stderr_path.open("w") as stderr:
            follower = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("chat-store")),
                    "follow",
                    str(session.id),
                    str(answer.id),
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        try:
            await _until(lambda: "still following" in stderr_path.read_text())
            for text in SECOND:
                offset = (await client.append_delta(session.id, answer.id, text, offset)).length
            await client.complete_message(session.id, answer.id)
            out, _ = await asyncio.to_thread(follower.communicate, timeout=60)
        finally:
            if follower.poll() is None:
                follower.kill()
                follower.wait()
    assert follower.returncode == 0
    assert out == "".join(FIRST + SECOND) + "\n"  # the text as stored, once
    notices = [line for line in stderr_path.read_text().splitlines() if line.strip()]
    assert len(notices) == 1
    assert f"({len(''.join(FIRST))} characters, in_progress)" in notices[0]
