"""The floor chat-store is measured against: the same SQL per operation, and nothing else.

A bare Starlette app on asyncpg (no ORM, no validation, no auth, no cache, no bus), served by
uvicorn with one worker, over the very tables chat-store migrated. Each route issues the
statements chat-store issues for that operation, in a transaction where chat-store has one:

    POST /api/v1/sessions                          INSERT INTO chat_session ... ON CONFLICT
                                                   (id) DO NOTHING
    GET  /api/v1/sessions                          SELECT ... ORDER BY last_activity_at DESC,
                                                   id DESC LIMIT 21
    POST /api/v1/sessions/{sid}/messages           WITH reserved AS (UPDATE chat_session ...
                                                   RETURNING last_seq) INSERT INTO message
                                                   SELECT ... FROM reserved (autocommit)
    POST /api/v1/sessions/{sid}/messages/{mid}/append
                                                   WITH bumped AS (UPDATE chat_session ...),
                                                   moved AS (UPDATE message, guarded by
                                                   partial_length), chunk AS (INSERT INTO
                                                   message_chunk ...) SELECT ...
    GET  /api/v1/sessions/{sid}/messages?limit=N   SELECT ... ORDER BY seq DESC LIMIT N+1
    GET  /api/v1/sessions/{sid}/messages/{mid}/stream
                                                   SSE: the stored text, then live deltas
                                                   (an in-process fan-out; one process only)

The caller is named by an `X-User-ID` header. Run by scripts/bench.py:

    python scripts/bench_baseline.py --port 8101 --database-url postgresql://...

The same handlers also measure the stack chat-store is built on, with nothing of chat-store's
own: `--driver sqlalchemy` sends the same statements through SQLAlchemy's async engine and pool
(`exec_driver_sql`: no ORM, no statement compilation), and `--framework fastapi` routes them
through FastAPI (its router, middleware and per-route request handling; the handlers still
take the bare Request). scripts/bench.py runs `--driver sqlalchemy --framework fastapi` as the
"stack floor".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import uvicorn
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

MAX_MESSAGE_BYTES = 1024 * 1024
_OPEN = ["pending", "in_progress"]

SESSION_COLUMNS = (
    "id, user_id, title, is_favorite, status, metadata, workspace_repo, workspace_branch, "
    "workspace_path, message_count, total_tokens, last_seq, history_version, updated_version, "
    "last_message_at, last_activity_at, created_at, updated_at, ended_at"
)
MESSAGE_COLUMNS = (
    "id, session_id, user_id, seq, role, content, partial_content, partial_length, "
    "partial_bytes, status, error_message, context, metadata, token_count, model, latency_ms, "
    "created_version, version, created_at, updated_at, completed_at"
)

INSERT_SESSION = f"""
INSERT INTO chat_session ({SESSION_COLUMNS})
VALUES ($1, $2, $3, false, 'active', $4, NULL, NULL, NULL, 0, 0, 0, 0, 0, NULL, $5, $5, $5, NULL)
ON CONFLICT (id) DO NOTHING
RETURNING {SESSION_COLUMNS}
"""
LIST_SESSIONS = f"""
SELECT {SESSION_COLUMNS} FROM chat_session
WHERE user_id = $1 ORDER BY last_activity_at DESC, id DESC LIMIT $2
"""
# chat-store's single append on Postgres: seq and insert in one statement.
APPEND_ONE = """
WITH reserved AS (
    UPDATE chat_session SET message_count = message_count + 1, total_tokens = total_tokens + $4,
        last_seq = last_seq + 1, history_version = history_version + 1,
        last_message_at = $13, last_activity_at = $13, updated_at = $13
    WHERE id = $2 AND user_id = $3 RETURNING last_seq, history_version
)
INSERT INTO message (id, session_id, user_id, seq, role, content, partial_content, partial_length,
    partial_bytes, status, error_message, context, metadata, token_count, model, latency_ms,
    created_version, version, created_at, updated_at, completed_at)
