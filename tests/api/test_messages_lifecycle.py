"""The status lifecycle through PATCH (forward moves only, text following the status), and
reading and deleting one message."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.assertions import assert_problem, assert_recent, assert_validation_error
from tests.factories import API, Account, Factory
from tests.support.statuses import ALLOWED, STATUSES


def _url(session_id: str, message_id: str = "") -> str:
    url = f"{API}/sessions/{session_id}/messages"
    return f"{url}/{message_id}" if message_id else url


async def _read(client: httpx.AsyncClient, account: Account, session_id: str, mid: str) -> Any:
    response = await client.get(_url(session_id, mid), headers=account.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def _patch(
    client: httpx.AsyncClient, account: Account, session_id: str, mid: str, **body: Any
) -> httpx.Response:
    return await client.patch(_url(session_id, mid), json=body, headers=account.headers)


async def _stream(
    client: httpx.AsyncClient, account: Account, session_id: str, mid: str, *deltas: str
) -> Any:
    """Append deltas at the stored length; returns the last answer."""
    answer: Any = None
    offset = len((await _read(client, account, session_id, mid))["partial_content"] or "")
    for delta in deltas:
        response = await client.post(
            f"{_url(session_id, mid)}/append",
            json={"delta": delta, "offset": offset},
            headers=account.headers,
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        offset = answer["length"]
    return answer


async def _message_in(
    client: httpx.AsyncClient, factory: Factory, account: Account, session_id: str, status: str
) -> Any:
    """An assistant message in `status`, with streamed text where the status has text."""
    if status == "complete":
        return await factory.message(account, session_id, role="assistant", content="Done.")
    message = await factory.message(account, session_id, role="assistant", status="pending")
    if status == "pending":
        return message
    await _stream(client, account, session_id, message["id"], "Half ", "an answer")
    if status != "in_progress":
        response = await _patch(client, account, session_id, message["id"], status=status)
        assert response.status_code == 200, response.text
    return await _read(client, account, session_id, message["id"])


MOVES = [(current, new) for current in STATUSES for new in STATUSES if current != new]


@pytest.mark.parametrize(("current", "new"), MOVES)
async def test_status_moves(
    client: httpx.AsyncClient, factory: Factory, current: str, new: str
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    message = await _message_in(client, factory, account, session["id"], current)
    assert message["status"] == current
    response = await _patch(client, account, session["id"], message["id"], status=new)
    if (current, new) in ALLOWED:
        assert response.status_code == 200, response.text
        assert response.json()["status"] == new
        assert (await _read(client, account, session["id"], message["id"]))["status"] == new
    else:
        assert_problem(response, 409, "invalid_transition")
        assert await _read(client, account, session["id"], message["id"]) == message


async def test_refused_move_changes_nothing_else_either(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    message = await _message_in(client, factory, account, session["id"], "in_progress")
    before = await client.get(f"{API}/sessions/{session['id']}", headers=account.headers)
    response = await _patch(
        client,
        account,
        session["id"],
        message["id"],
        status="pending",
        metadata={"lost": True},
        token_count=40,
        partial_content="rewritten",
    )
    assert_problem(response, 409, "invalid_transition")
    assert await _read(client, account, session["id"], message["id"]) == message
    after = await client.get(f"{API}/sessions/{session['id']}", headers=account.headers)
    assert after.json() == before.json()


async def test_streamed_answer_completes_with_its_text(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    message = await factory.message(account, session["id"], role="assistant", status="pending")
    started = await _patch(client, account, session["id"], message["id"], status="in_progress")
    assert started.json()["status"] == "in_progress"
    assert started.json()["partial_content"] == ""
    await _stream(client, account, session["id"], message["id"], "Bonjour, ", "ça va ", "😀?")

    done = await _patch(
        client, account, session["id"], message["id"], status="complete", token_count=12
    )
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["content"] == "Bonjour, ça va 😀?"
    assert body["partial_content"] is None
    assert body["token_count"] == 12
    assert_recent(body["completed_at"])
    assert await _read(client, account, session["id"], message["id"]) == body


async def test_complete_with_content_takes_the_final_text(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    message = await _message_in(client, factory, account, session["id"], "in_progress")
    done = await _patch(
        client, account, session["id"], message["id"], status="complete", content="Final words."
    )
    assert done.status_code == 200, done.text
    assert (done.json()["content"], done.json()["partial_content"]) == ("Final words.", None)
    assert await _read(client, account, session["id"], message["id"]) == done.json()

    # A complete message's text may still be corrected; it stays complete.
    fixed = await _patch(client, account, session["id"], message["id"], content="Fixed words.")
    assert fixed.status_code == 200, fixed.text
    assert fixed.json()["content"] == "Fixed words."
    assert fixed.json()["completed_at"] == done.json()["completed_at"]


async def test_pending_completes_directly(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    empty = await factory.message(account, session["id"], role="assistant", status="pending")
    done = await _patch(client, account, session["id"], empty["id"], status="complete")
    assert (done.json()["content"], done.json()["partial_content"]) == ("", None)

    given = await factory.message(
        account, session["id"], role="assistant", status="pending", partial_content="draft"
    )
    done = await _patch(client, account, session["id"], given["id"], status="complete")
    assert done.json()["content"] == "draft"


async def test_failed_keeps_text_and_error_then_resumes(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    message = await _message_in(client, factory, account, session["id"], "in_progress")
    failed = await _patch(
        client,
        account,
        session["id"],
        message["id"],
        status="failed",
        error_message="provider timeout",
    )
    assert failed.status_code == 200, failed.text
    stored = await _read(client, account, session["id"], message["id"])
    assert stored["status"] == "failed"
    assert stored["error_message"] == "provider timeout"
    assert stored["partial_content"] == "Half an answer"
    assert stored["content"] is None
    assert stored["completed_at"] is None

    resumed = await _patch(client, account, session["id"], message["id"], status="in_progress")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["partial_content"] == "Half an answer"
    assert resumed.json()["error_message"] is None  # no longer failed
    await _stream(client, account, session["id"], message["id"], ", finished.")
    done = await _patch(client, account, session["id"], message["id"], status="complete")
    assert done.json()["content"] == "Half an answer, finished."
    assert (await _read(client, account, session["id"], message["id"]))["status"] == "complete"


@pytest.mark.parametrize("status", ["failed", "cancelled"])
async def test_stopped_message_keeps_partial_content(
    client: httpx.AsyncClient, factory: Factory, status: str
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    message = await factory.message(
        account, session["id"], role="assistant", status="pending", partial_content="Start: "
    )
    await _stream(client, account, session["id"], message["id"], "ünï", "cödé")
    stopped = await _patch(
        client, account, session["id"], message["id"], status=status, error_message="stopped"
    )
    assert stopped.status_code == 200, stopped.text
    stored = await _read(client, account, session["id"], message["id"])
    assert stored == stopped.json()
    assert stored["partial_content"] == "Start: ünïcödé"
    assert stored["content"] is None
    assert stored["error_message"] == "stopped"


@pytest.mark.parametrize(
    ("status", "body"),
    [
        ("pending", {"content": "too early"}),
        ("in_progress", {"content": "too early"}),
        ("in_progress", {"status": "failed", "content": "x"}),
        ("in_progress", {"status": "cancelled", "content": "x"}),
        ("complete", {"partial_content": "x"}),
        ("in_progress", {"status": "complete", "partial_content": "x"}),
        ("in_progress", {"status": "complete", "content": "a", "partial_content": "b"}),
        ("in_progress", {"error_message": "not failed"}),
        ("complete", {"error_message": "not failed"}),
        ("in_progress", {"status": None}),
        ("in_progress", {"metadata": None}),
        ("in_progress", {"status": "finished"}),
        ("in_progress", {"content": "nul\x00"}),
        ("in_progress", {"token_count": -5}),
        ("in_progress", {"seq": 7}),
        ("in_progress", {"role": "user"}),
    ],
)
async def test_invalid_update_is_422_and_changes_nothing(
    client: httpx.AsyncClient, factory: Factory, status: str, body: dict[str, Any]
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    message = await _message_in(client, factory, account, session["id"], status)
    response = await client.patch(
        _url(session["id"], message["id"]), json=body, headers=account.headers
    )
    assert_validation_error(response)
    assert await _read(client, account, session["id"], message["id"]) == message


async def test_update_other_fields(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    message = await factory.message(account, session["id"], role="assistant", content="hi")
    response = await _patch(
        client,
        account,
        session["id"],
        message["id"],
        metadata={"rating": "good"},
        latency_ms=850,
        token_count=3,
    )
    assert response.status_code == 200, response.text
    stored = await _read(client, account, session["id"], message["id"])
    assert stored == response.json()
    assert (stored["metadata"], stored["latency_ms"], stored["token_count"]) == (
        {"rating": "good"},
        850,
        3,
    )
    assert stored["content"] == "hi"
    assert stored["seq"] == message["seq"]
    assert stored["created_at"] == message["created_at"]
    assert stored["updated_at"] > message["updated_at"]


async def test_delete_message(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    keep = await factory.message(account, session["id"])
    streaming = await _message_in(client, factory, account, session["id"], "in_progress")
    response = await client.delete(_url(session["id"], streaming["id"]), headers=account.headers)
    assert response.status_code == 200
    assert response.json() == {
        "id": streaming["id"],
        "object": "message.deleted",
        "deleted": True,
    }
    gone = await client.get(_url(session["id"], streaming["id"]), headers=account.headers)
    assert_problem(gone, 404, "message_not_found")
    again = await client.delete(_url(session["id"], streaming["id"]), headers=account.headers)
    assert_problem(again, 404, "message_not_found")
    listed = await client.get(_url(session["id"]), headers=account.headers)
    assert listed.json()["data"] == [keep]


async def test_null_text_in_a_patch_is_a_validation_error(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    base = f"{API}/sessions/{session['id']}/messages"
    pending = (
        await client.post(
            base, json={"role": "assistant", "status": "pending"}, headers=account.headers
        )
    ).json()
    url = f"{base}/{pending['id']}"
    for body in (
        {"status": "complete", "content": None},
        {"partial_content": None},
    ):
        answer = await client.patch(url, json=body, headers=account.headers)
        assert answer.status_code == 422, answer.text
        assert answer.json()["code"] == "validation_error"
    stored = (await client.get(url, headers=account.headers)).json()
    assert (stored["status"], stored["partial_content"]) == ("pending", "")
