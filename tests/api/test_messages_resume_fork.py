"""Resume (where an unfinished answer continues) and fork (a new session from a prefix)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from chat_store.crud import messages as message_crud
from chat_store.services import streams as stream_service
from tests.assertions import assert_problem, assert_validation_error
from tests.conftest import AppWith
from tests.factories import API, Account, Factory
from tests.support.chat import events_of


async def _resume(
    client: httpx.AsyncClient, account: Account, session_id: str, **params: Any
) -> httpx.Response:
    return await client.post(
        f"{API}/sessions/{session_id}/resume", params=params, headers=account.headers
    )


async def _all_messages(client: httpx.AsyncClient, account: Account, session_id: str) -> Any:
    response = await client.get(
        f"{API}/sessions/{session_id}/messages?limit=100", headers=account.headers
    )
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def _stream(
    client: httpx.AsyncClient, account: Account, message: dict[str, Any], *deltas: str
) -> Any:
    url = f"{API}/sessions/{message['session_id']}/messages/{message['id']}"
    offset = len(message["partial_content"] or "")
    answer = None
    for delta in deltas:
        response = await client.post(
            f"{url}/append", json={"delta": delta, "offset": offset}, headers=account.headers
        )
        assert response.status_code == 200, response.text
        answer = {k: v for k, v in response.json().items() if k != "length"}
        offset = response.json()["length"]
    return answer


async def _set_status(
    client: httpx.AsyncClient, account: Account, message: dict[str, Any], **body: Any
) -> Any:
    response = await client.patch(
        f"{API}/sessions/{message['session_id']}/messages/{message['id']}",
        json=body,
        headers=account.headers,
    )
    assert response.status_code == 200, response.text
    return response.json()


# --- resume


async def test_nothing_to_resume(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    assert_problem(await _resume(client, account, session["id"]), 404, "nothing_to_resume")

    await factory.message(account, session["id"], content="question")
    await factory.message(account, session["id"], role="assistant", content="answer")
    # Open messages of other roles and finished assistant messages are not resumable.
    await factory.message(account, session["id"], role="user", status="pending")
    call = {"id": "call_1", "name": "grep", "arguments": "{}"}
    await factory.message(account, session["id"], role="assistant", content="", tool_calls=[call])
    await factory.message(
        account, session["id"], role="tool", status="in_progress", tool_call_id="call_1"
    )
    await factory.message(account, session["id"], role="assistant", status="cancelled")
    streamed = await factory.message(account, session["id"], role="assistant", status="pending")
    await _stream(client, account, streamed, "done")
    await _set_status(client, account, streamed, status="complete")
    assert_problem(await _resume(client, account, session["id"]), 404, "nothing_to_resume")


async def test_resume_an_interrupted_answer(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    before = [
        await factory.message(account, session["id"], role="system", content="Be brief."),
        await factory.message(account, session["id"], content="Say hi in French"),
    ]
    answer = await factory.message(account, session["id"], role="assistant", status="pending")
    answer = await _stream(client, account, answer, "Bonjour ", "à toi 😀")

    response = await _resume(client, account, session["id"])
    assert response.status_code == 200, response.text
    point = response.json()
    assert point["message"] == answer
    assert point["message"]["partial_content"] == "Bonjour à toi 😀"
    assert point["offset"] == len("Bonjour à toi 😀") == 15  # code points
    assert point["history"] == before

    # The offset is where the next delta goes.
    continued = await client.post(
        f"{API}/sessions/{session['id']}/messages/{answer['id']}/append",
        json={"delta": "!", "offset": point["offset"]},
        headers=account.headers,
    )
    assert continued.status_code == 200
    assert continued.json()["partial_content"] == "Bonjour à toi 😀!"


async def test_resume_picks_the_newest_unfinished_assistant_message(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    first = await factory.message(account, session["id"], content="q1")
    old_failed = await factory.message(account, session["id"], role="assistant", status="pending")
    await _stream(client, account, old_failed, "partial one")
    old_failed = await _set_status(
        client, account, old_failed, status="failed", error_message="timeout"
    )
    second = await factory.message(account, session["id"], content="q2")
    failed = await factory.message(account, session["id"], role="assistant", status="pending")
    await _stream(client, account, failed, "parti", "al twö")
    failed = await _set_status(client, account, failed, status="failed", error_message="boom")
    after = await factory.message(account, session["id"], role="assistant", content="later, done")

    point = (await _resume(client, account, session["id"])).json()
    assert point["message"] == failed
    assert point["message"]["status"] == "failed"
    assert point["message"]["partial_content"] == "partial twö"
    assert point["offset"] == 11
    assert point["history"] == [first, old_failed, second]
    assert after["id"] not in {m["id"] for m in point["history"]}

    # Resumed and finished: the older failed one is next.
    await _set_status(client, account, failed, status="in_progress")
    await _set_status(client, account, failed, status="complete")
    point = (await _resume(client, account, session["id"])).json()
    assert point["message"] == old_failed
    assert point["offset"] == len("partial one")
    assert point["history"] == [first]


async def test_resume_history_limit(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    earlier = await factory.messages(account, session["id"], 60)
    open_answer = await factory.message(account, session["id"], role="assistant", status="pending")

    point = (await _resume(client, account, session["id"])).json()
    assert point["message"] == open_answer
    assert point["offset"] == 0
    assert point["history"] == earlier[-50:]  # default 50: the newest, oldest first

    point = (await _resume(client, account, session["id"], history_limit=3)).json()
    assert point["history"] == earlier[-3:]
    point = (await _resume(client, account, session["id"], history_limit=0)).json()
    assert point["history"] == []
    point = (await _resume(client, account, session["id"], history_limit=1000)).json()
    assert point["history"] == earlier

    for bad in (-1, 1001, "all"):
        response = await _resume(client, account, session["id"], history_limit=bad)
        assert_validation_error(response, "query", "history_limit")


async def test_resume_changes_nothing(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    await factory.message(account, session["id"])
    await factory.message(account, session["id"], role="assistant", status="pending")
    before = await _all_messages(client, account, session["id"])
    assert (await _resume(client, account, session["id"])).status_code == 200
    assert await _all_messages(client, account, session["id"]) == before


# --- fork


async def test_fork_copies_the_prefix(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    source = await factory.chat_session(
        account,
        title="Billing",
        workspace={"repo": "github.com/acme/api", "branch": "main"},
        system_prompt="You review Python.",
    )
    messages = [
        await factory.message(account, source["id"], role="system", content="rules", token_count=2),
        await factory.message(
            account,
            source["id"],
            content="question",
            token_count=5,
            metadata={"k": "v"},
            context={"documents": [{"id": "d1"}]},
        ),
        await factory.message(account, source["id"], role="assistant", content="answer"),
        await factory.message(account, source["id"], content="not copied", token_count=100),
    ]
    # A gap: seqs in the copy are 1..n whatever was deleted before.
    deleted = await client.delete(
        f"{API}/sessions/{source['id']}/messages/{messages[0]['id']}", headers=account.headers
    )
    assert deleted.status_code == 200
    messages = messages[1:]
    source_before = (
        await client.get(f"{API}/sessions/{source['id']}", headers=account.headers)
    ).json()
    source_messages = await _all_messages(client, account, source["id"])

    response = await client.post(
        f"{API}/sessions/{source['id']}/fork",
        json={"message_id": messages[1]["id"]},
        headers=account.headers,
    )
    assert response.status_code == 201, response.text
    fork = response.json()
    assert fork["object"] == "session"
    assert fork["id"] != source["id"]
    assert fork["title"] == "Billing"
    assert fork["workspace"] == source["workspace"]
    assert fork["system_prompt"] == "You review Python."  # the fork's turns are prompted alike
    assert fork["message_count"] == 2
    assert fork["total_tokens"] == 5
    assert fork["last_message_at"] is not None
    assert (
        await client.get(f"{API}/sessions/{fork['id']}", headers=account.headers)
    ).json() == fork

    copies = await _all_messages(client, account, fork["id"])
    assert [m["seq"] for m in copies] == [1, 2]
    for copy, original in zip(copies, messages[:2], strict=True):
        assert copy["id"] != original["id"]
        assert copy["session_id"] == fork["id"]
        for field in (
            "role",
            "content",
            "status",
            "metadata",
            "context",
            "token_count",
            "model",
            "created_at",
            "completed_at",
        ):
            assert copy[field] == original[field], field

    # The source is untouched.
    source_after = (
        await client.get(f"{API}/sessions/{source['id']}", headers=account.headers)
    ).json()
    assert source_after == source_before
    assert await _all_messages(client, account, source["id"]) == source_messages

    # The copy is a session of its own.
    appended = await factory.message(account, fork["id"], content="only in the fork")
    assert appended["seq"] == 3
    assert await _all_messages(client, account, source["id"]) == source_messages
    listed = await client.get(f"{API}/sessions", headers=account.headers)
    assert [s["id"] for s in listed.json()["data"]] == [fork["id"], source["id"]]


async def test_fork_of_a_streaming_answer(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    source = await factory.chat_session(account)
    await factory.message(account, source["id"], content="q")
    answer = await factory.message(
        account, source["id"], role="assistant", status="pending", partial_content="Dé"
    )
    answer = await _stream(client, account, answer, "jà ", "vu 😀")

    response = await client.post(
        f"{API}/sessions/{source['id']}/fork",
        json={"message_id": answer["id"]},
        headers=account.headers,
    )
    assert response.status_code == 201, response.text
    copies = await _all_messages(client, account, response.json()["id"])
    copy = copies[-1]
    assert (copy["status"], copy["partial_content"]) == ("in_progress", "Déjà vu 😀")

    # Both go on independently from the same offset.
    length = len("Déjà vu 😀")
    await _stream(client, account, copy, " (fork)")
    await _stream(client, account, answer, " (source)")
    copy_url = f"{API}/sessions/{copy['session_id']}/messages/{copy['id']}"
    answer_url = f"{API}/sessions/{source['id']}/messages/{answer['id']}"
    copy_text = (await client.get(copy_url, headers=account.headers)).json()["partial_content"]
    source_text = (await client.get(answer_url, headers=account.headers)).json()["partial_content"]
    assert copy_text == "Déjà vu 😀 (fork)"
    assert source_text == "Déjà vu 😀 (source)"
    assert len(copy_text) == length + 7
    done = await _set_status(client, account, copy, status="complete")
    assert done["content"] == "Déjà vu 😀 (fork)"


async def test_fork_while_the_answer_completes_copies_its_text(
    client: httpx.AsyncClient, factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer is completed as the fork copies it (its chunks folded into `content` and
    deleted): the fork reads the rows and the chunks in one state, before or after."""
    account = await factory.account()
    source = await factory.chat_session(account)
    await factory.message(account, source["id"], content="q")
    answer = await factory.message(account, source["id"], role="assistant", status="pending")
    answer = await _stream(client, account, answer, "the whole answer")
    read_chunks = message_crud.chunk_texts
    completing: list[asyncio.Task[Any]] = []

    async def complete_in_between(db: Any, message_ids: Any) -> Any:
        if message_ids and not completing:
            # The writer completes the answer between the fork's read of the rows and of
            # the chunks; given the time, unless it waits for the fork.
            completing.append(
                asyncio.create_task(_set_status(client, account, answer, status="complete"))
            )
            await asyncio.wait(completing, timeout=1.0)
        return await read_chunks(db, message_ids)

    monkeypatch.setattr(message_crud, "chunk_texts", complete_in_between)
    response = await client.post(
        f"{API}/sessions/{source['id']}/fork",
        json={"message_id": answer["id"]},
        headers=account.headers,
    )
    monkeypatch.setattr(message_crud, "chunk_texts", read_chunks)

    assert response.status_code == 201, response.text
    assert (await completing[0])["content"] == "the whole answer"
    copy = (await _all_messages(client, account, response.json()["id"]))[-1]
    assert (copy["status"], copy["partial_content"]) == ("in_progress", "the whole answer")