SELECT $1::uuid, $2::uuid, $3::uuid, reserved.last_seq, $5::varchar, $6::varchar, $7::varchar,
    $8::integer, $9::integer, $10::varchar, NULL, NULL, $11::jsonb, $12::integer, $14::varchar,
    NULL, reserved.history_version, reserved.history_version, $13::timestamptz,
    $13::timestamptz, $15::timestamptz
FROM reserved
RETURNING seq, version
"""
# chat-store's delta on Postgres: the version bump, the guarded update (checked in SET, on the
# row as locked) and the chunk insert in one statement.
_DELTA_FITS = "status = ANY($8::varchar[]) AND partial_length = $4 AND partial_bytes + $6 <= $9"
APPEND_DELTA = f"""
WITH bumped AS (
    UPDATE chat_session SET history_version = history_version + 1
    WHERE id = $2 AND user_id = $3 RETURNING history_version
), moved AS (
    UPDATE message SET
        partial_length = CASE WHEN {_DELTA_FITS} THEN partial_length + $5 ELSE partial_length END,
        partial_bytes = CASE WHEN {_DELTA_FITS} THEN partial_bytes + $6 ELSE partial_bytes END,
        status = CASE WHEN {_DELTA_FITS} THEN 'in_progress' ELSE status END,
        updated_at = CASE WHEN {_DELTA_FITS} THEN $7::timestamptz ELSE updated_at END,
        version = CASE WHEN {_DELTA_FITS} THEN (SELECT history_version FROM bumped)
            ELSE version END
    WHERE id = $1 AND session_id = $2 AND user_id = $3 AND EXISTS (SELECT 1 FROM bumped)
    RETURNING {MESSAGE_COLUMNS}
), chunk AS (
    INSERT INTO message_chunk (message_id, start, text)
    SELECT moved.id, $4, $10::text FROM moved JOIN bumped ON moved.version = bumped.history_version
)
SELECT bumped.history_version AS bumped_version, moved.*
FROM bumped LEFT JOIN moved ON moved.version = bumped.history_version
"""
LAST_MESSAGES = f"""
SELECT {MESSAGE_COLUMNS} FROM message WHERE session_id = $1 ORDER BY seq DESC LIMIT $2
"""
MESSAGE_STATE = """
SELECT partial_content, content, status FROM message
WHERE id = $1 AND session_id = $2 AND user_id = $3
"""
MESSAGE_CHUNKS = "SELECT text FROM message_chunk WHERE message_id = $1 ORDER BY start"


def uuid7() -> uuid.UUID:
    """Time-ordered ids, as chat-store makes them (B-tree inserts stay local)."""
    value = (time.time_ns() // 1_000_000) << 80
    value |= int.from_bytes(os.urandom(10), "big") & ((1 << 80) - 1)
    value = (value & ~(0xF << 76)) | (0x7 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    return uuid.UUID(int=value)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _row(record: asyncpg.Record) -> dict[str, Any]:
    return {key: _plain(value) for key, value in record.items()}


def _user(request: Request) -> uuid.UUID:
    return uuid.UUID(request.headers["x-user-id"])


class Fanout:
    """Live deltas of each message, handed to the readers of this process."""

    def __init__(self) -> None:
        self.readers: dict[str, set[asyncio.Queue[tuple[int, str, int]]]] = {}

    def publish(self, message_id: str, start: int, delta: str, end: int) -> None:
        for queue in self.readers.get(message_id, ()):
            queue.put_nowait((start, delta, end))


async def _init_connection(connection: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await connection.set_type_codec(
            name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


def _driver_args(args: tuple[Any, ...]) -> tuple[Any, ...]:
    # SQLAlchemy's asyncpg codecs take JSON as text (its own bind processing would dump it).
    return tuple(json.dumps(arg) if isinstance(arg, dict) else arg for arg in args)


class SQLAlchemyConnection:
    """The asyncpg calls the handlers make, on a SQLAlchemy AsyncConnection."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        result = await self._connection.exec_driver_sql(sql, _driver_args(args))
        return result.mappings().first()

    async def fetch(self, sql: str, *args: Any) -> Any:
        result = await self._connection.exec_driver_sql(sql, _driver_args(args))
        return result.mappings().all()

    async def fetchval(self, sql: str, *args: Any) -> Any:
        result = await self._connection.exec_driver_sql(sql, _driver_args(args))
        return result.scalar()

    async def execute(self, sql: str, *args: Any) -> None:
        await self._connection.exec_driver_sql(sql, _driver_args(args))


