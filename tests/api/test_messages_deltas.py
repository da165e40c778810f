"""Streaming into a message with POST .../append: offsets in code points, retries, conflicts,
the size limit over all deltas, and the minimal answer."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from chat_store.api.deps import AppState
from chat_store.client import AsyncChatStoreClient
from chat_store.client.models import StreamDelta, StreamDone
from chat_store.crud import messages as message_crud
from chat_store.schemas.messages import MessageAppend
from chat_store.services import messages as message_service
from chat_store.services.context import RequestContext
from chat_store.services.principals import Principal
from tests.assertions import assert_problem, assert_validation_error
from tests.conftest import SMALL_MESSAGE_BYTES
from tests.factories import API, Account, Factory
from tests.support.locks import until_waiting_for_a_lock

LIMIT = SMALL_MESSAGE_BYTES  # of the `small` app


class Stream:
    """One open assistant message and the requests that write into it."""

    def __init__(self, client: httpx.AsyncClient, account: Account, message: dict[str, Any]):
        self.client = client
        self.account = account
        self.message = message
        self.url = f"{API}/sessions/{message['session_id']}/messages/{message['id']}"

    async def append(
        self, delta: str, offset: int, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return await self.client.post(
            f"{self.url}/append",
            json={"delta": delta, "offset": offset},
            headers={**self.account.headers, **(headers or {})},
        )

    async def read(self) -> Any:
        response = await self.client.get(self.url, headers=self.account.headers)
        assert response.status_code == 200, response.text
        return response.json()


async def _open_stream(client: httpx.AsyncClient, factory: Factory, **body: Any) -> Stream:
    account = await factory.account()
    session = await factory.chat_session(account)
    await factory.message(account, session["id"], content="Tell me something.")
    message = await factory.message(
        account, session["id"], role="assistant", status="pending", **body
    )
    return Stream(client, account, message)


async def test_offsets_count_code_points(client: httpx.AsyncClient, factory: Factory) -> None:
    stream = await _open_stream(client, factory)
    deltas = ["Héllo ", "wörld ", "😀", "👍🏽 ", "naïve café ", "𝄞 clef", "!"]
    text = ""
    for delta in deltas:
        response = await stream.append(delta, len(text))
        assert response.status_code == 200, response.text
        text += delta
        answer = response.json()
        assert answer["length"] == len(text)  # code points: not bytes, not UTF-16 units
        assert answer["partial_content"] == text
        assert answer["status"] == "in_progress"
        assert answer["content"] is None
    assert len(text) < len(text.encode("utf-16-le")) // 2 < len(text.encode())
    stored = await stream.read()
    assert stored["partial_content"] == text
    assert stored["status"] == "in_progress"

    # A UTF-16 or byte offset is refused with the real length.
    refused = await stream.append("x", len(text.encode("utf-16-le")) // 2)
    assert assert_problem(refused, 409, "offset_mismatch")["length"] == len(text)
    refused = await stream.append("x", len(text.encode()))
    assert assert_problem(refused, 409, "offset_mismatch")["length"] == len(text)


async def test_first_delta_moves_pending_to_in_progress(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    stream = await _open_stream(client, factory)
    assert stream.message["status"] == "pending"
    response = await stream.append("Hi", 0)
    assert response.status_code == 200
    assert response.json()["status"] == "in_progress"
    stored = await stream.read()
    assert (stored["status"], stored["partial_content"]) == ("in_progress", "Hi")
    assert stored["updated_at"] > stream.message["updated_at"]


async def test_deltas_follow_text_given_at_create(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    stream = await _open_stream(client, factory, partial_content="Début: ")
    assert assert_problem(await stream.append("x", 0), 409, "offset_mismatch")["length"] == 7
    response = await stream.append("ça marche", 7)
    assert response.status_code == 200, response.text
    assert response.json()["length"] == 16
    assert (await stream.read())["partial_content"] == "Début: ça marche"


async def test_exact_retry_is_200_and_changes_nothing(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    stream = await _open_stream(client, factory)
    for offset, delta in ((0, "Ünïcode "), (8, "😀 "), (10, "done")):
        assert (await stream.append(delta, offset)).status_code == 200
    before = await stream.read()
    assert before["partial_content"] == "Ünïcode 😀 done"

    retry = await stream.append("done", 10)
    assert retry.status_code == 200, retry.text
    assert retry.json()["length"] == 14
    assert retry.json()["partial_content"] == before["partial_content"]
    # An earlier delta again, with more stored after it, is not a retry: a writer that went on
    # from the length it would be told would skip ahead of text it never sent.
    for offset, delta in ((0, "Ünïcode "), (8, "😀 ")):
        refused = await stream.append(delta, offset)
        assert assert_problem(refused, 409, "offset_mismatch")["length"] == 14
    assert await stream.read() == before
    assert (await stream.append("!", 14)).json()["length"] == 15


async def test_a_second_writer_sending_what_the_first_stored_is_told_the_length(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    """Two writers of one message: the second resumed at offset 6, the first has gone on.
    The second's delta matches what is stored there, but the text goes on after it: 409 with
    the length, not a 200 that would send it on after the first one's text."""
    stream = await _open_stream(client, factory)
    assert (await stream.append("Hello world", 0)).status_code == 200
    refused = await stream.append("w", 6)
    assert assert_problem(refused, 409, "offset_mismatch")["length"] == 11
    assert (await stream.read())["partial_content"] == "Hello world"


