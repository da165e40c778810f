"""The session change feed (`/events`) on a real server: every change once, resumable."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.backends import Backend
from tests.e2e.conftest import NO_LIMITS, ServerProcess, running_server
from tests.e2e.test_client_flows import new_account

pytestmark = pytest.mark.e2e


async def _events(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], count: int
) -> list[tuple[str, int, dict[str, Any]]]:
    """The first `count` events of the feed: (event, id, data). The feed's heartbeats keep it
    open, so fewer events than expected fail after a bound instead of waiting forever."""
    found: list[tuple[str, int, dict[str, Any]]] = []
    try:
        async with asyncio.timeout(15), http.stream("GET", url, headers=headers) as response:
            assert response.status_code == 200
            event, event_id = "", 0
            lines: AsyncIterator[str] = response.aiter_lines()
            async for line in lines:
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("id: "):
                    event_id = int(line.removeprefix("id: "))
                elif line.startswith("data: "):
                    found.append((event, event_id, json.loads(line.removeprefix("data: "))))
                    if len(found) == count:
                        return found
    except TimeoutError:
        raise AssertionError(f"{count} events expected, 15 s gave {found}") from None
    raise AssertionError(f"the feed ended after {found}")


async def test_every_change_once_live_and_on_replay(
    stream_server: ServerProcess,
) -> None:
    client, _ = await new_account(stream_server)
    async with client, httpx.AsyncClient(base_url=stream_server.base_url, timeout=20) as http:
        session = await client.create_session()
        assert client.access_token is not None
        headers = {"Authorization": f"Bearer {client.access_token}"}
        url = f"/api/v1/sessions/{session.id}/events"

        live = asyncio.create_task(_events(http, url, headers, 5))
        await asyncio.sleep(0.5)  # the reader is subscribed before the first change
        batch = await client.append_messages(
            session.id,
            [{"role": "user", "content": f"m{i}"} for i in range(3)],
        )
        await client.delete_message(session.id, batch.data[1].id)
        await client.rename_session(session.id, "renamed")
        seen = await asyncio.wait_for(live, 20)

        assert [(event, event_id) for event, event_id, _ in seen] == [
            ("message.created", 1),
            ("message.created", 2),
            ("message.created", 3),
            ("message.deleted", 4),
            ("session.updated", 5),
        ]
        assert [data["message"]["seq"] for _, _, data in seen[:3]] == [1, 2, 3]
        assert seen[3][2]["message_id"] == str(batch.data[1].id)

        # A reader that saw up to id 2 reconnects: the rest is replayed, nothing twice.
        replay = await _events(http, url, {**headers, "Last-Event-ID": "2"}, 3)
        assert [(event, event_id) for event, event_id, _ in replay] == [
            ("message.created", 3),
            ("message.deleted", 4),
            ("session.updated", 5),
        ]
        assert replay[0][2]["message"]["content"] == "m2"
        assert replay[2][2]["session"]["title"] == "renamed"


async def test_streams_end_when_their_key_is_revoked(stream_server: ServerProcess) -> None:
    client, _ = await new_account(stream_server)
    async with client, httpx.AsyncClient(base_url=stream_server.base_url, timeout=20) as http:
        session = await client.create_session()
        answer = await client.append_message(session.id, "assistant", status="pending")
        key = await client.create_api_key("reader")
        headers = {"X-API-Key": key.key}
        base = f"/api/v1/sessions/{session.id}"

        async def last_event(url: str) -> tuple[str, dict[str, Any]]:
            event, data = "", {}
            async with http.stream("GET", url, headers=headers) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    if line.startswith("event: "):
                        event = line.removeprefix("event: ")
                    elif line.startswith("data: "):
                        data = json.loads(line.removeprefix("data: "))
            return event, data

        followers = [
            asyncio.create_task(last_event(f"{base}/messages/{answer.id}/stream")),
            asyncio.create_task(last_event(f"{base}/events")),
        ]
        await asyncio.sleep(0.5)
        await client.revoke_api_key(key.id)
        # The server re-checks the key at its next re-read (STREAM_POLL_SECONDS=1 here) once
        # STREAM_CREDENTIAL_CHECK_SECONDS (5 s) have passed since the last check.
        ended = await asyncio.wait_for(asyncio.gather(*followers), 15)
        assert ended == [("close", {"reason": "unauthorized"})] * 2
        refused = await http.get(f"{base}/messages/{answer.id}/stream", headers=headers)
        assert refused.status_code == 401


async def test_a_guest_client_and_its_claim(e2e_backend: Backend) -> None:
    async with running_server(e2e_backend, ALLOW_GUESTS="true", **NO_LIMITS) as server:
        client_id = str(uuid.uuid4())
        async with server.client(client_id=client_id) as guest:
            session = await guest.create_session(title="before signing up")
            await guest.append_message(session.id, "user", "hello")
        user, _ = await new_account(server)
        async with user:
            claimed = await user.claim_guest(client_id)
            assert claimed.sessions_moved == 1
            assert [s.id async for s in user.iter_sessions()] == [session.id]


async def test_a_reader_of_a_deleted_session_whose_id_is_used_again_gets_the_new_one(
    stream_server: ServerProcess,
) -> None:
    """Its Last-Event-ID is past the new session's version: the new one is replayed from its
    start, not skipped up to that position."""
    client, _ = await new_account(stream_server)
    async with client, httpx.AsyncClient(base_url=stream_server.base_url, timeout=20) as http:
        session_id = uuid.uuid4()
        await client.create_session(id=session_id)
        await client.append_messages(
            session_id, [{"role": "user", "content": f"old {i}"} for i in range(5)]
        )
        await client.delete_session(session_id)
        await client.create_session(id=session_id)
        await client.append_messages(
            session_id, [{"role": "user", "content": f"new {i}"} for i in range(3)]
        )
        assert client.access_token is not None
        headers = {"Authorization": f"Bearer {client.access_token}", "Last-Event-ID": "5"}

        replay = await _events(http, f"/api/v1/sessions/{session_id}/events", headers, 3)

        assert [(event, event_id) for event, event_id, _ in replay] == [
            ("message.created", 1),
            ("message.created", 2),
            ("message.created", 3),
        ]
        assert [data["message"]["content"] for _, _, data in replay] == ["new 0", "new 1", "new 2"]
