"""Listing a session's messages: order, keyset cursors by id and by seq, limits, has_more, and
answers that are never stale whatever was written just before (the hot-history cache)."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import httpx
import pytest

from tests.assertions import assert_problem, assert_validation_error
from tests.factories import API, Account, Factory


def _url(session_id: str) -> str:
    return f"{API}/sessions/{session_id}/messages"


async def _page(client: httpx.AsyncClient, account: Account, session_id: str, **params: Any) -> Any:
    query = {key: value for key, value in params.items() if value is not None}
    response = await client.get(_url(session_id), params=query, headers=account.headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


def _expected(
    messages: list[Any],
    *,
    limit: int = 20,
    order: str = "asc",
    after: int | None = None,
    before: int | None = None,
    after_seq: int | None = None,
    before_seq: int | None = None,
) -> dict[str, Any]:
    """The page the contract describes, computed from the whole history (`after`/`before` are
    cursor seqs): seq filters narrow the list, `after` continues in list order, `before` is
    the page just before the cursor in list order."""
    rows = [
        m
        for m in messages
        if (after_seq is None or m["seq"] > after_seq)
        and (before_seq is None or m["seq"] < before_seq)
    ]
    descending = order == "desc"
    if descending:
        rows.reverse()
    if after is not None:
        rows = [m for m in rows if (m["seq"] < after if descending else m["seq"] > after)]
        page = rows[:limit]
    elif before is not None:
        rows = [m for m in rows if (m["seq"] > before if descending else m["seq"] < before)]
        page = rows[-limit:]
    else:
        page = rows[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(rows) > limit,
    }


async def _history(
    client: httpx.AsyncClient, factory: Factory, count: int
) -> tuple[Account, str, list[Any]]:
    account = await factory.account()
    session = await factory.chat_session(account)
    messages = await factory.messages(account, session["id"], count)
    return account, session["id"], messages


async def test_default_is_seq_order_twenty_per_page(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account, session_id, messages = await _history(client, factory, 25)
    page = await _page(client, account, session_id)
    assert page == _expected(messages)
    assert [m["seq"] for m in page["data"]] == list(range(1, 21))
    assert page["has_more"] is True
    assert page["first_id"] == messages[0]["id"]
    assert page["last_id"] == messages[19]["id"]


async def test_order_desc(client: httpx.AsyncClient, factory: Factory) -> None:
    account, session_id, messages = await _history(client, factory, 5)
    page = await _page(client, account, session_id, order="desc")
    assert [m["seq"] for m in page["data"]] == [5, 4, 3, 2, 1]
    assert page["has_more"] is False
    assert page == _expected(messages, order="desc")


async def test_empty_session(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    page = await _page(client, account, session["id"])
    assert page == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }


@pytest.mark.parametrize("limit", [0, 101, -1, "ten"])
async def test_limit_out_of_bounds_is_422(
    client: httpx.AsyncClient, factory: Factory, limit: object
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    response = await client.get(
        _url(session["id"]), params={"limit": limit}, headers=account.headers
    )
    assert_validation_error(response, "query", "limit")


async def test_limit_bounds(client: httpx.AsyncClient, factory: Factory) -> None:
    account, session_id, messages = await _history(client, factory, 101)
    one = await _page(client, account, session_id, limit=1)
    assert one == _expected(messages, limit=1)
    assert [m["seq"] for m in one["data"]] == [1]
    hundred = await _page(client, account, session_id, limit=100)
    assert [m["seq"] for m in hundred["data"]] == list(range(1, 101))
    assert hundred["has_more"] is True
    last = await _page(client, account, session_id, limit=100, order="desc")
    assert [m["seq"] for m in last["data"]] == list(range(101, 1, -1))
    assert last["has_more"] is True


async def test_bad_cursors(client: httpx.AsyncClient, factory: Factory) -> None:
    account, session_id, messages = await _history(client, factory, 3)
    url = _url(session_id)
    both = await client.get(
        url,
        params={"after": messages[0]["id"], "before": messages[2]["id"]},
        headers=account.headers,
    )
    assert_validation_error(both, "query")
    for params in ({"after": "nope"}, {"after_seq": -1}, {"before_seq": 0}, {"order": "up"}):
        response = await client.get(url, params=params, headers=account.headers)
        assert_validation_error(response, "query")
    unknown = await client.get(url, params={"after": str(uuid.uuid4())}, headers=account.headers)
    assert_problem(unknown, 404, "message_not_found")


async def test_cursors_by_id(client: httpx.AsyncClient, factory: Factory) -> None:
    account, session_id, messages = await _history(client, factory, 10)
    by_seq = {m["seq"]: m for m in messages}

    after = await _page(client, account, session_id, after=by_seq[3]["id"], limit=4)
    assert [m["seq"] for m in after["data"]] == [4, 5, 6, 7]
    assert after["has_more"] is True
    before = await _page(client, account, session_id, before=by_seq[8]["id"], limit=4)
    assert [m["seq"] for m in before["data"]] == [4, 5, 6, 7]
    assert before["has_more"] is True
    before = await _page(client, account, session_id, before=by_seq[4]["id"], limit=4)
    assert [m["seq"] for m in before["data"]] == [1, 2, 3]
    assert before["has_more"] is False

    # In descending order, after continues towards older messages.
    after = await _page(client, account, session_id, order="desc", after=by_seq[8]["id"], limit=4)
    assert [m["seq"] for m in after["data"]] == [7, 6, 5, 4]
    assert after["has_more"] is True
    after = await _page(client, account, session_id, order="desc", after=by_seq[3]["id"], limit=4)
    assert [m["seq"] for m in after["data"]] == [2, 1]
    assert after["has_more"] is False
    before = await _page(client, account, session_id, order="desc", before=by_seq[3]["id"], limit=4)
    assert [m["seq"] for m in before["data"]] == [7, 6, 5, 4]
    assert before["has_more"] is True

    # A page's last message deleted before the next page is asked for: the cursor still holds
    # its place (from the deleted message's tombstone).
    page = await _page(client, account, session_id, limit=4)
    deleted = await client.delete(
        f"{_url(session_id)}/{page['data'][-1]['id']}", headers=account.headers
    )
    assert deleted.status_code == 200
    after = await _page(client, account, session_id, after=page["data"][-1]["id"], limit=4)
    assert [m["seq"] for m in after["data"]] == [5, 6, 7, 8]
    before = await _page(client, account, session_id, before=page["data"][-1]["id"], limit=4)
    assert [m["seq"] for m in before["data"]] == [1, 2, 3]


async def test_cursors_by_seq(client: httpx.AsyncClient, factory: Factory) -> None:
    account, session_id, _ = await _history(client, factory, 10)
    page = await _page(client, account, session_id, after_seq=7)
    assert [m["seq"] for m in page["data"]] == [8, 9, 10]
    assert page["has_more"] is False
    page = await _page(client, account, session_id, after_seq=0, limit=3)
    assert [m["seq"] for m in page["data"]] == [1, 2, 3]
    assert page["has_more"] is True
    page = await _page(client, account, session_id, before_seq=4)
    assert [m["seq"] for m in page["data"]] == [1, 2, 3]
    page = await _page(client, account, session_id, after_seq=2, before_seq=6)
    assert [m["seq"] for m in page["data"]] == [3, 4, 5]
    page = await _page(client, account, session_id, after_seq=2, before_seq=6, order="desc")
    assert [m["seq"] for m in page["data"]] == [5, 4, 3]
    page = await _page(client, account, session_id, after_seq=10)
    assert page["data"] == []
    assert page["has_more"] is False


async def test_every_page_of_a_long_history_matches_the_contract(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    """Pages near the newest end come from the cache, older ones from the database: both give
    the same answers. A few deleted messages leave gaps in the seqs."""
    account, session_id, messages = await _history(client, factory, 250)
    for seq in (2, 120, 175, 249):
        deleted = await client.delete(
            f"{_url(session_id)}/{messages[seq - 1]['id']}", headers=account.headers
        )
        assert deleted.status_code == 200
    messages = [m for m in messages if m["seq"] not in {2, 120, 175, 249}]
    by_seq = {m["seq"]: m for m in messages}

    # The newest hundred (the cached window) are seqs 149..250 less the two deleted there.
    seqs = (None, 0, 100, 148, 149, 150, 200, 251)
    for order, limit, after_seq, before_seq in itertools.product(
        ("asc", "desc"), (1, 100), seqs, seqs
    ):
        if before_seq == 0 or after_seq == 251:
            continue
        params = {"order": order, "limit": limit, "after_seq": after_seq, "before_seq": before_seq}
        page = await _page(client, account, session_id, **params)
        assert page == _expected(messages, **params), params  # type: ignore[arg-type]

    cursors = [(side, seq) for side in ("after", "before") for seq in (1, 100, 150, 151, 250)]
    for order, limit, (cursor, seq) in itertools.product(("asc", "desc"), (1, 20, 100), cursors):
        params = {"order": order, "limit": limit, cursor: by_seq[seq]["id"]}
        page = await _page(client, account, session_id, **params)
        expected = _expected(messages, order=order, limit=limit, **{cursor: seq})
        assert page == expected, params


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_walking_all_pages_gives_each_message_once(
    client: httpx.AsyncClient, factory: Factory, order: str
) -> None:
    account, session_id, messages = await _history(client, factory, 250)
    seen: list[Any] = []
    after = None
    for _ in range(20):
        page = await _page(client, account, session_id, order=order, limit=33, after=after)
        seen.extend(page["data"])
        if not page["has_more"]:
            break
        after = page["last_id"]
    expected = messages if order == "asc" else messages[::-1]
    assert seen == expected

    # And backwards from the far end with `before`.
    seen = []
    before = expected[-1]["id"]
    seen_last = [expected[-1]]
    for _ in range(20):
        page = await _page(client, account, session_id, order=order, limit=33, before=before)
        seen[:0] = page["data"]
        if not page["has_more"]:
            break
        before = page["first_id"]
    assert seen + seen_last == expected


# --- reads after writes


class Reader:
    """Reads the session's list the ways a client does, so every cached page gets filled."""

    def __init__(self, client: httpx.AsyncClient, account: Account, session_id: str) -> None:
        self.client = client
        self.account = account
        self.session_id = session_id

    async def pages(self) -> list[Any]:
        return [
            await _page(self.client, self.account, self.session_id, limit=100),
            await _page(self.client, self.account, self.session_id, limit=100, order="desc"),
            await _page(self.client, self.account, self.session_id, limit=5, order="desc"),
            await _page(self.client, self.account, self.session_id, after_seq=0),
        ]

    async def truth(self) -> list[Any]:
        """Each message read on its own (never from the list cache), in seq order."""
        listed = (await self.pages())[0]["data"]
        truth = []
        for message in listed:
            response = await self.client.get(
                f"{_url(self.session_id)}/{message['id']}", headers=self.account.headers
            )
            truth.append(response.json())
        return truth

    async def check(self, expected: list[Any]) -> None:
        asc, desc, newest, after_zero = await self.pages()
        assert asc["data"] == expected
        assert desc["data"] == expected[::-1]
        assert newest["data"] == expected[::-1][:5]
        assert after_zero["data"] == expected[:20]
        assert await self.truth() == expected


