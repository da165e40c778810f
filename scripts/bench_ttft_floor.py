"""The floor under chat-store's time to first delta: the model's stream relayed, and no more.

    POST /chat {"content", "model", "history"?}
                                      the provider called through the official SDK as chat-store
                                      calls it (AsyncOpenAI's post of the request's JSON, read
                                      as the JSON the SDK decodes, usage asked for), with
                                      `history` before the message; each text chunk relayed as
                                      an SSE `delta` event, then `done`

A bare Starlette app served by uvicorn with one worker, as `chat-store serve --workers 1` is:
no authentication, no validation, no store, no bus. With `--database-url`, it also writes the
turn on Postgres, through asyncpg with no ORM, in one of two ways (`--turn`):

- `least`: the least a stored turn does: one statement before the provider is called (the
  answer inserted), committed by itself;
- `round-trips`: chat-store's round trips, with statements of the same kinds on tables of its
  own: BEGIN, the key claimed, the messages inserted, the history and the live generations
  read, then the provider called; the lease and the key's answer written and the transaction
  committed while the call is on its way.

Either way the text is written as chat-store writes it (the first chunk at once, then what
arrives coalesced for 40 ms), each write committed by itself, and relayed only once written.
Run by scripts/bench_generation.py (`--floors`):

    python scripts/bench_ttft_floor.py --port 8102 --llm-base-url http://127.0.0.1:8001/v1 \
        [--database-url postgresql://root@127.0.0.1:5432/bench --turn least|round-trips]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import openai
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

FLUSH_SECONDS = 0.04  # chat-store's GENERATION_FLUSH_SECONDS default
TABLE = "bench_floor_answer"
SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} "
    "(id uuid PRIMARY KEY, session uuid, seq int, role text, text text NOT NULL DEFAULT '', "
    "status text NOT NULL)",
    "CREATE INDEX IF NOT EXISTS bench_floor_answer_session ON bench_floor_answer (session, seq)",
    "CREATE TABLE IF NOT EXISTS bench_floor_key (key text PRIMARY KEY, response text)",
    "CREATE TABLE IF NOT EXISTS bench_floor_lease "
    "(answer uuid PRIMARY KEY, session uuid, owner text, until timestamptz)",
)


async def start_turn(connection: asyncpg.Connection, answer_id: uuid.UUID, content: str) -> Any:
    """chat-store's statements before the provider call, in its transaction (begun here)."""
    transaction = connection.transaction()
    await transaction.start()
    session = uuid.uuid4()
    await connection.execute(
        "INSERT INTO bench_floor_key (key) VALUES ($1) ON CONFLICT DO NOTHING", str(answer_id)
    )
    await connection.fetch(
        f"INSERT INTO {TABLE} (id, session, seq, role, text, status) "
        "VALUES ($1, $3, 1, 'user', $2, 'complete'), ($4, $3, 2, 'assistant', '', 'pending') "
        "RETURNING id, seq",
        uuid.uuid4(),
        content,
        session,
        answer_id,
    )
    await connection.fetch(
        f"SELECT id, role, text FROM {TABLE} WHERE session = $1 AND seq < 2 "
        "ORDER BY seq DESC LIMIT 50",
        session,
    )
    await connection.fetch(
        "SELECT answer FROM bench_floor_lease WHERE session = $1 AND until > now()", session
    )
    return transaction, session


async def finish_turn(
    connection: asyncpg.Connection, transaction: Any, answer_id: uuid.UUID, session: uuid.UUID
) -> None:
    """chat-store's statements after the provider call is made: the lease, the key, COMMIT."""
    await connection.execute(
        "INSERT INTO bench_floor_lease VALUES ($1, $2, 'floor', now() + interval '30 seconds')",
        answer_id,
        session,
    )
    await connection.execute(
        "UPDATE bench_floor_key SET response = 'turn' WHERE key = $1", str(answer_id)
    )
    await transaction.commit()


