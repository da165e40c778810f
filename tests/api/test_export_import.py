"""Export (chat-store/1: json, jsonl, markdown; the whole account as JSONL) and import
(chat-store/1, ChatGPT, plain), on both backends."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from chat_store.crud import archive as archive_crud
from chat_store.crud import messages as message_crud
from chat_store.services import export as export_service
from chat_store.state import AppState
from tests.assertions import assert_problem, assert_validation_error
from tests.conftest import AppWith
from tests.factories import API, Account, Factory

IMPORT = f"{API}/sessions/import"


def export_url(session_id: str, export_format: str = "json") -> str:
    return f"{API}/sessions/{session_id}/export?format={export_format}"


async def full_session(client: httpx.AsyncClient, factory: Factory, account: Account) -> str:
    """A session with every kind of message: RAG context, metadata, an answer streamed half-way
    (its text in chunks), a failed one, a deleted one (a seq gap), tokens, model, latency."""
    session = await factory.chat_session(
        account,
        title="Billing flake",
        metadata={"client": "cli/1.4"},
        workspace={"repo": "github.com/acme/api", "branch": "main"},
    )
    sid = session["id"]
    await factory.message(account, sid, content="Why does test_billing fail on CI? ⏰")
    await factory.message(
        account,
        sid,
        role="assistant",
        content="The fixture uses a fixed clock.",
        context={"documents": [{"id": "doc-7", "score": 0.82}], "reranker": "bge-v2"},
        metadata={"tool_calls": [{"name": "grep", "args": {"q": "clock"}}]},
        token_count=9,
        model="gpt-4o",
        latency_ms=812,
    )
    doomed = await factory.message(account, sid, content="to be deleted")
    deleted = await client.delete(
        f"{API}/sessions/{sid}/messages/{doomed['id']}", headers=account.headers
    )
    assert deleted.status_code == 200
    streaming = await factory.message(account, sid, role="assistant", status="pending")
    for offset, delta in ((0, "Half an "), (8, "answer…")):
        appended = await client.post(
            f"{API}/sessions/{sid}/messages/{streaming['id']}/append",
            json={"offset": offset, "delta": delta},
            headers=account.headers,
        )
        assert appended.status_code == 200, appended.text
    failed = await factory.message(
        account, sid, role="assistant", status="in_progress", partial_content="Partial"
    )
    moved = await client.patch(
        f"{API}/sessions/{sid}/messages/{failed['id']}",
        json={"status": "failed", "error_message": "upstream timeout"},
        headers=account.headers,
    )
    assert moved.status_code == 200, moved.text
    return str(sid)


async def exported(client: httpx.AsyncClient, account: Account, sid: str) -> dict[str, Any]:
    response = await client.get(export_url(sid), headers=account.headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    document: dict[str, Any] = json.loads(response.content)
    return document


def comparable(document: dict[str, Any]) -> dict[str, Any]:
    """An export without what another account's copy cannot share: ids and the export time."""
    session = {key: value for key, value in document["session"].items() if key != "id"}
    messages = [
        {key: value for key, value in message.items() if key != "id"}
        for message in document["messages"]
    ]
    return {"format": document["format"], "session": session, "messages": messages}


# --- tenancy