class SQLAlchemyPool:
    """The asyncpg.Pool calls the handlers make, on SQLAlchemy's engine: a single statement in
    autocommit (as asyncpg runs it), or a connection for the stream's reads."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[SQLAlchemyConnection]:
        async with self.engine.connect() as connection:
            yield SQLAlchemyConnection(connection)

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        async with self._autocommit.connect() as connection:
            return await SQLAlchemyConnection(connection).fetchrow(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> Any:
        async with self._autocommit.connect() as connection:
            return await SQLAlchemyConnection(connection).fetch(sql, *args)


def create_app(
    database_url: str,
    pool_size: int,
    pool_max: int,
    *,
    driver: str = "asyncpg",
    framework: str = "starlette",
) -> Starlette:
    fanout = Fanout()
    pool: Any = None

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        nonlocal pool
        if driver == "sqlalchemy":
            # chat-store's pool: DB_POOL_SIZE kept, DB_MAX_OVERFLOW more under load.
            engine = create_async_engine(
                database_url.replace("postgresql://", "postgresql+asyncpg://", 1),
                pool_size=pool_size,
                max_overflow=pool_max - pool_size,
            )
            pool = SQLAlchemyPool(engine)
            try:
                yield
            finally:
                await engine.dispose()
            return
        pool = await asyncpg.create_pool(
            database_url, min_size=pool_size, max_size=pool_max, init=_init_connection
        )
        try:
            yield
        finally:
            await pool.close()

    def db() -> Any:
        assert pool is not None
        return pool

    async def health(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def create_session(request: Request) -> Response:
        body = json.loads(await request.body() or b"{}")
        now = datetime.now(UTC)
        record = await db().fetchrow(
            INSERT_SESSION, uuid7(), _user(request), body.get("title"), {}, now
        )
        return JSONResponse(_row(record), status_code=201)

    async def list_sessions(request: Request) -> Response:
        limit = int(request.query_params.get("limit", "20"))
        records = await db().fetch(LIST_SESSIONS, _user(request), limit + 1)
        data = [_row(record) for record in records[:limit]]
        return JSONResponse({"object": "list", "data": data, "has_more": len(records) > limit})

    async def append_message(request: Request) -> Response:
        body = json.loads(await request.body())
        session_id = uuid.UUID(request.path_params["sid"])
        user_id = _user(request)
        now = datetime.now(UTC)
        content = body.get("content")
        status = body.get("status", "complete")
        complete = status == "complete"
        text = content or ""
        message_id = uuid7()
        # One statement, in autocommit as chat-store runs it when no Idempotency-Key is given.
        appended = await db().fetchrow(
            APPEND_ONE,
            message_id,
            session_id,
            user_id,
            body.get("token_count") or 0,
            body["role"],
            content if complete else None,
            None if complete else "",
            len(text),
            len(text.encode()),
            status,
            body.get("metadata") or {},
            body.get("token_count"),
            now,
            body.get("model"),
            now if complete else None,
        )
        if appended is None:
            return JSONResponse({"code": "session_not_found"}, status_code=404)
        seq = appended["seq"]
        return JSONResponse(
            {"id": str(message_id), "session_id": str(session_id), "seq": seq, "status": status},
            status_code=201,
        )

    async def append_delta(request: Request) -> Response:
        body = json.loads(await request.body())
        session_id = uuid.UUID(request.path_params["sid"])
        message_id = uuid.UUID(request.path_params["mid"])
        user_id = _user(request)
        delta: str = body["delta"]
        offset: int = body["offset"]
        now = datetime.now(UTC)
        # One statement, in autocommit as chat-store runs a delta answered without its text.
        record = await db().fetchrow(
            APPEND_DELTA,
            message_id,
            session_id,
            user_id,
            offset,
            len(delta),
            len(delta.encode()),
            now,
            _OPEN,
            MAX_MESSAGE_BYTES,
            delta,
        )
        if record is None:
            return JSONResponse({"code": "session_not_found"}, status_code=404)
        if record["id"] is None:
            return JSONResponse({"code": "offset_mismatch"}, status_code=409)
        length = record["partial_length"]
        fanout.publish(str(message_id), offset, delta, length)
        answer = _row(record)
        del answer["bumped_version"]
        answer["length"] = length
        return JSONResponse(answer)

    async def list_messages(request: Request) -> Response:
        limit = int(request.query_params.get("limit", "20"))
        session_id = uuid.UUID(request.path_params["sid"])
        records = await db().fetch(LAST_MESSAGES, session_id, limit + 1)
        data = [_row(record) for record in records[:limit]]
        return JSONResponse({"object": "list", "data": data, "has_more": len(records) > limit})

    async def stream_message(request: Request) -> Response:
        session_id = uuid.UUID(request.path_params["sid"])
        message_id = uuid.UUID(request.path_params["mid"])
        user_id = _user(request)
        queue: asyncio.Queue[tuple[int, str, int]] = asyncio.Queue()
        readers = fanout.readers.setdefault(str(message_id), set())
        readers.add(queue)  # subscribe first, then read the store: nothing falls in between
        async with db().acquire() as connection:
            state = await connection.fetchrow(MESSAGE_STATE, message_id, session_id, user_id)
            chunks = await connection.fetch(MESSAGE_CHUNKS, message_id)
        if state is None:
            readers.discard(queue)
            return JSONResponse({"code": "message_not_found"}, status_code=404)
        text = (state["partial_content"] or "") + "".join(row["text"] for row in chunks)

        async def events() -> AsyncIterator[bytes]:
            position = len(text)
            try:
                if text:
                    yield _sse("delta", {"delta": text, "offset": position}, position)
                while True:
                    start, delta, end = await queue.get()
                    if end <= position:
                        continue
                    yield _sse("delta", {"delta": delta[position - start :], "offset": end}, end)
                    position = end
            finally:
                readers.discard(queue)

        return StreamingResponse(events(), media_type="text/event-stream")

    routes: list[tuple[str, Any, str]] = [
        ("/health", health, "GET"),
        ("/api/v1/sessions", create_session, "POST"),
        ("/api/v1/sessions", list_sessions, "GET"),
        ("/api/v1/sessions/{sid}/messages", append_message, "POST"),
        ("/api/v1/sessions/{sid}/messages", list_messages, "GET"),
        ("/api/v1/sessions/{sid}/messages/{mid}/append", append_delta, "POST"),
        ("/api/v1/sessions/{sid}/messages/{mid}/stream", stream_message, "GET"),
    ]
    if framework == "fastapi":
        app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
        for path, endpoint, method in routes:
            app.add_api_route(path, endpoint, methods=[method])
        return app
    return Starlette(
        routes=[Route(path, endpoint, methods=[method]) for path, endpoint, method in routes],
        lifespan=lifespan,
    )


def _sse(event: str, data: dict[str, Any], event_id: int) -> bytes:
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event}\r\ndata: {payload}\r\nid: {event_id}\r\n\r\n".encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8101)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"), required=False)
    # asyncpg: --pool-size opened at start, up to --pool-max, kept once opened. SQLAlchemy (the
    # stack floor): --pool-size kept, up to --pool-max opened under load and closed when returned.
    parser.add_argument("--pool-size", type=int, default=10)
    parser.add_argument("--pool-max", type=int, default=30)
    parser.add_argument("--driver", choices=["asyncpg", "sqlalchemy"], default="asyncpg")
    parser.add_argument("--framework", choices=["starlette", "fastapi"], default="starlette")
    args = parser.parse_args()
    if not args.database_url:
        parser.error("--database-url (or DATABASE_URL) is required")
    url = args.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    app = create_app(
        url, args.pool_size, args.pool_max, driver=args.driver, framework=args.framework
    )
    uvicorn.run(app, host=args.host, port=args.port, workers=1, log_level="warning")


if __name__ == "__main__":
    main()
