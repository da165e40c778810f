"""Retries that arrive at the same time: one write, one answer for all."""

from __future__ import annotations

import asyncio

import httpx

from tests.factories import API, Factory


async def test_concurrent_retries_with_one_key_write_once(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    url = f"{API}/sessions/{session['id']}/messages"
    for attempt in range(3):
        headers = {**account.headers, "Idempotency-Key": f"turn-{attempt}"}
        answers = await asyncio.gather(
            *(
                client.post(url, json={"role": "user", "content": "hi"}, headers=headers)
                for _ in range(8)
            )
        )
        assert {a.status_code for a in answers} == {201}
        assert len({a.json()["id"] for a in answers}) == 1
        assert {a.json()["seq"] for a in answers} == {attempt + 1}
    stored = (await client.get(url, headers=account.headers)).json()["data"]
    assert [m["seq"] for m in stored] == [1, 2, 3]

    headers = {**account.headers, "Idempotency-Key": "one-session"}
    answers = await asyncio.gather(
        *(client.post(f"{API}/sessions", json={"title": "t"}, headers=headers) for _ in range(8))
    )
    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["id"] for a in answers}) == 1
    listed = (await client.get(f"{API}/sessions", headers=account.headers)).json()["data"]
    assert len(listed) == 2
