"""Set-up: the database, the servers, and the seeded data (over the API, and in SQL)."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import redis
import redis.asyncio as aredis

from chat_store.services import history_cache

from .api import append_history, create_sessions, register
from .config import (
    APPEND_SESSIONS,
    BIN,
    COLD_SESSIONS,
    CONTENT,
    HISTORY_MESSAGES,
    HOT_SESSIONS,
    LIST_SESSIONS,
    PG_ADMIN_URL,
    REDIS_URL,
    ROOT,
    SIZES,
    BenchError,
    log,
)
from .processes import Server, free_port, start_process, wait_ready
from .systems import Target


class SetUp:
    """Set-up steps of a Bench (see runner.py)."""

    async def create_database(self) -> None:
        admin = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await admin.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await admin.close()
        self.cleanup.push("drop database", self._drop_database)
        base = PG_ADMIN_URL.rsplit("/", 1)[0]
        self.database_url = f"{base}/{self.database}"
        log(f"database {self.database}, redis prefix {self.redis_prefix}")

    def _drop_database(self) -> None:
        async def drop() -> None:
            admin = await asyncpg.connect(PG_ADMIN_URL)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            finally:
                await admin.close()

        # A thread of its own: this also runs while an event loop is still running.
        with ThreadPoolExecutor(1) as worker:
            worker.submit(asyncio.run, drop()).result()
        log(f"dropped database {self.database}")

    def _delete_redis_keys(self) -> None:
        client = redis.Redis.from_url(REDIS_URL)
        deleted = 0
        try:
            batch: list[bytes] = []
            for key in client.scan_iter(match=f"{self.redis_prefix}*", count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    deleted += client.unlink(*batch)
                    batch = []
            if batch:
                deleted += client.unlink(*batch)
        finally:
            client.close()
        log(f"deleted {deleted} redis keys under {self.redis_prefix}")

    def pool_settings(self) -> tuple[int, int]:
        """chat-store's pool as this run configures it: kept, and at most open."""
        from chat_store.settings import Settings

        fields = Settings.model_fields
        env = self.config.service_env  # the service's pool settings come only from these
        size = int(env.get("DB_POOL_SIZE", fields["db_pool_size"].default))
        overflow = int(env.get("DB_MAX_OVERFLOW", fields["db_max_overflow"].default))
        return size, size + overflow

    def service_env(self) -> dict[str, str]:
        from chat_store.settings import Settings

        names = {name.upper() for name in Settings.model_fields}
        env = {key: value for key, value in os.environ.items() if key.upper() not in names}
        env.update(
            APP_ENV="production",
            JWT_SECRET=secrets.token_urlsafe(36),  # 48 characters
            LOG_LEVEL="WARNING",
            RATE_LIMIT_ENABLED="false",
            DATA_DIR=str(self.workdir / "data"),
            METRICS_ENABLED="true",
        )
        if not self.config.embedded:
            env.update(
                DATABASE_URL=self.database_url,
                REDIS_URL=REDIS_URL,
                REDIS_PREFIX=self.redis_prefix,
            )
        env.update(self.config.service_env)
        return env

    async def migrate(self) -> None:
        env = self.service_env()
        process = await asyncio.create_subprocess_exec(
            str(BIN / "chat-store"),
            "migrate",
            cwd=self.workdir,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        if process.returncode != 0:
            raise BenchError(f"chat-store migrate failed:\n{output.decode()}")

    async def start_servers(self) -> None:
        if not self.config.embedded:
            self.redis = aredis.Redis.from_url(REDIS_URL)
            # Pushed before the server starts, so it runs after the server has stopped.
            self.cleanup.push("delete redis keys", self._delete_redis_keys)
        port = free_port()
        service = start_process(
            "chat-store",
            [
                str(BIN / "chat-store"),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
                "--no-migrate",
            ],
            env=self.service_env(),
            cwd=self.workdir,
            port=port,
            cleanup=self.cleanup,
        )
        await wait_ready(service, "/health/ready")
        log(f"chat-store serving on {service.url} (pid {service.pid})")
        if not self.config.embedded:
            self.baseline = Target("baseline", await self._start_bare("baseline"), ("", ""))
            # The same handlers on FastAPI + SQLAlchemy with chat-store's pool: what the stack
            # itself costs before any of chat-store's own work (throughput runs only).
            pool_size, pool_max = self.pool_settings()
            floor = await self._start_bare(
                "stack floor",
                "--driver",
                self.config.floor_driver,
                "--framework",
                "fastapi",
                "--pool-size",
                str(pool_size),
                "--pool-max",
                str(pool_max),
            )
            self.floor = Target("stack floor", floor, ("", ""))
        self.service = Target("chat-store", service, ("X-API-Key", ""))

    async def _start_bare(self, label: str, *options: str) -> Server:
        port = free_port()
        server = start_process(
            label,
            [
                sys.executable,
                str(ROOT / "scripts" / "bench_baseline.py"),
                "--port",
                str(port),
                "--database-url",
                self.database_url,
                *options,
            ],
            env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
            cwd=self.workdir,
            port=port,
            cleanup=self.cleanup,
        )
        await wait_ready(server, "/health")
        log(f"{label} serving on {server.url} (pid {server.pid})")
        return server

    async def seed_data(self) -> None:
        assert self.service is not None
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=self.service.server.url, timeout=120) as client:
            self.seed.user_id, self.seed.api_key = await register(client, "bench")
            self.seed.list_user_id, self.seed.list_api_key = await register(client, "list")
        self.service.auth_header = ("X-API-Key", self.seed.api_key)
        for bare in (self.baseline, self.floor):
            if bare is not None:
                bare.auth_header = ("X-User-ID", self.seed.user_id)

        async with self.service_client() as client:
            self.seed.append_sessions = await create_sessions(client, APPEND_SESSIONS, "append")
            (self.seed.contention_session,) = await create_sessions(client, 1, "contention")
            self.seed.hot_sessions = await create_sessions(client, HOT_SESSIONS, "hot")
            for session in self.seed.hot_sessions:
                await append_history(client, session, HISTORY_MESSAGES)
            (
                self.seed.size_sessions[SIZES[0]],
                self.seed.size_sessions[SIZES[1]],
            ) = await create_sessions(client, 2, "size")
            await append_history(client, self.seed.size_sessions[SIZES[0]], SIZES[0])
            await append_history(client, self.seed.size_sessions[SIZES[1]], SIZES[1])
            (self.seed.size_sessions[SIZES[2]],) = await create_sessions(client, 1, "size")
        async with self.service_client(self.seed.list_api_key) as client:
            await create_sessions(client, LIST_SESSIONS, "listed")
        log(f"seeded through the API in {time.monotonic() - started:.1f} s")

        started = time.monotonic()
        big = self.seed.size_sessions[SIZES[2]]
        if self.config.embedded:
            await asyncio.to_thread(self._sqlite_history, big, SIZES[2])
        else:
            await self._pg_history(big, SIZES[2])
            self.seed.cold_sessions = await self._pg_cold_pool(COLD_SESSIONS)
            self.seed.cold_keys = await self._history_keys(self.seed.cold_sessions)
            sizes = list(self.seed.size_sessions.items())
            keys = await self._history_keys([session for _, session in sizes])
            self.seed.size_keys = {size: key for (size, _), key in zip(sizes, keys, strict=True)}
        log(f"seeded with SQL in {time.monotonic() - started:.1f} s")

    def service_client(self, key: str | None = None) -> httpx.AsyncClient:
        assert self.service is not None
        return httpx.AsyncClient(
            base_url=self.service.server.url,
            headers={"X-API-Key": key or self.seed.api_key},
            timeout=120,
            limits=httpx.Limits(max_connections=16),
        )

    async def _pg_history(self, session_id: str, count: int) -> None:
        connection = await asyncpg.connect(self.database_url)
        try:
            async with connection.transaction():
                await connection.execute(
                    _PG_INSERT_HISTORY,
                    [uuid.UUID(session_id)],
                    uuid.UUID(self.seed.user_id),
                    count,
                    CONTENT,
                )
                await connection.execute(_PG_SET_COUNTERS, [uuid.UUID(session_id)], count)
            await connection.execute("ANALYZE message")
        finally:
            await connection.close()

    async def _pg_cold_pool(self, sessions: int) -> list[str]:
        connection = await asyncpg.connect(self.database_url)
        try:
            async with connection.transaction():
                rows = await connection.fetch(
                    _PG_INSERT_SESSIONS, uuid.UUID(self.seed.user_id), sessions
                )
                ids = [row["id"] for row in rows]
                await connection.execute(
                    _PG_INSERT_HISTORY,
                    ids,
                    uuid.UUID(self.seed.user_id),
                    HISTORY_MESSAGES,
                    CONTENT,
                )
                await connection.execute(_PG_SET_COUNTERS, ids, HISTORY_MESSAGES)
            await connection.execute("ANALYZE")
        finally:
            await connection.close()
        return [str(session_id) for session_id in ids]

    async def _history_keys(self, sessions: list[str]) -> list[str]:
        """chat-store's Redis key of each session's cached history, as the service makes it."""
        connection = await asyncpg.connect(self.database_url)
        try:
            rows = await connection.fetch(
                "SELECT id, created_at FROM chat_session WHERE id = ANY($1::uuid[])",
                [uuid.UUID(session) for session in sessions],
            )
        finally:
            await connection.close()
        created = {str(row["id"]): row["created_at"] for row in rows}
        return [
            self.redis_prefix + history_cache.cache_key(uuid.UUID(session), created[session])
            for session in sessions
        ]

    def _sqlite_history(self, session_id: str, count: int) -> None:
        import sqlite3

        now = datetime.now(UTC).replace(tzinfo=None)
        user = uuid.UUID(self.seed.user_id).hex
        session = uuid.UUID(session_id).hex
        rows = []
        for seq in range(1, count + 1):
            text = f"Message {seq}: {CONTENT}"
            at = (now + timedelta(microseconds=seq)).isoformat(sep=" ")
            role = "user" if seq % 2 else "assistant"
            size = len(text.encode())
            rows.append(
                (uuid.uuid4().hex, session, user, seq, role, text, len(text), size, at, at, at)
            )
        connection = sqlite3.connect(self.sqlite_path, timeout=60)
        try:
            connection.execute("PRAGMA busy_timeout=60000")
            with connection:
                connection.executemany(_SQLITE_INSERT_HISTORY, rows)
                connection.execute(
                    "UPDATE chat_session SET last_seq = ?, message_count = ?, "
                    "history_version = history_version + 1 WHERE id = ?",
                    (count, count, session),
                )
        finally:
            connection.close()


