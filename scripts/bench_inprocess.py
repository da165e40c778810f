"""CPU per request of one operation, in process: no sockets, no load generator, no other side.

The app is driven over httpx's ASGI transport (the test client's own cost, about 0.6 ms per
request here, is included), one request at a time, against the database and Redis given. It
answers "did this change make a request cheaper" with less noise than a load run, and with
--profile shows where the time goes (cProfile). Compare two commits by putting the other tree's
src/ first on PYTHONPATH:

    .venv/bin/chat-store migrate    # with DATABASE_URL set: the schema must be there
    DATABASE_URL=postgresql://... REDIS_URL=redis://127.0.0.1:6379/0 \\
        .venv/bin/python scripts/bench_inprocess.py delta --requests 500
    git worktree add /tmp/old <commit> && PYTHONPATH=/tmp/old/src .venv/bin/python ...

Operations: create (session), append (message), delta (Prefer: return=minimal), read (last 50,
cache hit), health. Each run registers its own user; its rows stay in the database.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import secrets
import time
from collections.abc import Awaitable, Callable

import httpx

from chat_store.main import create_app
from chat_store.settings import Settings

API = "/api/v1"
TEXT = "Why does the billing test fail on CI? " * 5


async def run(operation: str, requests: int, profile: bool, pattern: str) -> None:
    settings = Settings(
        app_env="production",
        database_url=os.environ["DATABASE_URL"],
        redis_url=os.environ.get("REDIS_URL") or None,
        redis_prefix=f"inprocess-{secrets.token_hex(4)}:",
        jwt_secret=secrets.token_urlsafe(36),
        log_level="WARNING",
        rate_limit_enabled=False,
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://bench") as client,
    ):
        one = await _prepare(client, operation)
        for _ in range(100):
            await one()
        started = time.process_time()
        for _ in range(requests):
            await one()
        cpu_ms = (time.process_time() - started) / requests * 1000
        print(f"{operation}: {cpu_ms:.2f} ms CPU per request ({requests} requests)")
        if profile:
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(requests):
                await one()
            profiler.disable()
            stats = pstats.Stats(profiler)
            stats.sort_stats("cumulative").print_stats(pattern, 40)


async def _prepare(client: httpx.AsyncClient, operation: str) -> Callable[[], Awaitable[None]]:
    email = f"inprocess-{secrets.token_hex(6)}@example.com"
    password = secrets.token_urlsafe(12)
    registered = await client.post(
        f"{API}/auth/register", json={"email": email, "password": password}
    )
    registered.raise_for_status()
    token = await client.post(f"{API}/auth/token", data={"username": email, "password": password})
    bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
    key = await client.post(f"{API}/api-keys", json={"name": "in-process bench"}, headers=bearer)
    headers = {"X-API-Key": key.json()["key"]}
    session = await client.post(f"{API}/sessions", json={}, headers=headers)
    messages = f"{API}/sessions/{session.json()['id']}/messages"
    for _ in range(60):
        await client.post(messages, json={"role": "user", "content": TEXT}, headers=headers)
    pending = await client.post(
        messages, json={"role": "assistant", "status": "pending"}, headers=headers
    )
    append_url = f"{messages}/{pending.json()['id']}/append"
    offset = 0

    async def one() -> None:
        nonlocal offset
        if operation == "create":
            answer = await client.post(
                f"{API}/sessions", json={"title": "Benchmark session"}, headers=headers
            )
        elif operation == "append":
            answer = await client.post(
                messages, json={"role": "user", "content": TEXT}, headers=headers
            )
        elif operation == "delta":
            answer = await client.post(
                append_url,
                json={"offset": offset, "delta": "x" * 100},
                headers={**headers, "Prefer": "return=minimal"},
            )
            offset = answer.json()["length"]
        elif operation == "read":
            answer = await client.get(f"{messages}?order=desc&limit=50", headers=headers)
        else:
            answer = await client.get("/health")
        answer.raise_for_status()

    return one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("operation", choices=["create", "append", "delta", "read", "health"])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--profile", action="store_true", help="then profile as many more")
    parser.add_argument(
        "--pattern", default="chat_store|solve_dependencies", help="functions to print"
    )
    args = parser.parse_args()
    asyncio.run(run(args.operation, args.requests, args.profile, args.pattern))


if __name__ == "__main__":
    main()
