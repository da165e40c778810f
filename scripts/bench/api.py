"""Requests the bench sends to chat-store itself: accounts, sessions, history, deltas."""

from __future__ import annotations

import asyncio
import secrets
import time

import httpx

from .config import BATCH, CONTENT, PASSWORD, BenchError


def expect(response: httpx.Response, status: int) -> None:
    if response.status_code != status:
        raise BenchError(
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code}: {response.text[:500]}"
        )


def check_last_page(response: httpx.Response, newest_seq: int) -> None:
    """The answer is the newest 50 messages, newest first: the read measured the right thing."""
    data = response.json()["data"]
    seqs = [item["seq"] for item in data]
    if len(seqs) != 50 or seqs[0] != newest_seq or seqs != sorted(seqs, reverse=True):
        raise BenchError(f"unexpected last page: {len(seqs)} messages, seqs from {seqs[:3]}")


async def register(client: httpx.AsyncClient, label: str) -> tuple[str, str]:
    """A new user with an API key: (user id, key)."""
    email = f"{label}-{secrets.token_hex(4)}@bench.example.com"
    response = await client.post(
        "/api/v1/auth/register", json={"email": email, "password": PASSWORD}
    )
    expect(response, 201)
    user_id = str(response.json()["id"])
    response = await client.post(
        "/api/v1/auth/token", data={"username": email, "password": PASSWORD}
    )
    expect(response, 200)
    token = response.json()["access_token"]
    response = await client.post(
        "/api/v1/api-keys",
        json={"name": f"bench {label}"},
        headers={"Authorization": f"Bearer {token}"},
    )
    expect(response, 201)
    return user_id, str(response.json()["key"])


async def create_sessions(client: httpx.AsyncClient, count: int, label: str) -> list[str]:
    semaphore = asyncio.Semaphore(8)

    async def one(index: int) -> str:
        async with semaphore:
            response = await client.post(
                "/api/v1/sessions", json={"title": f"{label} {index}", "metadata": {}}
            )
        expect(response, 201)
        return str(response.json()["id"])

    return list(await asyncio.gather(*(one(index) for index in range(count))))


async def append_history(client: httpx.AsyncClient, session: str, count: int) -> None:
    """`count` complete messages through the batch endpoint, 100 at a time, in order."""
    for start in range(1, count + 1, BATCH):
        messages = [
            {"role": "user" if seq % 2 else "assistant", "content": f"Message {seq}: {CONTENT}"}
            for seq in range(start, min(count, start + BATCH - 1) + 1)
        ]
        response = await client.post(
            f"/api/v1/sessions/{session}/messages/batch", json={"messages": messages}
        )
        expect(response, 201)


async def stream_deltas(
    client: httpx.AsyncClient, session: str, message: str, delta: str, count: int
) -> list[float]:
    """Append `count` deltas one after another; the time each one took."""
    path = f"/api/v1/sessions/{session}/messages/{message}/append"
    timings = []
    offset = 0
    for _ in range(count):
        started = time.perf_counter()
        response = await client.post(path, json={"delta": delta, "offset": offset})
        timings.append(time.perf_counter() - started)
        expect(response, 200)
        offset += len(delta)
        if response.json()["length"] != offset:
            raise BenchError(f"stored length {response.json()['length']}, expected {offset}")
    return timings
