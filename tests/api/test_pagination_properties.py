"""Keyset pagination over many list sizes, page sizes and orders (hypothesis), with rows added
between pages: walking a list never skips or repeats a row (docs/api.md, Pagination).

Rows added during a walk sort after the cursor when the walk goes towards the newest, so such a
walk meets them; a walk towards the oldest never does. Either way, every row that existed when
the walk began is met exactly once, in list order.
"""

from __future__ import annotations

from typing import Any

import httpx
from hypothesis import given
from hypothesis import strategies as st

from tests.factories import API, Account, Factory
from tests.support.properties import API_PROPERTY


async def _page(client: httpx.AsyncClient, url: str, account: Account, **params: Any) -> Any:
    response = await client.get(url, params=params, headers=account.headers)
    assert response.status_code == 200, response.text
    page = response.json()
    ids = [item["id"] for item in page["data"]]
    assert (page["first_id"], page["last_id"]) == ((ids[0], ids[-1]) if ids else (None, None))
    return page


async def _walk(
    client: httpx.AsyncClient,
    url: str,
    account: Account,
    *,
    order: str,
    limit: int,
    inserts: list[int],
    insert: Any,
) -> list[str]:
    """Every id met walking forward with `after`, calling `insert()` between pages as often
    as `inserts` says (the n-th number for the n-th gap)."""
    seen: list[str] = []
    cursor: dict[str, str] = {}
    for gap in range(1000):
        page = await _page(client, url, account, order=order, limit=limit, **cursor)
        assert len(page["data"]) <= limit
        seen.extend(item["id"] for item in page["data"])
        if not page["has_more"]:
            return seen
        assert page["data"], "has_more with an empty page"
        cursor = {"after": page["last_id"]}
        for _ in range(inserts[gap] if gap < len(inserts) else 0):
            await insert()
    raise AssertionError("the walk did not end")


async def _walk_back(
    client: httpx.AsyncClient, url: str, account: Account, *, order: str, limit: int, last: str
) -> list[str]:
    """Every id before `last`, walking backwards with `before`, put back in list order."""
    pages: list[list[str]] = []
    cursor = last
    while True:
        page = await _page(client, url, account, order=order, limit=limit, before=cursor)
        pages.append([item["id"] for item in page["data"]])
        if not page["has_more"]:
            return [item for chunk in reversed(pages) for item in chunk]
        cursor = page["first_id"]


_WALKS = {
    "order": st.sampled_from(["asc", "desc"]),
    "limit": st.integers(1, 5),
    "inserts": st.lists(st.integers(0, 2), max_size=6),
}


@API_PROPERTY
@given(count=st.integers(0, 10), **_WALKS)
async def test_session_pages_never_skip_or_repeat(
    client: httpx.AsyncClient,
    factory: Factory,
    count: int,
    order: str,
    limit: int,
    inserts: list[int],
) -> None:
    account = await factory.account()
    existing = [(await factory.chat_session(account))["id"] for _ in range(count)]
    added: list[str] = []

    async def insert() -> None:
        added.append((await factory.chat_session(account))["id"])

    url = f"{API}/sessions"
    seen = await _walk(
        client, url, account, order=order, limit=limit, inserts=inserts, insert=insert
    )
    assert len(seen) == len(set(seen)), "a session was met twice"
    expected = existing if order == "asc" else existing[::-1]  # created in activity order
    assert [item for item in seen if item in set(existing)] == expected
    if order == "asc":
        assert set(seen) == set(existing) | set(added)  # the newest come last: all met
    else:
        assert not set(seen) & set(added)  # the newest are behind the walk

    listed = existing + added
    everything = listed if order == "asc" else listed[::-1]
    if len(everything) > 1:
        assert (
            await _walk_back(client, url, account, order=order, limit=limit, last=everything[-1])
            == everything[:-1]
        )


@API_PROPERTY
@given(count=st.integers(0, 20), **_WALKS)
async def test_message_pages_never_skip_or_repeat(
    client: httpx.AsyncClient,
    factory: Factory,
    count: int,
    order: str,
    limit: int,
    inserts: list[int],
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    existing = [m["id"] for m in await factory.messages(account, session["id"], count)]
    added: list[str] = []

    async def insert() -> None:
        added.append((await factory.message(account, session["id"]))["id"])

    url = f"{API}/sessions/{session['id']}/messages"
    seen = await _walk(
        client, url, account, order=order, limit=limit, inserts=inserts, insert=insert
    )
    assert len(seen) == len(set(seen)), "a message was met twice"
    if order == "asc":
        assert seen == existing + added  # seq order, the added ones last
    else:
        assert seen == existing[::-1]

    listed = existing + added
    expected = listed if order == "asc" else listed[::-1]
    if len(expected) > 1:
        assert (
            await _walk_back(client, url, account, order=order, limit=limit, last=expected[-1])
            == expected[:-1]
        )
