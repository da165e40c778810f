"""Test backends: each run gets its own Postgres database or SQLite file, and its own Redis prefix.

TEST_BACKEND=sqlite (default): SQLite file + in-process cache.
TEST_BACKEND=postgres: a fresh database on TEST_PG_ADMIN_URL's server + Redis at TEST_REDIS_URL.
Nothing is skipped when a service is missing: the run fails and says which one.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from redis.asyncio import Redis

from chat_store import migrate

BACKEND = os.environ.get("TEST_BACKEND", "sqlite")
PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://root@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@dataclass(frozen=True)
class Backend:
    name: str
    database_url: str
    redis_url: str | None
    redis_prefix: str
    data_dir: Path


def _pg_url(database: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{database}"


async def _pg_admin(sql: str) -> None:
    try:
        connection = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        raise RuntimeError(
            f"TEST_BACKEND=postgres needs Postgres at {PG_ADMIN_URL}: {exc!r}"
        ) from exc
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def _check_redis() -> None:
    client = Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except Exception as exc:
        raise RuntimeError(f"TEST_BACKEND=postgres needs Redis at {REDIS_URL}: {exc!r}") from exc
    finally:
        await client.aclose()


async def _drop_redis_prefix(prefix: str) -> None:
    client = Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@asynccontextmanager
async def provision(label: str = "t") -> AsyncIterator[Backend]:
    """A migrated, empty database (and Redis prefix) that is removed afterwards."""
    suffix = secrets.token_hex(4)
    with tempfile.TemporaryDirectory(prefix=f"chat-store-{label}-") as tmp:
        data_dir = Path(tmp)
        if BACKEND == "sqlite":
            url = f"sqlite+aiosqlite:///{data_dir / 'test.db'}"
            await asyncio.to_thread(migrate.upgrade, url)
            yield Backend("sqlite", url, None, f"cs-{label}-{suffix}:", data_dir)
            return
        if BACKEND != "postgres":
            raise RuntimeError(f"unknown TEST_BACKEND {BACKEND!r}")
        await _check_redis()
        database = f"chat_store_{label}_{suffix}"
        await _pg_admin(f'CREATE DATABASE "{database}"')
        url = _pg_url(database).replace("postgresql://", "postgresql+asyncpg://", 1)
        prefix = f"cs-{label}-{suffix}:"
        try:
            await asyncio.to_thread(migrate.upgrade, url)
            yield Backend("postgres", url, REDIS_URL, prefix, data_dir)
        finally:
            await _pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            await _drop_redis_prefix(prefix)