async def test_reads_after_every_kind_of_write_are_fresh(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    reader = Reader(client, account, session["id"])
    url = _url(session["id"])
    await reader.check([])

    expected = [await factory.message(account, session["id"], content="first")]
    await reader.check(expected)

    batch = await factory.messages(account, session["id"], 3)
    expected += batch
    await reader.check(expected)

    pending = await factory.message(account, session["id"], role="assistant", status="pending")
    expected.append(pending)
    await reader.check(expected)

    delta = await client.post(
        f"{url}/{pending['id']}/append", json={"delta": "Hé", "offset": 0}, headers=account.headers
    )
    expected[-1] = {k: v for k, v in delta.json().items() if k != "length"}
    await reader.check(expected)
    assert expected[-1]["partial_content"] == "Hé"

    minimal = await client.post(
        f"{url}/{pending['id']}/append",
        json={"delta": "llo", "offset": 2},
        headers={**account.headers, "Prefer": "return=minimal"},
    )
    assert minimal.status_code == 200
    expected[-1] = {
        **expected[-1],
        "updated_at": minimal.json()["updated_at"],
        "partial_content": "Héllo",
    }
    await reader.check(expected)

    for change in (
        {"metadata": {"edited": True}},
        {"token_count": 7},
        {"status": "complete"},
        {"content": "Corrected."},
    ):
        patched = await client.patch(f"{url}/{pending['id']}", json=change, headers=account.headers)
        assert patched.status_code == 200, patched.text
        expected[-1] = patched.json()
        await reader.check(expected)
    assert expected[-1]["content"] == "Corrected."

    deleted = await client.delete(f"{url}/{batch[1]['id']}", headers=account.headers)
    assert deleted.status_code == 200
    expected.remove(batch[1])
    await reader.check(expected)

    last = await client.delete(f"{url}/{expected[-1]['id']}", headers=account.headers)
    assert last.status_code == 200
    expected.pop()
    await reader.check(expected)

    # Refused writes change nothing.
    conflict = await client.post(
        url, json={"role": "user", "content": "x", "expected_last_seq": 0}, headers=account.headers
    )
    assert conflict.status_code == 409
    await reader.check(expected)

    fork = await client.post(
        f"{API}/sessions/{session['id']}/fork",
        json={"message_id": expected[1]["id"]},
        headers=account.headers,
    )
    assert fork.status_code == 201
    await reader.check(expected)
    fork_reader = Reader(client, account, fork.json()["id"])
    forked = (await fork_reader.pages())[0]["data"]
    assert [m["content"] for m in forked] == [m["content"] for m in expected[:2]]
    await fork_reader.check(forked)
    appended = await factory.message(account, fork.json()["id"], content="only in the fork")
    await fork_reader.check([*forked, appended])
    await reader.check(expected)


async def test_reads_of_a_long_session_stay_fresh(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    """Changes to the newest messages and to ones older than the cached window."""
    account, session_id, messages = await _history(client, factory, 150)
    url = _url(session_id)

    async def newest(**params: Any) -> list[Any]:
        return list((await _page(client, account, session_id, limit=100, **params))["data"])

    assert await newest(order="desc") == messages[::-1][:100]
    assert await newest(after_seq=50) == messages[50:]

    for index in (149, 10):  # inside and outside the newest hundred
        patched = await client.patch(
            f"{url}/{messages[index]['id']}",
            json={"metadata": {"changed": index}},
            headers=account.headers,
        )
        messages[index] = patched.json()
        assert await newest(order="desc") == messages[::-1][:100]
        assert await newest(after_seq=50) == messages[50:]
        assert await newest() == messages[:100]

    await client.delete(f"{url}/{messages[120]['id']}", headers=account.headers)
    del messages[120]
    assert await newest(order="desc") == messages[::-1][:100]
    assert await newest(after_seq=50) == messages[50:]


async def test_a_reused_session_id_never_shows_old_messages(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    session_id = str(uuid.uuid4())
    await factory.chat_session(account, id=session_id)
    old = await factory.messages(account, session_id, 2)
    assert (await _page(client, account, session_id))["data"] == old

    response = await client.delete(f"{API}/sessions/{session_id}", headers=account.headers)
    assert response.status_code == 200
    await factory.chat_session(account, id=session_id)
    new = await factory.messages(account, session_id, 2)
    assert (await _page(client, account, session_id))["data"] == new