async def test_conflicting_offsets_are_409_with_the_length(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    stream = await _open_stream(client, factory)
    assert (await stream.append("Hello wörld", 0)).status_code == 200
    before = await stream.read()

    for delta, offset in (
        ("Jello", 0),  # other text at a stored offset
        ("wörld!", 6),  # overlaps the end
        ("x", 5),
        ("x", 12),  # beyond the end
        ("x", 1000),
    ):
        response = await stream.append(delta, offset)
        body = assert_problem(response, 409, "offset_mismatch")
        assert body["length"] == 11
    assert await stream.read() == before


@pytest.mark.parametrize(
    "body",
    [
        {"delta": "x", "offset": -1},
        {"delta": "", "offset": 0},
        {"delta": "x"},
        {"offset": 0},
        {"delta": "nul\x00", "offset": 0},
        {"delta": "x", "offset": "zero"},
        {"delta": "x", "offset": 0, "extra": True},
    ],
)
async def test_invalid_delta_is_422(
    client: httpx.AsyncClient, factory: Factory, body: dict[str, Any]
) -> None:
    stream = await _open_stream(client, factory)
    response = await client.post(f"{stream.url}/append", json=body, headers=stream.account.headers)
    assert_validation_error(response, "body")
    assert await stream.read() == stream.message


@pytest.mark.parametrize("status", ["complete", "cancelled", "failed"])
async def test_delta_on_a_finished_message_is_409(
    client: httpx.AsyncClient, factory: Factory, status: str
) -> None:
    stream = await _open_stream(client, factory)
    assert (await stream.append("Some text", 0)).status_code == 200
    finished = await client.patch(
        stream.url, json={"status": status}, headers=stream.account.headers
    )
    assert finished.status_code == 200, finished.text
    before = await stream.read()
    assert_problem(await stream.append(" more", 9), 409, "invalid_transition")
    assert await stream.read() == before


async def test_deltas_over_the_size_limit_are_413(
    small: httpx.AsyncClient, factory: Factory
) -> None:
    stream = await _open_stream(small, factory)
    assert (await stream.append("é" * 400, 0)).status_code == 200  # 800 bytes
    assert (await stream.append("€" * 66, 400)).status_code == 200  # 998 bytes
    before = await stream.read()

    for delta in ("€", "aaa", "😀"):
        assert_problem(await stream.append(delta, 466), 413, "payload_too_large")
    assert await stream.read() == before

    last = await stream.append("ab", 466)  # exactly the limit
    assert last.status_code == 200, last.text
    assert len(last.json()["partial_content"].encode()) == LIMIT
    assert_problem(await stream.append("a", 468), 413, "payload_too_large")
    done = await small.patch(
        stream.url, json={"status": "complete"}, headers=stream.account.headers
    )
    assert done.json()["content"] == "é" * 400 + "€" * 66 + "ab"


async def test_a_thousand_deltas_read_back_whole(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    stream = await _open_stream(client, factory)
    deltas = [f"{i}{'é😀'[i % 2]} " for i in range(1000)]
    offset = 0
    for delta in deltas:
        response = await stream.append(delta, offset, {"Prefer": "return=minimal"})
        assert response.status_code == 200, response.text
        offset = response.json()["length"]
    text = "".join(deltas)
    assert offset == len(text)
    assert (await stream.read())["partial_content"] == text
    listed = await client.get(
        f"{API}/sessions/{stream.message['session_id']}/messages", headers=stream.account.headers
    )
    assert listed.json()["data"][-1]["partial_content"] == text

    done = await client.patch(
        stream.url, json={"status": "complete"}, headers=stream.account.headers
    )
    assert done.json()["content"] == text
    assert (await stream.read())["content"] == text


async def test_prefer_return_minimal(client: httpx.AsyncClient, factory: Factory) -> None:
    stream = await _open_stream(client, factory)
    full = await stream.append("Hé", 0)
    assert "Preference-Applied" not in full.headers
    assert full.json()["partial_content"] == "Hé"

    for prefer in ("return=minimal", "respond-async, return=minimal", "return = minimal"):
        before = await stream.read()
        offset = len(before["partial_content"])
        minimal = await stream.append("😀x", offset, {"Prefer": prefer})
        assert minimal.status_code == 200, minimal.text
        assert minimal.headers["Preference-Applied"] == "return=minimal"
        body = minimal.json()
        assert body["partial_content"] is None
        assert body["length"] == offset + 2
        assert body["status"] == "in_progress"
        assert body["id"] == stream.message["id"]
    assert (await stream.read())["partial_content"] == "Hé😀x😀x😀x"


async def test_racing_writers_at_one_offset(client: httpx.AsyncClient, factory: Factory) -> None:
    stream = await _open_stream(client, factory)
    responses = await asyncio.gather(*(stream.append(f"writer {i}", 0) for i in range(6)))
    winners = [r for r in responses if r.status_code == 200]
    assert len(winners) == 1, [r.text for r in responses]
    for response in responses:
        if response.status_code != 200:
            assert assert_problem(response, 409, "offset_mismatch")["length"] == 8
    assert (await stream.read())["partial_content"] == winners[0].json()["partial_content"]


async def test_a_delta_waiting_behind_its_predecessor_lands_after_it(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    """A writer that sends its next delta before the previous one's answer: the next waits for
    the session row, and once the first commits it is checked against the message as it now
    is (not as it was when its statement started waiting)."""
    stream = await _open_stream(client, factory)
    session_id = uuid.UUID(stream.message["session_id"])
    message_id = uuid.UUID(stream.message["id"])
    principal = await _principal(client, stream.account)
    first = message_crud.Delta(
        user_id=principal,
        session_id=session_id,
        message_id=message_id,
        offset=0,
        text="first ",
        size_bytes=6,
        max_bytes=1_000_000,
        now=datetime.now(UTC),
    )
    async with state.sessionmaker() as db:
        # The first delta, applied and not yet committed: its transaction holds the session row
        # (on SQLite, the one connection).
        assert (await message_crud.append_delta(db, first, standalone=False)) is not None
        second = asyncio.create_task(stream.append("second", 6))
        await _until_waiting(state, second)
        assert not second.done()
        await db.commit()
    answer = await second
    assert answer.status_code == 200, answer.text
    assert answer.json()["length"] == 12
    assert (await stream.read())["partial_content"] == "first second"


async def _principal(client: httpx.AsyncClient, account: Account) -> uuid.UUID:
    me = await client.get(f"{API}/users/me", headers=account.headers)
    return uuid.UUID(me.json()["id"])


async def test_a_delta_to_a_message_created_while_it_waited_lands(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    """A client that sends the first delta of a message it creates with its own id before the
    create's answer: the delta waits for the session row, and the message it is for was not
    there when its statement began."""
    account = await factory.account()
    session = await factory.chat_session(account)
    session_id = uuid.UUID(session["id"])
    principal = Principal(user_id=await _principal(client, account), kind="user")
    message_id = uuid.uuid4()
    pending = MessageAppend(id=message_id, role="assistant", status="pending")
    async with state.sessionmaker() as db:
        ctx = RequestContext(db, principal, state)
        await message_service.create_message(ctx, session_id, pending, None)
        delta = asyncio.create_task(
            client.post(
                f"{API}/sessions/{session_id}/messages/{message_id}/append",
                json={"delta": "first", "offset": 0},
                headers=account.headers,
            )
        )
        await _until_waiting(state, delta)
        await db.commit()
    answer = await delta
    assert answer.status_code == 200, answer.text
    assert answer.json()["length"] == 5
    stored = await client.get(
        f"{API}/sessions/{session_id}/messages/{message_id}", headers=account.headers
    )
    assert stored.json()["partial_content"] == "first"


async def _until_waiting(state: AppState, request: asyncio.Task[httpx.Response]) -> None:
    """Until the request's delta statement waits for a row lock."""
    await until_waiting_for_a_lock(state, request, statement_like="WITH bumped AS%")


async def test_text_with_unicode_line_separators_streams_as_one_line_per_event(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory
) -> None:
    """U+2028, U+2029 and U+0085 stay as they are in JSON, and many line readers (Python's
    splitlines, httpx's iter_lines) end a line at them: the stream escapes them, and the
    Python client follows such a text whole."""
    text = "first\u2028second\u2029third\x85fourth"
    stream = await _open_stream(client, factory)
    assert (await stream.append(text, 0)).status_code == 200
    completed = await client.patch(
        stream.url, json={"status": "complete"}, headers=stream.account.headers
    )
    assert completed.status_code == 200

    raw = await client.get(f"{stream.url}/stream", headers=stream.account.headers)
    data = [line for line in raw.text.splitlines() if line.startswith("data:")]
    assert json.loads(data[0].removeprefix("data:"))["delta"] == text
    async with AsyncChatStoreClient(
        "http://test", transport=httpx.ASGITransport(app), access_token=stream.account.access_token
    ) as chat_store:
        items = [
            item
            async for item in chat_store.follow(stream.message["session_id"], stream.message["id"])
        ]
    assert "".join(item.delta for item in items if isinstance(item, StreamDelta)) == text
    assert isinstance(items[-1], StreamDone) and items[-1].status == "complete"


# SQLite reads in one snapshot (and its one writer would wait for the read to end).
@pytest.mark.postgres_only
@pytest.mark.parametrize("move", ["complete", "replace", "replace and write"])
async def test_a_text_moved_between_the_rows_read_and_its_chunks_is_read_again(
    client: httpx.AsyncClient,
    factory: Factory,
    monkeypatch: pytest.MonkeyPatch,
    move: str,
) -> None:
    """A read takes the message's row, then its chunks. On Postgres the two are apart (a GET
    reads in autocommit): an end (the chunks folded into the content, then deleted) or a
    replaced text committed in between left the row counting chunks that are gone, and the
    message was shown open with its text lost; a text replaced and written to again gave the
    old prefix with the new chunks, a text that never was."""
    stream = await _open_stream(client, factory)
    for delta, offset in (("Hello ", 0), ("world", 6)):
        assert (await stream.append(delta, offset)).status_code == 200
    change = {
        "complete": {"status": "complete"},
        "replace": {"partial_content": "Hi"},
        "replace and write": {"partial_content": "W"},
    }[move]
    chunk_parts = message_crud.chunk_parts
    moved: list[httpx.Response] = []
    started = False

    async def moving_first(db: Any, message_ids: Any) -> dict[uuid.UUID, tuple[int, str]]:
        nonlocal started
        if not started and message_ids:  # the GET's read (the PATCH reads chunks too)
            started = True
            moved.append(
                await client.patch(stream.url, json=change, headers=stream.account.headers)
            )
            if move == "replace and write":
                moved.append(await stream.append("XYZ0123456789", 1))
        return await chunk_parts(db, message_ids)

    monkeypatch.setattr(message_crud, "chunk_parts", moving_first)
    read = await stream.read()
    monkeypatch.setattr(message_crud, "chunk_parts", chunk_parts)

    assert {response.status_code for response in moved} == {200}
    if move == "replace and write":
        assert read["partial_content"] in {"Hello world", "WXYZ0123456789"}
    elif move == "complete":
        assert (read["status"], read["content"]) in {
            ("in_progress", None),  # read before the end, whole
            ("complete", "Hello world"),
        }
        assert read["status"] == "complete" or read["partial_content"] == "Hello world"
    else:
        assert read["partial_content"] in {"Hello world", "Hi"}