def chunk_text(chunk: Any) -> str | None:
    """The text of a `chat.completion.chunk` as the SDK decoded its JSON."""
    choices = chunk.get("choices") if isinstance(chunk, dict) else None
    if not choices:
        return None
    content = (choices[0].get("delta") or {}).get("content")
    return content if isinstance(content, str) and content else None


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def build_app(llm_base_url: str, database_url: str | None, turn: str) -> Starlette:
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        state["llm"] = openai.AsyncOpenAI(base_url=llm_base_url, api_key="none", max_retries=0)
        if database_url is not None:
            pool = await asyncpg.create_pool(database_url, min_size=4, max_size=20)
            for statement in SCHEMA:
                await pool.execute(statement)
            state["pool"] = pool
        try:
            yield
        finally:
            await state["llm"].close()
            if "pool" in state:
                await state["pool"].close()

    async def chat(request: Request) -> StreamingResponse:
        body = await request.json()
        pool: asyncpg.Pool | None = state.get("pool")
        answer_id = uuid.uuid4()
        committed: asyncio.Task[None] | None = None
        if pool is not None and turn == "least":
            await pool.execute(
                f"INSERT INTO {TABLE} (id, status) VALUES ($1, 'pending')", answer_id
            )
        elif pool is not None:
            connection = await pool.acquire()
            try:
                transaction, session = await start_turn(connection, answer_id, body["content"])
            except BaseException:
                await pool.release(connection)
                raise

            async def commit() -> None:
                try:
                    await finish_turn(connection, transaction, answer_id, session)
                finally:
                    await pool.release(connection)

        asked = {"role": "user", "content": body["content"]}
        call = state["llm"].post(
            "/chat/completions",
            body={
                "model": body["model"],
                "messages": [*body.get("history", []), asked],
                "stream": True,
                "stream_options": {"include_usage": True},
            },
            options={"security": {"bearer_auth": True}},
            cast_to=object,
            stream=True,
            stream_cls=openai.AsyncStream[object],
        )
        if pool is not None and turn != "least":
            # As chat-store: the call's task runs first (it was made first), the turn's last
            # writes and its commit meanwhile; the text is written once they are done.
            calling = asyncio.create_task(call)
            committed = asyncio.create_task(commit())
            try:
                stream = await calling
            finally:
                await committed
        else:
            stream = await call

        async def relay() -> AsyncIterator[bytes]:
            if pool is None:
                async for chunk in stream:
                    if text := chunk_text(chunk):
                        yield sse("delta", {"delta": text})
                yield sse("done", {"status": "complete"})
                return
            async for text in stored(pool, answer_id, stream):
                yield sse("delta", {"delta": text})
            yield sse("done", {"status": "complete"})

        return StreamingResponse(relay(), media_type="text/event-stream")

    async def health(_: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    routes = [Route("/chat", chat, methods=["POST"]), Route("/health", health)]
    return Starlette(routes=routes, lifespan=lifespan)


async def stored(pool: asyncpg.Pool, answer_id: uuid.UUID, stream: Any) -> AsyncIterator[str]:
    """The answer's text as chat-store hands it to its client: each piece once written."""
    buffer: list[str] = []
    changed = asyncio.Event()

    async def read() -> None:
        try:
            async for chunk in stream:
                if text := chunk_text(chunk):
                    buffer.append(text)
                    changed.set()
        finally:
            changed.set()

    reader = asyncio.create_task(read())
    try:
        while True:
            if not buffer and not reader.done():
                await changed.wait()
            text, buffer[:] = "".join(buffer), []
            changed.clear()
            if text:
                await pool.execute(
                    f"UPDATE {TABLE} SET text = text || $2, status = 'in_progress' WHERE id = $1",
                    answer_id,
                    text,
                )
                yield text
            if reader.done() and not buffer:
                break
            await asyncio.wait({reader}, timeout=FLUSH_SECONDS)
        await reader
        await pool.execute(f"UPDATE {TABLE} SET status = 'complete' WHERE id = $1", answer_id)
    finally:
        reader.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--llm-base-url", required=True)
    parser.add_argument("--database-url", help="postgresql://...: the turn's writes")
    parser.add_argument("--turn", choices=("least", "round-trips"), default="least")
    args = parser.parse_args()
    uvicorn.run(
        build_app(args.llm_base_url, args.database_url, args.turn),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