_PG_INSERT_SESSIONS = """
INSERT INTO chat_session (id, user_id, title, is_favorite, status, metadata, message_count,
    total_tokens, last_seq, history_version, updated_version, last_activity_at, created_at,
    updated_at)
SELECT gen_random_uuid(), $1, 'cold ' || g, false, 'active', '{}'::jsonb, 0, 0, 0, 0, 0,
    now(), clock_timestamp(), now()
FROM generate_series(1, $2) AS g
RETURNING id
"""

# The same rows the batch endpoint writes: complete messages, user and assistant in turn.
_PG_INSERT_HISTORY = """
INSERT INTO message (id, session_id, user_id, seq, role, content, partial_content,
    partial_length, partial_bytes, status, metadata, created_version, version, created_at,
    updated_at, completed_at)
SELECT gen_random_uuid(), s, $2, g, CASE WHEN g % 2 = 1 THEN 'user' ELSE 'assistant' END,
    t.text, NULL, length(t.text), octet_length(t.text), 'complete', '{}'::jsonb, 1, 1,
    t.at, t.at, t.at
FROM unnest($1::uuid[]) AS s
CROSS JOIN generate_series(1, $3::int) AS g
CROSS JOIN LATERAL (
    SELECT 'Message ' || g || ': ' || $4::text AS text,
           now() - interval '1 day' + g * interval '1 millisecond' AS at
) AS t
"""

_PG_SET_COUNTERS = """
UPDATE chat_session SET last_seq = $2, message_count = $2,
    history_version = history_version + 1, last_message_at = now(), updated_at = now()
WHERE id = ANY($1::uuid[])
"""

_SQLITE_INSERT_HISTORY = """
INSERT INTO message (id, session_id, user_id, seq, role, content, partial_content,
    partial_length, partial_bytes, status, metadata, created_version, version, created_at,
    updated_at, completed_at)
VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?, 'complete', '{}', 1, 1, ?, ?, ?)
"""
