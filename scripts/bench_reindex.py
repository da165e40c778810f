"""How long `chat-store reindex` takes: the search index built again in another language.

A user with `--messages` messages (of 296 characters, in sessions of 1,000) is inserted in bulk
into the database DATABASE_URL names (migrated first, with `chat-store migrate`), then the
index is built again in `english` and back in `simple`, each timed:

    DATABASE_URL=postgresql+asyncpg://root@127.0.0.1:5432/bench_reindex \\
        .venv/bin/python scripts/bench_reindex.py --messages 100000
    DATABASE_URL=sqlite+aiosqlite:////tmp/bench-reindex.db .venv/bin/python scripts/bench_reindex.py

Its rows stay in the database: give it a database of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time
from pathlib import Path

from chat_store import search_index
from chat_store.crud import users as user_crud
from chat_store.db import create_engine, create_sessionmaker
from chat_store.settings import Settings

sys.path.insert(0, str(Path(__file__).parent))
from bench_archive import PER_SESSION, fill


async def main(messages: int) -> None:
    settings = Settings(_env_file=None, database_url=os.environ["DATABASE_URL"])  # type: ignore[call-arg]
    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as db, db.begin():
            user = await user_crud.create(
                db,
                email=f"reindex-{secrets.token_hex(4)}@example.com",
                password_hash="-",
                display_name=None,
            )
        sizes = [PER_SESSION] * (messages // PER_SESSION) + (
            [messages % PER_SESSION] if messages % PER_SESSION else []
        )
        started = time.perf_counter()
        await fill(settings, user.id, sizes)
        print(f"filled {messages} messages in {time.perf_counter() - started:.1f} s")
        for language in ("english", "simple"):
            async with engine.connect() as connection:
                started = time.perf_counter()
                rebuilt = await connection.run_sync(search_index.rebuild, language)
                seconds = time.perf_counter() - started
            print(
                f"{engine.dialect.name}: built again in {rebuilt.language} in {seconds:.1f} s "
                f"({rebuilt.messages} messages, {rebuilt.titles} titles in the database)"
            )
    finally:
        await engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    asyncio.run(main(parser.parse_args().messages))
