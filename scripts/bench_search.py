"""Search benchmark: GET /api/v1/search against a real `chat-store serve` process.

Postgres: 1,000,000 messages (mixed prose and code, about 300 characters each) in 10,000
sessions of 20 users, seeded with SQL at migration 0001 (before the search index exists). Then:

1. `chat-store migrate` to head on that table, timed: the batched backfills and the
   CONCURRENTLY built indexes (what operators pay, docs/operations.md);
2. VACUUM FULL ANALYZE, timed: the backfills rewrote every row, leaving the table about twice
   the size of one that grew with its index;
3. the indexes' and vectors' sizes;
4. searches, 8 concurrent: one, two and three words and a phrase, rare and common terms apart,
   p50/p99 each, and the CPU each search cost (the server's, the machine's); then one at a time;
5. append throughput with the search index, then without it (its triggers off, its index
   dropped), one run each, right after one another.

SQLite: 100,000 messages the same way (seeded at 0001, migrated), searches p50/p99.

    .venv/bin/python scripts/bench_search.py            # both (about 15 minutes here)
    .venv/bin/python scripts/bench_search.py --sqlite-only --requests 100

The Postgres server is BENCH_PG_ADMIN_URL's (default: the one on 127.0.0.1:5432); its
shared_buffers, printed with the results, decides whether a user's matches are read from
Postgres' buffers or through the kernel's cache (docs/benchmarks.md, "Search").

The load generator runs in this process, on the same machine as the server and the database:
on a small machine they share the cores, so the latencies include that contention. It sends the
concurrent searches over lean keep-alive connections of its own (bench/lean_http.py), which
cost a tenth of httpx's CPU per request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from bench.api import register  # scripts/bench/, next to this file
from bench.config import BIN, PG_ADMIN_URL, log
from bench.lean_http import LeanConnection
from bench.processes import (
    Cleanup,
    Server,
    cpu_seconds,
    free_port,
    machine_busy_seconds,
    percentile,
    start_process,
    wait_ready,
)

from chat_store import migrate

USERS = 20
CONCURRENCY = 8
ALONE_REQUESTS = 40
SENTENCES = 40_000
SENTENCES_PER_MESSAGE = 6  # about 300 characters a message

# --- text: prose and code, words drawn with falling frequency (rank k about 1/k)

NOUNS = [
    "test",
    "fixture",
    "error",
    "function",
    "request",
    "database",
    "session",
    "user",
    "file",
    "config",
    "module",
    "build",
    "cache",
    "query",
    "server",
    "client",
    "token",
    "message",
    "response",
    "timeout",
    "connection",
    "pool",
    "worker",
    "migration",
    "schema",
    "index",
    "column",
    "table",
    "branch",
    "commit",
    "deploy",
    "container",
    "image",
    "volume",
    "network",
    "proxy",
    "certificate",
    "secret",
    "key",
    "header",
    "cookie",
    "endpoint",
    "handler",
    "middleware",
    "router",
    "logger",
    "metric",
    "trace",
    "span",
    "queue",
    "event",
    "stream",
    "buffer",
    "socket",
    "thread",
    "process",
    "signal",
    "lock",
    "transaction",
    "rollback",
    "snapshot",
    "replica",
    "shard",
    "partition",
    "backup",
    "restore",
    "upgrade",
    "release",
    "invoice",
    "billing",
    "payment",
    "customer",
    "account",
    "order",
    "cart",
    "product",
    "price",
    "discount",
    "coupon",
    "clock",
    "calendar",
    "timezone",
    "locale",
    "encoding",
    "parser",
    "lexer",
    "compiler",
    "linter",
    "formatter",
    "benchmark",
    "profiler",
    "allocator",
    "collector",
    "iterator",
    "generator",
    "decorator",
    "descriptor",
    "walrus",
    "okapi",
    "narwhal",
    "pangolin",
    "axolotl",
    "quokka",
]
VERBS = [
    "fails",
    "raises",
    "returns",
    "breaks",
    "hangs",
    "retries",
    "times",
    "out",
    "leaks",
    "blocks",
    "crashes",
    "passes",
    "works",
    "loads",
    "saves",
    "parses",
    "renders",
    "caches",
    "flushes",
    "rotates",
    "expires",
    "refreshes",
    "migrates",
    "deploys",
]
ADJECTIVES = [
    "flaky",
    "slow",
    "stale",
    "broken",
    "missing",
    "duplicate",
    "empty",
    "invalid",
    "expired",
    "nested",
    "async",
    "sync",
    "cached",
    "encrypted",
    "compressed",
    "partial",
    "legacy",
    "deprecated",
    "experimental",
]
PROSE = (
    "the {noun} {verb} when the {adj} {noun2} is used",
    "why does the {noun} {verb} after the {noun2} changes",
    "I think the {adj} {noun} {verb} because the {noun2} is {adj2}",
    "can you check whether the {noun} {verb} on the {noun2}",
    "the fix is to make the {noun} {adj} before the {noun2} {verb}",
    "it looks like a {adj} {noun} in the {noun2} {noun3}",
    "we should add a test for the {noun} so it never {verb} again",
)
CODE = (
    "def test_{noun}_{noun2}(self):",
    'File "src/{noun}/{noun2}.py", line {n}, in {noun3}_{verb0}',
    "KeyError: '{noun}_{noun2}'",
    "assert {noun}.{noun2}_{n} == expected",
    "SELECT {noun} FROM {noun2} WHERE {noun3}_id = {n};",
    "from app.{noun}.{noun2} import {Noun3}{Noun}",
    "{noun}_{noun2} = get_{noun3}(ticket_{ticket})",
    "raise {Noun}Error(f'{noun2} {n} {adj}')",
    "git commit -m 'fix {adj} {noun} in {noun2}' # ticket_{ticket}",
    "os.path.join({noun}_dir, '{noun2}.json')",
)

# What the searches ask, by kind, from the fewest matches to the most. {ticket}: a ticket id
# that occurs in the corpus (each in about 100 of the million messages).
KINDS: dict[str, tuple[str, ...]] = {
    "rare": ("ticket_{ticket}", '"ticket {ticket}"', "ticket_{ticket} invoice"),
    "medium": ("okapi", "quokka", "axolotl pangolin", "descriptor", "coupon discount"),
    "common": ("test", "error", "test fixture", "error request", '"the test"'),
    "the": ("the",),
    "mixed": (
        "timeout retries",
        "flaky test clock",
        "billing invoice -payment",
        "KeyError or ValueError",
        "src/session/cache.py",
        '"connection pool"',
        "migration schema index",
    ),
}


def zipf_choice(rng: random.Random, words: Sequence[str], offset: float = 10.0) -> str:
    """Rank k drawn with probability about 1/(k + offset) (Zipf-Mandelbrot): a few words
    common (the first noun in about a third of the messages), a long tail (the last in a few
    per cent)."""
    span = (len(words) + offset) / offset
    index = int(offset * span ** rng.random() - offset)
    return words[min(index, len(words) - 1)]


def sentence(rng: random.Random, tickets: list[int]) -> str:
    ticket = rng.randrange(10_000, 100_000)
    words = {
        "noun": zipf_choice(rng, NOUNS),
        "noun2": zipf_choice(rng, NOUNS),
        "noun3": zipf_choice(rng, NOUNS),
        "verb": zipf_choice(rng, VERBS),
        "verb0": zipf_choice(rng, VERBS).split()[0],
        "adj": zipf_choice(rng, ADJECTIVES),
        "adj2": zipf_choice(rng, ADJECTIVES),
        "n": str(rng.randrange(1, 500)),
        "ticket": str(ticket),
    }
    words["Noun"] = words["noun"].capitalize()
    words["Noun3"] = words["noun3"].capitalize()
    template = rng.choice(CODE) if rng.random() < 0.4 else rng.choice(PROSE)
    if "{ticket}" in template:
        tickets.append(ticket)
    text = template.format(**words)
    if template in CODE:
        return text
    return text[0].upper() + text[1:] + "."


def sentences(seed: int = 7) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    tickets: list[int] = []
    texts = [sentence(rng, tickets) for _ in range(SENTENCES)]
    return texts, tickets


# --- measuring


@dataclass
class Latencies:
    by_kind: dict[str, list[float]] = field(default_factory=dict)
    hits: dict[str, list[int]] = field(default_factory=dict)
    alone: dict[str, list[float]] = field(default_factory=dict)
    # CPU milliseconds per search at CONCURRENCY: the server process's, and the machine's
    # (server, database, load generator and anything else running).
    cpu_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    errors: int = 0

    def row(self, kind: str) -> dict[str, float]:
        values = self.by_kind.get(kind, [])
        hits = self.hits.get(kind, [])
        return {
            "requests": len(values),
            "p50_ms": percentile(values, 50) * 1000,
            "p99_ms": percentile(values, 99) * 1000,
            "hits_on_page": sum(hits) / len(hits) if hits else 0.0,
            "alone_p50_ms": percentile(self.alone.get(kind, []), 50) * 1000,
            "server_cpu_ms": self.cpu_ms.get(kind, {}).get("server", 0.0),
            "machine_cpu_ms": self.cpu_ms.get(kind, {}).get("machine", 0.0),
        }

    def pooled(self, kinds: Sequence[str]) -> dict[str, float]:
        values = [value for kind in kinds for value in self.by_kind.get(kind, [])]
        return {"p50_ms": percentile(values, 50) * 1000, "p99_ms": percentile(values, 99) * 1000}


async def run_searches(
    server: Server, keys: list[str], tickets: list[int], requests: int, seed: int = 11
) -> Latencies:
    """For each kind apart, `requests` searches CONCURRENCY at a time, each by a random user
    (apart: a kind's figures are not those of the kinds it would share the cores with)."""
    rng = random.Random(seed)
    result = Latencies()
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        for kind, queries in KINDS.items():
            jobs = [
                (rng.choice(queries).format(ticket=rng.choice(tickets)), rng.choice(keys))
                for _ in range(requests)
            ]
            # Warm-up: each query once, so the first plans are not measured.
            for query in {query for query, _ in jobs[:50]}:
                await client.get(
                    "/api/v1/search", params={"q": query}, headers={"X-API-Key": keys[0]}
                )
            pending = iter(jobs)

            async def worker(kind: str = kind, pending: Any = pending) -> None:
                # One lean keep-alive connection per worker (bench/lean_http.py): httpx's own
                # CPU per request would take the cores from the server and the database.
                connection = LeanConnection(server.url)
                try:
                    for query, key in pending:
                        started = time.perf_counter()
                        status, body = await connection.get(
                            "/api/v1/search", {"q": query}, {"X-API-Key": key}
                        )
                        elapsed = time.perf_counter() - started
                        if status != 200:
                            result.errors += 1
                            log(f"search {query!r}: {status} {body[:200]!r}")
                            continue
                        result.by_kind.setdefault(kind, []).append(elapsed)
                        result.hits.setdefault(kind, []).append(len(json.loads(body)["data"]))
                finally:
                    await connection.close()

            server_cpu, machine = cpu_seconds(server.process.pid), machine_busy_seconds()
            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
            done = max(1, len(result.by_kind.get(kind, [])))
            result.cpu_ms[kind] = {
                "server": (cpu_seconds(server.process.pid) - server_cpu) / done * 1000,
                "machine": (machine_busy_seconds() - machine) / done * 1000,
            }
            # The same kind one request at a time: what a search costs without waiting for
            # the cores (2 here) behind the others.
            alone = []
            for query, key in jobs[:ALONE_REQUESTS]:
                started = time.perf_counter()
                await client.get("/api/v1/search", params={"q": query}, headers={"X-API-Key": key})
                alone.append(time.perf_counter() - started)
            result.alone[kind] = alone
            row = result.row(kind)
            log(
                f"search, {kind}: p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, "
                f"alone p50 {row['alone_p50_ms']:.1f} ms, CPU per search: server "
                f"{row['server_cpu_ms']:.1f} ms, machine {row['machine_cpu_ms']:.1f} ms"
            )
    return result


async def append_rps(
    server: Server, keys: list[str], sessions: dict[str, list[str]], seconds: float
) -> float:
    """Complete ~300-character user messages appended for `seconds`, CONCURRENCY at a time,
    each worker to its own session."""
    texts, _ = sentences(seed=99)
    done = 0
    deadline = time.monotonic() + seconds

    async def worker(index: int, client: httpx.AsyncClient) -> None:
        nonlocal done
        key = keys[index % len(keys)]
        session = sessions[key][index]
        rng = random.Random(index)
        while time.monotonic() < deadline:
            content = " ".join(rng.choice(texts) for _ in range(SENTENCES_PER_MESSAGE))
            response = await client.post(
                f"/api/v1/sessions/{session}/messages",
                json={"role": "user", "content": content},
                headers={"X-API-Key": key},
            )
            if response.status_code != 201:
                raise RuntimeError(f"append: {response.status_code} {response.text[:200]}")
            done += 1

    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        started = time.monotonic()
        await asyncio.gather(*(worker(i, client) for i in range(CONCURRENCY)))
        return done / (time.monotonic() - started)


# --- the server


def service_env(database_url: str | None, data_dir: Path) -> dict[str, str]:
    from chat_store.settings import Settings

    names = {name.upper() for name in Settings.model_fields}
    env = {key: value for key, value in os.environ.items() if key.upper() not in names}
    env.update(
        APP_ENV="production",
        JWT_SECRET=secrets.token_urlsafe(36),
        LOG_LEVEL="WARNING",
        RATE_LIMIT_ENABLED="false",
        DATA_DIR=str(data_dir),
        BCRYPT_ROUNDS="4",
    )
    if database_url:
        env["DATABASE_URL"] = database_url
    return env


async def start_server(env: dict[str, str], workdir: Path, cleanup: Cleanup) -> Server:
    port = free_port()
    server = start_process(
        "chat-store",
        [str(BIN / "chat-store"), "serve", "--port", str(port), "--no-migrate"],
        env=env,
        cwd=workdir,
        port=port,
        cleanup=cleanup,
    )
    # /health, not /health/ready: the database is not at the head migration yet.
    await wait_ready(server, "/health")
    return server


async def timed(label: str, work: Callable[[], Awaitable[Any]]) -> float:
    started = time.monotonic()
    await work()
    elapsed = time.monotonic() - started
    log(f"{label}: {elapsed:.1f} s")
    return elapsed


async def users_with_keys(server: Server) -> tuple[list[str], list[str]]:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        registered = [await register(client, f"search{i}") for i in range(USERS)]
    return [user for user, _ in registered], [key for _, key in registered]


# --- Postgres


SEED_SQL = """
WITH owners AS (
    SELECT row_number() OVER () - 1 AS n, id FROM unnest($1::uuid[]) AS id
)
INSERT INTO chat_session (id, user_id, title, is_favorite, status, metadata, workspace_repo,
    message_count, total_tokens, last_seq, history_version, updated_version, last_message_at,
    last_activity_at, created_at, updated_at)
SELECT gen_random_uuid(), owners.id, left(s.text, 60), g % 10 = 0,
    CASE WHEN g % 4 = 0 THEN 'ended' ELSE 'active' END, '{}'::jsonb,
    'github.com/acme/repo' || (g % 5), $3, 0, $3, $3, 0, now(), now(), now(), now()
FROM generate_series(0, $2 - 1) AS g
JOIN owners ON owners.n = g % $4
JOIN bench_sentence s ON s.id = 1 + (g * 7919) % $5
"""

_PICKS = range(1, SENTENCES_PER_MESSAGE + 1)
MESSAGES_SQL = f"""
INSERT INTO message (id, session_id, user_id, seq, role, content, partial_length, status,
    metadata, created_version, version, created_at, updated_at, completed_at)
SELECT gen_random_uuid(), cs.id, cs.user_id, r.seq,
    CASE WHEN r.seq % 2 = 1 THEN 'user' ELSE 'assistant' END,
    {" || ' ' || ".join(f"s{i}.text" for i in _PICKS)}, 0, 'complete', '{{}}'::jsonb,
    r.seq, r.seq, r.at, r.at, r.at
FROM (
    SELECT g / $1 AS session_n, 1 + g % $1 AS seq,
        {", ".join(f"1 + floor(random() * $2)::int AS p{i}" for i in _PICKS)},
        now() - interval '365 days' + (g * interval '30 seconds') AS at
    FROM generate_series($3::bigint, $4::bigint - 1) AS g
) AS r
JOIN (SELECT row_number() OVER (ORDER BY id) - 1 AS n, id, user_id FROM chat_session) AS cs
    ON cs.n = r.session_n
{chr(10).join(f"JOIN bench_sentence s{i} ON s{i}.id = r.p{i}" for i in _PICKS)}
"""


async def seed_postgres(url: str, user_ids: list[str], messages: int, sessions: int) -> None:
    texts, _ = sentences()
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(
            "CREATE UNLOGGED TABLE bench_sentence (id int PRIMARY KEY, text text)"
        )
        await connection.copy_records_to_table(
            "bench_sentence", records=list(enumerate(texts, start=1))
        )
        per_session = messages // sessions
        await connection.execute(
            SEED_SQL, [uuid.UUID(u) for u in user_ids], sessions, per_session, USERS, len(texts)
        )
        # In slices: one statement of a million rows holds a lot of memory for its sort.
        step = 100_000
        for start in range(0, messages, step):
            await connection.execute(
                MESSAGES_SQL, per_session, len(texts), start, min(start + step, messages)
            )
        await connection.execute("DROP TABLE bench_sentence")
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()


async def pg_sizes(url: str) -> dict[str, Any]:
    connection = await asyncpg.connect(url)
    try:
        row = await connection.fetchrow(
            """
            SELECT pg_relation_size('ix_message_search') AS message_index,
                pg_relation_size('ix_chat_session_search') AS title_index,
                pg_total_relation_size('message') AS message_total,
                (SELECT sum(pg_column_size(search_vector)) FROM message) AS vectors,
                (SELECT sum(pg_column_size(content)) FROM message) AS contents,
                (SELECT count(*) FROM message) AS messages,
                current_setting('server_version') AS server_version,
                current_setting('shared_buffers') AS shared_buffers,
                current_setting('effective_cache_size') AS effective_cache_size
            """
        )
        return dict(row)
    finally:
        await connection.close()


async def pg_table_size(url: str) -> int:
    connection = await asyncpg.connect(url)
    try:
        return int(await connection.fetchval("SELECT pg_total_relation_size('message')"))
    finally:
        await connection.close()


async def session_ids(url: str, user_ids: list[str], keys: list[str]) -> dict[str, list[str]]:
    connection = await asyncpg.connect(url)
    try:
        found: dict[str, list[str]] = {}
        for user, key in zip(user_ids, keys, strict=True):
            rows = await connection.fetch(
                "SELECT id FROM chat_session WHERE user_id = $1 ORDER BY id LIMIT $2",
                uuid.UUID(user),
                CONCURRENCY,
            )
            found[key] = [str(row["id"]) for row in rows]
        return found
    finally:
        await connection.close()


async def run_postgres(args: argparse.Namespace, workdir: Path, cleanup: Cleanup) -> dict[str, Any]:
    name = f"chat_store_bench_search_{secrets.token_hex(3)}"
    base = PG_ADMIN_URL.rpartition("/")[0]
    admin = await asyncpg.connect(PG_ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()

    def drop() -> None:
        async def go() -> None:
            connection = await asyncpg.connect(PG_ADMIN_URL)
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await connection.close()

        # Cleanup runs synchronously, possibly inside this event loop: a loop of its own.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, go()).result()

    url = f"{base}/{name}"
    if args.keep_database:
        log(f"the database is kept: {url}")
    else:
        cleanup.push("drop the database", drop)
    sa_url = url.replace("postgresql://", "postgresql+asyncpg://", 1)
    await asyncio.to_thread(migrate.upgrade, sa_url, "0001")
    server = await start_server(service_env(url, workdir / "pg-data"), workdir, cleanup)
    user_ids, keys = await users_with_keys(server)
    out: dict[str, Any] = {"messages": args.pg_messages, "sessions": args.pg_sessions}
    out["seed_s"] = await timed(
        f"seeded {args.pg_messages:,} messages with SQL",
        lambda: seed_postgres(url, user_ids, args.pg_messages, args.pg_sessions),
    )
    sessions = await session_ids(url, user_ids, keys)
    out["table_bytes_before"] = await pg_table_size(url)
    out["migrate_s"] = await timed(
        "chat-store migrate to head (backfill + indexes)",
        lambda: asyncio.to_thread(migrate.upgrade, sa_url),
    )
    # The migration rewrites every row (the backfills), leaving the table about twice the size
    # of one that grew with its index: compacted, as a table that grew at head would be
    # (docs/operations.md says what an upgraded table costs until compacted).
    out["vacuum_s"] = await timed(
        "VACUUM FULL ANALYZE message", lambda: pg_run(url, "VACUUM FULL ANALYZE message")
    )
    out["sizes"] = await pg_sizes(url)
    # Whether a user's matches are read from Postgres' buffers or through the kernel's cache
    # depends on shared_buffers: printed with the results.
    log(
        f"Postgres {out['sizes']['server_version']}, shared_buffers "
        f"{out['sizes']['shared_buffers']}, effective_cache_size "
        f"{out['sizes']['effective_cache_size']}"
    )
    _, tickets = sentences()
    await pg_run(url, "CHECKPOINT")
    latencies = await run_searches(server, keys, tickets, args.requests)
    out["search"] = {kind: latencies.row(kind) for kind in KINDS}
    out["search_pooled"] = latencies.pooled(list(KINDS))
    out["search_errors"] = latencies.errors
    out["matches"] = await pg_matches(url, user_ids[0], tickets)
    # The price on appends: the same table with its search index and trigger, then without,
    # one run each, right after one another (each after a CHECKPOINT, so that neither pays for
    # writing out what came before it).
    await pg_run(url, "CHECKPOINT")
    out["append_rps_with"] = await append_rps(server, keys, sessions, args.append_seconds)
    log(f"append with the search index: {out['append_rps_with']:.0f} rps")
    await pg_run(
        url,
        "ALTER TABLE message DISABLE TRIGGER message_search_insert",
        "ALTER TABLE message DISABLE TRIGGER message_search_update",
        "DROP INDEX ix_message_search",
        "CHECKPOINT",
    )
    out["append_rps_without"] = await append_rps(server, keys, sessions, args.append_seconds)
    log(f"append without the search index: {out['append_rps_without']:.0f} rps")
    server.stop()
    if args.keep_database:
        # Kept to be looked at (EXPLAIN): as migrated, the index and its triggers back.
        await pg_run(
            url,
            "ALTER TABLE message ENABLE TRIGGER message_search_insert",
            "ALTER TABLE message ENABLE TRIGGER message_search_update",
            "UPDATE message SET search_vector = chat_store_owned_vector(user_id, "
            "chat_store_search_vector(coalesce(content, partial_content))) "
            "WHERE search_vector IS NULL AND status NOT IN ('pending', 'in_progress')",
            "CREATE INDEX ix_message_search ON message USING gin (search_vector)",
            "VACUUM ANALYZE message",
        )
    return out


async def pg_run(url: str, *statements: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def pg_matches(url: str, user_id: str, tickets: list[int]) -> dict[str, float]:
    """How many of one user's messages each kind's queries match, on average."""
    from chat_store import search_query

    connection = await asyncpg.connect(url)
    try:
        counts: dict[str, float] = {}
        for kind, queries in KINDS.items():
            found = [
                await connection.fetchval(
                    "SELECT count(*) FROM message WHERE user_id = $1 AND search_vector @@ "
                    "chat_store_owned_query($1, chat_store_search_query($2))",
                    uuid.UUID(user_id),
                    search_query.parse(query.format(ticket=tickets[0])).websearch(),
                )
                for query in queries
            ]
            counts[kind] = sum(found) / len(found)
        return counts
    finally:
        await connection.close()


# --- SQLite


def seed_sqlite(path: Path, user_ids: list[str], messages: int, sessions: int) -> None:
    texts, _ = sentences()
    rng = random.Random(5)
    per_session = messages // sessions
    now = datetime.now(UTC)
    connection = sqlite3.connect(path)
    try:
        session_rows = []
        message_rows = []
        for n in range(sessions):
            session_id = uuid.uuid4().hex
            owner = uuid.UUID(user_ids[n % len(user_ids)]).hex
            at = (now - timedelta(days=365)).replace(tzinfo=None).isoformat(sep=" ")
            session_rows.append(
                (
                    session_id,
                    owner,
                    texts[(n * 7919) % len(texts)][:60],
                    n % 10 == 0,
                    "ended" if n % 4 == 0 else "active",
                    "{}",
                    per_session,
                    per_session,
                    per_session,
                    at,
                    at,
                    at,
                )
            )
            for seq in range(1, per_session + 1):
                content = " ".join(rng.choice(texts) for _ in range(SENTENCES_PER_MESSAGE))
                message_rows.append(
                    (
                        uuid.uuid4().hex,
                        session_id,
                        owner,
                        seq,
                        "user" if seq % 2 else "assistant",
                        content,
                        len(content),
                        "complete",
                        "{}",
                        seq,
                        seq,
                        at,
                        at,
                        at,
                    )
                )
        with connection:
            connection.executemany(
                "INSERT INTO chat_session (id, user_id, title, is_favorite, status, metadata, "
                "message_count, last_seq, history_version, last_activity_at, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                session_rows,
            )
            connection.executemany(
                "INSERT INTO message (id, session_id, user_id, seq, role, content, "
                "partial_length, status, metadata, created_version, version, created_at, "
                "updated_at, completed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                message_rows,
            )
    finally:
        connection.close()


async def run_sqlite(args: argparse.Namespace, workdir: Path, cleanup: Cleanup) -> dict[str, Any]:
    data_dir = workdir / "sqlite-data"
    data_dir.mkdir()
    path = data_dir / "chat-store.db"
    url = f"sqlite+aiosqlite:///{path}"
    await asyncio.to_thread(migrate.upgrade, url, "0001")
    server = await start_server(service_env(None, data_dir), workdir, cleanup)
    user_ids, keys = await users_with_keys(server)
    server.stop()  # one writer: the seed writes the file alone
    out: dict[str, Any] = {"messages": args.sqlite_messages, "sessions": args.sqlite_sessions}
    out["seed_s"] = await timed(
        f"seeded {args.sqlite_messages:,} messages",
        lambda: asyncio.to_thread(
            seed_sqlite, path, user_ids, args.sqlite_messages, args.sqlite_sessions
        ),
    )
    size_before = path.stat().st_size
    out["migrate_s"] = await timed(
        "chat-store migrate to head (FTS5 backfill)",
        lambda: asyncio.to_thread(migrate.upgrade, url),
    )
    out["file_bytes_before"] = size_before
    out["file_bytes_after"] = path.stat().st_size
    server = await start_server(service_env(None, data_dir), workdir, cleanup)
    _, tickets = sentences()
    latencies = await run_searches(server, keys, tickets, args.requests)
    out["search"] = {kind: latencies.row(kind) for kind in KINDS}
    out["search_pooled"] = latencies.pooled(list(KINDS))
    out["search_errors"] = latencies.errors
    out["matches"] = sqlite_matches(path, user_ids[0], tickets)
    server.stop()
    return out


def sqlite_matches(path: Path, user_id: str, tickets: list[int]) -> dict[str, float]:
    from chat_store import search_query
    from chat_store.models.search import message_fts_table

    connection = sqlite3.connect(path)
    try:
        counts: dict[str, float] = {}
        for kind, queries in KINDS.items():
            found = []
            for query in queries:
                fts5 = search_query.parse(query.format(ticket=tickets[0])).fts5()
                match = f'owner : "{uuid.UUID(user_id).hex}" AND body : ({fts5})'
                fts = message_fts_table(uuid.UUID(user_id))
                found.append(
                    connection.execute(
                        f"SELECT count(*) FROM {fts} WHERE {fts} MATCH ?", (match,)
                    ).fetchone()[0]
                )
            counts[kind] = sum(found) / len(found)
        return counts
    finally:
        connection.close()


# --- report


def table(results: dict[str, Any]) -> str:
    lines = [
        "| engine | kind | queries | matches per user | requests | p50 ms | p99 ms "
        "| alone p50 ms | CPU ms per search: server / machine |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for engine in ("postgres", "sqlite"):
        if engine not in results:
            continue
        label = engine
        if engine == "postgres":
            label = f"postgres (shared_buffers {results[engine]['sizes']['shared_buffers']})"
        for kind, row in results[engine]["search"].items():
            queries = ", ".join(f"`{q.replace('{ticket}', 'N')}`" for q in KINDS[kind])
            lines.append(
                f"| {label} | {kind} | {queries} | {results[engine]['matches'][kind]:,.0f} | "
                f"{row['requests']} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | "
                f"{row['alone_p50_ms']:.1f} | {row['server_cpu_ms']:.1f} / "
                f"{row['machine_cpu_ms']:.1f} |"
            )
        pooled = results[engine]["search_pooled"]
        lines.append(
            f"| {label} | all of the above | | | | {pooled['p50_ms']:.1f} | "
            f"{pooled['p99_ms']:.1f} | | |"
        )
    return "\n".join(lines)


async def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-messages", type=int, default=1_000_000)
    parser.add_argument("--pg-sessions", type=int, default=10_000)
    parser.add_argument("--sqlite-messages", type=int, default=100_000)
    parser.add_argument("--sqlite-sessions", type=int, default=1_000)
    parser.add_argument("--requests", type=int, default=300, help="searches of each kind")
    parser.add_argument("--append-seconds", type=float, default=20.0)
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--postgres-only", action="store_true")
    parser.add_argument(
        "--keep-database",
        action="store_true",
        help="leave the Postgres database behind (its URL is logged), search index restored",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    cleanup = Cleanup()
    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(),
        "cpus": os.cpu_count(),
        # The machine's other work competes for the same cores: reported beside the figures.
        "load_average_before": os.getloadavg(),
    }
    try:
        with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
            workdir = Path(tmp)
            if not args.sqlite_only:
                results["postgres"] = await run_postgres(args, workdir, cleanup)
            if not args.postgres_only:
                results["sqlite"] = await run_sqlite(args, workdir, cleanup)
            cleanup.run()
    finally:
        cleanup.run()
    results["load_average_after"] = os.getloadavg()
    print(json.dumps(results, indent=2, default=str))
    print()
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(asyncio.run(main(sys.argv[1:])))