async def test_new_routes_need_credentials(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    sid = (await factory.chat_session(account))["id"]
    for method, url in (
        ("GET", export_url(sid)),
        ("GET", f"{API}/users/me/export"),
        ("POST", IMPORT),
        ("POST", f"{API}/sessions/{sid}/restore"),
    ):
        response = await client.request(method, url, json={"messages": []})
        assert_problem(response, 401, "unauthorized")


async def test_another_users_session_is_not_found(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    owner, other = await factory.account(), await factory.account()
    sid = (await factory.chat_session(owner))["id"]
    await factory.message(owner, sid)
    for export_format in ("json", "jsonl", "markdown"):
        response = await client.get(export_url(sid, export_format), headers=other.headers)
        assert_problem(response, 404, "session_not_found")
    restore = await client.post(f"{API}/sessions/{sid}/restore", headers=other.headers)
    assert_problem(restore, 404, "session_not_found")
    # The other account's own export holds nothing of the owner's.
    lines = (await client.get(f"{API}/users/me/export", headers=other.headers)).text.splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["account"]


# --- export


async def test_json_export_has_every_field_of_every_message(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    sid = await full_session(client, factory, account)
    document = await exported(client, account, sid)

    assert document["format"] == "chat-store/1"
    session = document["session"]
    assert session["id"] == sid
    assert session["title"] == "Billing flake"
    assert session["metadata"] == {"client": "cli/1.4"}
    assert session["workspace"] == {"repo": "github.com/acme/api", "branch": "main", "path": None}
    assert (session["message_count"], session["last_seq"], session["total_tokens"]) == (4, 5, 9)

    messages = document["messages"]
    assert [m["seq"] for m in messages] == [1, 2, 4, 5]
    assert messages[0]["content"] == "Why does test_billing fail on CI? ⏰"
    answer = messages[1]
    assert answer["context"] == {
        "documents": [{"id": "doc-7", "score": 0.82}],
        "reranker": "bge-v2",
    }
    assert answer["metadata"] == {"tool_calls": [{"name": "grep", "args": {"q": "clock"}}]}
    assert (answer["token_count"], answer["model"], answer["latency_ms"]) == (9, "gpt-4o", 812)
    streaming = messages[2]
    assert streaming["status"] == "in_progress"
    assert streaming["content"] is None
    assert streaming["partial_content"] == "Half an answer…"  # the chunks, joined
    failed = messages[3]
    assert (failed["status"], failed["partial_content"], failed["error_message"]) == (
        "failed",
        "Partial",
        "upstream timeout",
    )
    assert set(answer) == {
        "id",
        "seq",
        "role",
        "content",
        "partial_content",
        "status",
        "error_message",
        "context",
        "metadata",
        "token_count",
        "model",
        "latency_ms",
        "created_at",
        "updated_at",
        "completed_at",
        "created_version",
        "version",
        "tool_calls",
        "tool_call_id",
    }
    # The same values as the API's own reads.
    listed = await client.get(f"{API}/sessions/{sid}/messages", headers=account.headers)
    for read, message in zip(listed.json()["data"], messages, strict=True):
        for field in ("id", "seq", "content", "partial_content", "created_at", "completed_at"):
            assert read[field] == message[field], field


async def test_jsonl_and_markdown_exports(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    sid = await full_session(client, factory, account)

    jsonl = await client.get(export_url(sid, "jsonl"), headers=account.headers)
    assert jsonl.status_code == 200
    assert jsonl.headers["content-type"].startswith("application/jsonl")
    assert jsonl.headers["content-disposition"] == (
        f'attachment; filename="chat-store-{sid}.jsonl"'
    )
    lines = [json.loads(line) for line in jsonl.text.splitlines()]
    assert lines[0]["format"] == "chat-store/1"
    assert lines[0]["type"] == "session" and lines[0]["session"]["id"] == sid
    assert [line["type"] for line in lines[1:]] == ["message"] * 4
    assert {line["session_id"] for line in lines[1:]} == {sid}
    assert lines[1:] == [
        {"type": "message", "session_id": sid, "message": message}
        for message in (await exported(client, account, sid))["messages"]
    ]

    markdown = await client.get(export_url(sid, "markdown"), headers=account.headers)
    assert markdown.status_code == 200
    assert markdown.headers["content-type"] == "text/markdown; charset=utf-8"
    text = markdown.text
    assert text.startswith("# Billing flake\n")
    assert "Why does test_billing fail on CI? ⏰" in text
    assert "### assistant · gpt-4o ·" in text
    assert "Half an answer…" in text
    assert "> upstream timeout" in text


async def test_an_export_holds_the_messages_its_header_counts(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    """The header is the session as the export began; its messages were read batch by batch
    later, so one stored meanwhile was in the document but not in its `message_count` and
    `last_seq`. The export stops at the header's `last_seq`."""
    account = await factory.account()
    sid = (await factory.chat_session(account))["id"]
    await factory.messages(account, sid, 3)
    source = export_service.ExportSource(state.read_sessionmaker, state.archive)
    async with state.read_sessionmaker() as db:
        row = await archive_crud.get_session(db, uuid.UUID(sid))
    assert row is not None
    exported = await export_service.exportable(source, row)
    await factory.message(account, sid, content="stored while the export runs")

    parts = [part async for part in export_service.render_session(source, exported, "json")]

    document = json.loads(
        "".join(part.decode() if isinstance(part, bytes) else part for part in parts)
    )
    assert (document["session"]["message_count"], document["session"]["last_seq"]) == (3, 3)
    assert [message["seq"] for message in document["messages"]] == [1, 2, 3]


async def test_unknown_format_is_refused(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    sid = (await factory.chat_session(account))["id"]
    response = await client.get(export_url(sid, "xml"), headers=account.headers)
    assert_validation_error(response, "query", "format")


async def test_account_export_streams_every_session_in_batches(
    client: httpx.AsyncClient, factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tiny batches: several reads of sessions and of messages make up the one answer.
    monkeypatch.setattr(export_service, "MESSAGE_BATCH", 2)
    monkeypatch.setattr(export_service, "SESSION_BATCH", 2)
    account = await factory.account()
    sessions = [(await factory.chat_session(account, title=f"s{i}"))["id"] for i in range(5)]
    for count, sid in enumerate(sessions):
        await factory.messages(account, sid, count)

    response = await client.get(f"{API}/users/me/export", headers=account.headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/jsonl")
    lines = [json.loads(line) for line in response.text.splitlines()]
    head = lines[0]
    assert (head["format"], head["type"]) == ("chat-store/1", "account")
    assert head["user"]["email"] == account.email
    seen: dict[str, list[str]] = {}
    current = None
    for line in lines[1:]:
        if line["type"] == "session":
            current = line["session"]["id"]
            seen[current] = []
        else:
            assert line["session_id"] == current
            seen[current].append(line["message"]["content"])
    assert list(seen) == sessions  # oldest first
    assert [len(contents) for contents in seen.values()] == [0, 1, 2, 3, 4]
    assert seen[sessions[4]] == ["m1", "m2", "m3", "m4"]


async def test_an_answer_completed_as_it_is_exported_is_exported_with_its_text(
    client: httpx.AsyncClient, factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer completes between the export's read of the rows and of the chunks (folded
    into `content` and deleted): each batch is read in one snapshot."""
    account = await factory.account()
    sid = (await factory.chat_session(account))["id"]
    await factory.message(account, sid, content="q")
    answer = await factory.message(account, sid, role="assistant", status="pending")
    url = f"{API}/sessions/{sid}/messages/{answer['id']}"
    appended = await client.post(
        f"{url}/append", json={"delta": "the whole answer", "offset": 0}, headers=account.headers
    )
    assert appended.status_code == 200, appended.text
    read_chunks = message_crud.chunk_texts
    completing: list[asyncio.Task[httpx.Response]] = []

    async def complete_in_between(db: Any, message_ids: Any) -> Any:
        if message_ids and not completing:
            patch = {"status": "complete"}
            completion = client.patch(url, json=patch, headers=account.headers)
            completing.append(asyncio.create_task(completion))
            await asyncio.wait(completing, timeout=2.0)
        return await read_chunks(db, message_ids)

    monkeypatch.setattr(message_crud, "chunk_texts", complete_in_between)
    document = await exported(client, account, sid)
    monkeypatch.setattr(message_crud, "chunk_texts", read_chunks)

    completed = await completing[0]
    assert completed.status_code == 200 and completed.json()["status"] == "complete"
    copy = document["messages"][-1]
    assert (copy["status"], copy["partial_content"]) == ("in_progress", "the whole answer")


# --- import


async def test_round_trip_into_another_account_gives_the_same_export(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    source, target = await factory.account(), await factory.account()
    sid = await full_session(client, factory, source)
    original = await exported(client, source, sid)

    imported = await client.post(IMPORT, json=original, headers=target.headers)
    assert imported.status_code == 201, imported.text
    result = imported.json()
    assert (result["object"], result["created"], result["format"]) == (
        "session.import",
        True,
        "chat-store",
    )
    assert result["message_count"] == 4
    new_id = result["session"]["id"]
    assert new_id != sid

    again = await exported(client, target, new_id)
    assert comparable(again) == comparable(original)
    assert {m["id"] for m in again["messages"]}.isdisjoint({m["id"] for m in original["messages"]})
    # The copy is an ordinary session of its owner: it takes new messages after the last seq.
    appended = await factory.message(target, new_id, content="continued")
    assert appended["seq"] == 6


async def test_the_same_source_imported_twice_is_one_session(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    body = {"title": "Plain", "messages": [{"role": "user", "content": "hello"}]}
    first = await client.post(IMPORT, json=body, headers=account.headers)
    second = await client.post(IMPORT, json=body, headers=account.headers)
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["created"] is False
    assert second.json()["session"]["id"] == first.json()["session"]["id"]
    # Another account importing the same source gets its own session.
    other = await factory.account()
    theirs = await client.post(IMPORT, json=body, headers=other.headers)
    assert theirs.status_code == 201
    assert theirs.json()["session"]["id"] != first.json()["session"]["id"]
    # A changed conversation is another source.
    body["messages"].append({"role": "assistant", "content": "hi"})
    changed = await client.post(IMPORT, json=body, headers=account.headers)
    assert changed.status_code == 201
    listed = await client.get(f"{API}/sessions", headers=account.headers)
    assert len(listed.json()["data"]) == 2


async def test_idempotency_key_on_import(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    body = {"messages": [{"role": "user", "content": "keyed"}]}
    headers = {**account.headers, "Idempotency-Key": "import-1"}
    first = await client.post(IMPORT, json=body, headers=headers)
    retry = await client.post(IMPORT, json=body, headers=headers)
    assert (first.status_code, retry.status_code) == (201, 201)
    assert retry.json() == first.json()
    reused = await client.post(
        IMPORT, json={"messages": [{"role": "user", "content": "other"}]}, headers=headers
    )
    assert_problem(reused, 409, "idempotency_key_reused")


async def test_a_bad_item_is_a_422_naming_its_index_and_nothing_is_stored(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    body = {
        "messages": [
            {"role": "user", "content": "fine"},
            {"role": "assistant", "content": "fine too"},
            {"role": "robot", "content": "not a role"},
        ]
    }
    response = await client.post(IMPORT, json=body, headers=account.headers)
    assert_validation_error(response, "body", "messages", 2, "role")
    unknown = {"messages": [{"role": "user", "content": "x", "colour": "red"}]}
    response = await client.post(IMPORT, json=unknown, headers=account.headers)
    assert_validation_error(response, "body", "messages", 0, "colour")
    unordered = {
        "format": "chat-store/1",
        "session": {},
        "messages": [
            {"seq": 2, "role": "user", "content": "a"},
            {"seq": 2, "role": "user", "content": "b"},
        ],
    }
    response = await client.post(IMPORT, json=unordered, headers=account.headers)
    assert_validation_error(response, "body", "messages", 1, "seq")
    # The plain form's seqs too: given for all or none, increasing.
    for seqs in ([3, 3], [5, 3], [1, None]):
        plain = {
            "messages": [
                {"seq": seq, "role": "user", "content": str(index)}
                for index, seq in enumerate(seqs)
            ]
        }
        response = await client.post(IMPORT, json=plain, headers=account.headers)
        assert_validation_error(response, "body", "messages", 1, "seq")
    # A seq or version that leaves the session no room for its next message or change.
    for field in ("seq", "version", "created_version"):
        crowded = {"messages": [{field: 2**31 - 1, "role": "user", "content": "x"}]}
        response = await client.post(IMPORT, json=crowded, headers=account.headers)
        assert_validation_error(response, "body", "messages", 0, field)
    # Times with no UTC equivalent.
    for field in ("created_at", "updated_at"):
        early = {"messages": [{field: "0001-01-01T00:00:00+14:00", "role": "user", "content": "x"}]}
        response = await client.post(IMPORT, json=early, headers=account.headers)
        assert_validation_error(response, "body", "messages", 0, field)
    late_session = {
        "format": "chat-store/1",
        "session": {"created_at": "9999-12-31T23:59:59-14:00"},
        "messages": [],
    }
    response = await client.post(IMPORT, json=late_session, headers=account.headers)
    assert_validation_error(response, "body", "session", "created_at")
    neither = await client.post(IMPORT, json={"title": "x"}, headers=account.headers)
    assert_validation_error(neither, "body")
    listed = await client.get(f"{API}/sessions", headers=account.headers)
    assert listed.json()["data"] == []


async def test_plain_import_titles_the_session_and_keeps_given_times(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": "\n  Port the CLI to Windows  \nplease",
                "created_at": "2025-01-02T03:04:05+02:00",
            },
            {
                "role": "assistant",
                "status": "failed",
                "partial_content": "Sta",
                "error_message": "x",
            },
        ]
    }
    response = await client.post(IMPORT, json=body, headers=account.headers)
    assert response.status_code == 201, response.text
    session = response.json()["session"]
    assert session["title"] == "Port the CLI to Windows"
    assert session["message_count"] == 3
    messages = (
        await client.get(f"{API}/sessions/{session['id']}/messages", headers=account.headers)
    ).json()["data"]
    assert [m["seq"] for m in messages] == [1, 2, 3]
    assert messages[1]["created_at"] == "2025-01-02T01:04:05Z"
    assert (messages[2]["status"], messages[2]["partial_content"]) == ("failed", "Sta")


def chatgpt_conversation() -> dict[str, Any]:
    """A conversations.json entry: a hidden system node, a user turn edited once (two
    branches), and a regenerated answer; current_node is on the second branch."""

    def node(
        node_id: str, parent: str | None, children: list[str], message: dict[str, Any] | None
    ) -> dict[str, Any]:
        return {"id": node_id, "parent": parent, "children": children, "message": message}

    def message(role: str, text: str, at: float, **extra: Any) -> dict[str, Any]:
        return {
            "id": f"msg-{text[:6]}",
            "author": {"role": role, "name": None, "metadata": {}},
            "create_time": at,
            "content": {"content_type": "text", "parts": [text]},
            "status": "finished_successfully",
            **extra,
        }

    hidden = message("system", "You are ChatGPT. The user's custom instructions: …", 1764160000.0)
    hidden["metadata"] = {"is_visually_hidden_from_conversation": True}
    return {
        "title": "Clock in tests",
        "create_time": 1764160000.5,
        "update_time": 1764160100.25,
        "conversation_id": "6e0f-conv",
        "current_node": "a2",
        "mapping": {
            "root": node("root", None, ["sys"], None),
            "sys": node("sys", "root", ["u1", "u1b"], hidden),
            "u1": node("u1", "sys", ["a1"], message("user", "Why is it flaky?", 1764160001.0)),
            "a1": node("a1", "u1", [], message("assistant", "First answer", 1764160002.0)),
            "u1b": node(
                "u1b", "sys", ["a2x", "a2"], message("user", "Why is CI flaky?", 1764160010.0)
            ),
            "a2x": node("a2x", "u1b", [], message("assistant", "Regenerated away", 1764160011.0)),
            "a2": node(
                "a2",
                "u1b",
                [],
                message(
                    "assistant",
                    "A fixed clock.",
                    1764160012.0,
                    metadata={"model_slug": "gpt-4o"},
                ),
            ),
        },
    }


async def test_chatgpt_conversation_is_reduced_to_its_current_branch(
    client: httpx.AsyncClient, factory: Factory, tmp_path: Path
) -> None:
    account = await factory.account()
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps([chatgpt_conversation()]))
    conversation = json.loads(path.read_text())[0]

    response = await client.post(IMPORT, json=conversation, headers=account.headers)
    assert response.status_code == 201, response.text
    result = response.json()
    assert result["format"] == "chatgpt"
    session = result["session"]
    assert session["title"] == "Clock in tests"
    assert session["created_at"] == "2025-11-26T12:26:40.500000Z"
    assert session["metadata"] == {"source": {"format": "chatgpt", "conversation_id": "6e0f-conv"}}
    messages = (
        await client.get(f"{API}/sessions/{session['id']}/messages", headers=account.headers)
    ).json()["data"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "Why is CI flaky?"),
        ("assistant", "A fixed clock."),
    ]
    assert messages[1]["model"] == "gpt-4o"
    assert messages[1]["metadata"] == {"chatgpt": {"node_id": "a2", "content_type": "text"}}
    assert messages[0]["created_at"] == "2025-11-26T12:26:50Z"

    again = await client.post(IMPORT, json=conversation, headers=account.headers)
    assert (again.status_code, again.json()["session"]["id"]) == (200, session["id"])


async def test_chatgpt_errors_name_the_node(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    conversation = chatgpt_conversation()
    conversation["mapping"]["u1b"]["message"]["author"]["role"] = "critic"
    response = await client.post(IMPORT, json=conversation, headers=account.headers)
    assert_validation_error(response, "body", "mapping", "u1b", "message", "role")
    conversation["current_node"] = "nowhere"
    response = await client.post(IMPORT, json=conversation, headers=account.headers)
    assert_validation_error(response, "body", "current_node")


@pytest.mark.parametrize("seconds", [4.4e16, 1e308, -1e12], ids=["year-1e9", "1e308", "before-1"])
@pytest.mark.parametrize(
    "where",
    [("mapping", "u1b", "message", "create_time"), ("create_time",), ("update_time",)],
    ids=["message", "created", "updated"],
)
async def test_chatgpt_times_beyond_the_date_range_are_refused(
    client: httpx.AsyncClient, factory: Factory, where: tuple[str, ...], seconds: float
) -> None:
    account = await factory.account()
    conversation = chatgpt_conversation()
    target = conversation
    for name in where[:-1]:
        target = target[name]
    target[where[-1]] = seconds

    response = await client.post(IMPORT, json=conversation, headers=account.headers)

    body = assert_validation_error(response, "body", *where)
    assert "within the years 1 to 9999" in body["detail"]
    listed = await client.get(f"{API}/sessions", headers=account.headers)
    assert listed.json()["data"] == []


async def test_import_limits(app_with: AppWith) -> None:
    async with app_with(
        max_body_bytes=4096, max_import_bytes=64 * 1024, max_import_messages=3
    ) as limited:
        client = limited.client
        account = await limited.factory.account()
        # Over MAX_BODY_BYTES but within MAX_IMPORT_BYTES: an import may be bigger.
        big = {"messages": [{"role": "user", "content": "x" * 10_000}]}
        response = await client.post(IMPORT, json=big, headers=account.headers)
        assert response.status_code == 201, response.text
        huge = {"messages": [{"role": "user", "content": "x" * 70_000}]}
        response = await client.post(IMPORT, json=huge, headers=account.headers)
        assert_problem(response, 413, "payload_too_large")
        many = {"messages": [{"role": "user", "content": str(i)} for i in range(4)]}
        response = await client.post(IMPORT, json=many, headers=account.headers)
        assert_validation_error(response, "body", "messages")
        # Other routes keep MAX_BODY_BYTES.
        response = await client.post(
            f"{API}/sessions", json={"title": "x" * 5000}, headers=account.headers
        )
        assert_problem(response, 413, "payload_too_large")


async def test_the_system_prompt_goes_out_with_the_export_and_comes_back_with_the_import(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    source, target = await factory.account(), await factory.account()
    created = await client.post(
        f"{API}/sessions",
        json={"title": "Terse", "system_prompt": "You are terse.\nAnswer in one line."},
        headers=source.headers,
    )
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    await factory.message(source, sid, content="hi")
    document = await exported(client, source, sid)
    assert document["session"]["system_prompt"] == "You are terse.\nAnswer in one line."

    imported = await client.post(IMPORT, json=document, headers=target.headers)
    assert imported.status_code == 201, imported.text
    copy = imported.json()["session"]
    assert copy["system_prompt"] == "You are terse.\nAnswer in one line."
    again = await exported(client, target, copy["id"])
    assert again["session"]["system_prompt"] == document["session"]["system_prompt"]

    # The account's export carries it too.
    whole = await client.get(f"{API}/users/me/export", headers=source.headers)
    sessions = [json.loads(line) for line in whole.text.splitlines()]
    assert [line["session"]["system_prompt"] for line in sessions if line["type"] == "session"] == [
        "You are terse.\nAnswer in one line."
    ]


async def test_a_plain_import_takes_a_system_prompt_and_refuses_a_bad_one(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    messages = [{"role": "user", "content": "hello"}]
    imported = await client.post(
        IMPORT, json={"system_prompt": "Be brief.", "messages": messages}, headers=account.headers
    )
    assert imported.status_code == 201, imported.text
    assert imported.json()["session"]["system_prompt"] == "Be brief."

    refused = await client.post(
        IMPORT,
        content=json.dumps({"system_prompt": "bad \ud800", "messages": messages}),
        headers={**account.headers, "Content-Type": "application/json"},
    )
    assert_validation_error(refused, "body", "system_prompt")


async def test_a_session_without_a_system_prompt_keeps_its_fingerprint(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    """Exports written before sessions had a system prompt hold no such key: imported again
    after an export of today (which writes null), the conversation is found, not doubled."""
    account = await factory.account()
    sid = (await factory.chat_session(account, title="old"))["id"]
    await factory.message(account, sid, content="hi")
    document = await exported(client, account, sid)
    assert document["session"]["system_prompt"] is None
    first = await client.post(IMPORT, json=document, headers=account.headers)
    assert first.status_code == 201, first.text
    del document["session"]["system_prompt"]
    second = await client.post(IMPORT, json=document, headers=account.headers)
    assert second.status_code == 200, second.text
    assert second.json()["created"] is False
    assert second.json()["session"]["id"] == first.json()["session"]["id"]


@pytest.mark.parametrize(
    ("conversation_id", "problem"),
    [
        ('"bad \\ud800"', "conversation_id"),
        (json.dumps("c" * 201), "conversation_id"),
    ],
)
async def test_a_chatgpt_conversation_id_the_store_cannot_keep_is_refused(
    client: httpx.AsyncClient, factory: Factory, conversation_id: str, problem: str
) -> None:
    account = await factory.account()
    raw = json.dumps(chatgpt_conversation()).replace('"6e0f-conv"', conversation_id)
    response = await client.post(
        IMPORT, content=raw, headers={**account.headers, "Content-Type": "application/json"}
    )
    assert_validation_error(response, "body", problem)
    listed = await client.get(f"{API}/sessions", headers=account.headers)
    assert listed.json()["data"] == []


@pytest.mark.parametrize("conversation_id", ["NaN", "[1, 2]", "7"])
async def test_a_chatgpt_conversation_id_that_is_not_a_string_is_not_kept(
    client: httpx.AsyncClient, factory: Factory, conversation_id: str
) -> None:
    account = await factory.account()
    raw = json.dumps(chatgpt_conversation()).replace('"6e0f-conv"', conversation_id)
    response = await client.post(
        IMPORT, content=raw, headers={**account.headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 201, response.text
    sid = response.json()["session"]["id"]
    assert response.json()["session"]["metadata"]["source"]["conversation_id"] is None
    document = await exported(client, account, sid)
    assert document["session"]["metadata"]["source"]["conversation_id"] is None


async def test_an_answer_the_service_cancelled_exports_what_the_import_takes(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    """The service's keys (here the cancel's finish reason) may take an answer's metadata past
    the client's MAX_METADATA_BYTES; its export must still import."""
    source, target = await factory.account(), await factory.account()
    sid = (await factory.chat_session(source))["id"]
    await factory.message(source, sid, content="question")
    answer = await factory.message(
        source,
        sid,
        role="assistant",
        status="in_progress",
        partial_content="Half",
        metadata={"k": "x" * 16_370},  # within the 16 KiB MAX_METADATA_BYTES
    )
    cancelled = await client.post(
        f"{API}/sessions/{sid}/messages/{answer['id']}/cancel", headers=source.headers
    )
    assert cancelled.status_code == 200, cancelled.text
    document = await exported(client, source, sid)
    imported = await client.post(IMPORT, json=document, headers=target.headers)
    assert imported.status_code == 201, imported.text
    copy = await exported(client, target, imported.json()["session"]["id"])
    assert copy["messages"][1]["metadata"] == document["messages"][1]["metadata"]
    assert copy["messages"][1]["metadata"]["finish_reason"] == "cancelled"


async def test_an_imported_message_metadata_beyond_the_service_room_is_refused(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    messages = [{"role": "user", "content": "hi", "metadata": {"k": "x" * (16_384 + 4_096)}}]
    response = await client.post(IMPORT, json={"messages": messages}, headers=account.headers)
    assert_validation_error(response, "body", "messages", 0, "metadata")