async def test_fork_at_the_first_and_last_message(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    source = await factory.chat_session(account)
    messages = await factory.messages(account, source["id"], 120, token_count=1)
    for message, count in ((messages[0], 1), (messages[-1], 120)):
        response = await client.post(
            f"{API}/sessions/{source['id']}/fork",
            json={"message_id": message["id"]},
            headers=account.headers,
        )
        assert response.status_code == 201, response.text
        fork = response.json()
        assert (fork["message_count"], fork["total_tokens"]) == (count, count)
        copies = await _all_messages(client, account, fork["id"])
        if count > 100:
            rest = await client.get(
                f"{API}/sessions/{fork['id']}/messages?after_seq=100", headers=account.headers
            )
            copies += rest.json()["data"]
        assert [m["seq"] for m in copies] == list(range(1, count + 1))
        assert [m["content"] for m in copies] == [m["content"] for m in messages[:count]]


async def test_fork_refuses_a_message_of_another_session(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    source = await factory.chat_session(account)
    other = await factory.chat_session(account)
    await factory.message(account, source["id"])
    foreign = await factory.message(account, other["id"])
    response = await client.post(
        f"{API}/sessions/{source['id']}/fork",
        json={"message_id": foreign["id"]},
        headers=account.headers,
    )
    assert_problem(response, 404, "message_not_found")
    listed = await client.get(f"{API}/sessions", headers=account.headers)
    assert len(listed.json()["data"]) == 2
    missing_body = await client.post(
        f"{API}/sessions/{source['id']}/fork", json={}, headers=account.headers
    )
    assert_validation_error(missing_body, "body", "message_id")


async def test_a_forks_change_feed_gives_each_copy_an_id_to_resume_after(
    app_with: AppWith,
) -> None:
    """Every copy had version 1, so each replayed `message.created` had id 1: a reader that
    reconnected with `Last-Event-ID: 1` lost every copy but the first."""
    async with app_with(stream_poll_seconds=0.2) as custom:
        client, factory = custom.client, custom.factory
        account = await factory.account()
        source = await factory.chat_session(account)
        messages = await factory.messages(account, source["id"], 3)
        forked = await client.post(
            f"{API}/sessions/{source['id']}/fork",
            json={"message_id": messages[-1]["id"]},
            headers=account.headers,
        )
        assert forked.status_code == 201, forked.text
        feed = f"{API}/sessions/{forked.json()['id']}/events"

        async def read(headers: dict[str, str]) -> list[Any]:
            reader = asyncio.create_task(client.get(feed, headers=headers))
            await asyncio.sleep(0.5)
            return [e for e in events_of((await reader).text) if e.event == "message.created"]

        whole = asyncio.create_task(read(account.headers))
        after_first = asyncio.create_task(read({**account.headers, "Last-Event-ID": "1"}))
        await asyncio.sleep(0.3)
        # Deleting the session ends both feeds.
        deleted = await client.delete(
            f"{API}/sessions/{forked.json()['id']}", headers=account.headers
        )
        assert deleted.status_code == 200

        replayed = await asyncio.wait_for(whole, 10)
        assert [(e.id, e.data["message"]["seq"]) for e in replayed] == [
            ("1", 1),
            ("2", 2),
            ("3", 3),
        ]
        resumed = await asyncio.wait_for(after_first, 10)
        assert [e.data["message"]["seq"] for e in resumed] == [2, 3]


async def test_a_long_replay_is_read_and_sent_in_parts(
    app_with: AppWith, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A feed opened from 0 on a long session built its whole replay in memory before its first
    event. It is read and sent in parts of about `_REPLAY_BATCH` changes, and the reader gets
    the same events: each change once, in version order, messages it has not seen as
    `message.created` whichever part they come in."""
    monkeypatch.setattr(stream_service, "_REPLAY_BATCH", 4)
    parts: list[int] = []
    changes = stream_service._changes

    async def counted(*args: Any) -> Any:
        found = await changes(*args)
        parts.append(len(found[0]))
        return found

    monkeypatch.setattr(stream_service, "_changes", counted)
    async with app_with(stream_poll_seconds=0.2) as custom:
        client, factory = custom.client, custom.factory
        account = await factory.account()
        session = await factory.chat_session(account)
        messages = await factory.messages(account, session["id"], 11)
        url = f"{API}/sessions/{session['id']}"
        for gone in (messages[2], messages[7]):
            deleted = await client.delete(f"{url}/messages/{gone['id']}", headers=account.headers)
            assert deleted.status_code == 200
        first = await client.patch(
            f"{url}/messages/{messages[0]['id']}",
            json={"metadata": {"k": 1}},
            headers=account.headers,
        )
        renamed = await client.patch(url, json={"title": "renamed"}, headers=account.headers)
        assert (first.status_code, renamed.status_code) == (200, 200)

        reader = asyncio.create_task(client.get(f"{url}/events", headers=account.headers))
        await asyncio.sleep(0.5)
        assert (await client.delete(url, headers=account.headers)).status_code == 200
        body = (await asyncio.wait_for(reader, 10)).text
    # session.deleted (the end) has no id of its own (a parser keeps the last one).
    events = [e for e in events_of(body) if e.event != "session.deleted"]

    ids = [int(e.id) for e in events if e.id is not None]
    assert ids == [2, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15]  # 11 created, 2 deleted, 2 changes
    assert [(e.event, e.data["message"]["seq"]) for e in events if "message" in e.data] == [
        ("message.created", seq) for seq in (2, 4, 5, 6, 7, 9, 10, 11, 1)
    ]
    assert [e.data["seq"] for e in events if e.event == "message.deleted"] == [3, 8]
    assert [e.data["session"]["title"] for e in events if e.event == "session.updated"] == [
        "renamed"
    ]
    assert len(parts) >= 3 and max(parts) <= 5


async def test_a_replay_from_a_cursor_past_the_session_is_created_in_every_part(
    app_with: AppWith, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cursor past the session's version (the session deleted and made again with its id)
    replays it from its start: every message is new to the reader, in every part (the later
    parts called them message.updated)."""
    monkeypatch.setattr(stream_service, "_REPLAY_BATCH", 4)
    opened: list[int] = []
    open_in_session = message_crud.open_in_session

    async def counted(*args: Any) -> Any:
        opened.append(1)
        return await open_in_session(*args)

    monkeypatch.setattr(message_crud, "open_in_session", counted)
    async with app_with(stream_poll_seconds=0.2) as custom:
        client, factory = custom.client, custom.factory
        account = await factory.account()
        session = await factory.chat_session(account)
        await factory.messages(account, session["id"], 10)
        url = f"{API}/sessions/{session['id']}"

        reader = asyncio.create_task(
            client.get(f"{url}/events", headers={**account.headers, "Last-Event-ID": "50"})
        )
        await asyncio.sleep(0.5)
        assert (await client.delete(url, headers=account.headers)).status_code == 200
        body = (await asyncio.wait_for(reader, 10)).text

    events = [e for e in events_of(body) if e.event != "session.deleted"]
    assert [(e.event, e.data["message"]["seq"]) for e in events] == [
        ("message.created", seq) for seq in range(1, 11)
    ]
    assert len(opened) == 1  # the open messages read once, with the last part
