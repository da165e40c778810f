"""A whole run: set-up, the parts asked for, the results."""

from __future__ import annotations

import contextlib
import platform
import secrets
import shutil
import sys
import tempfile
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aredis

from .config import PACKAGES, PG_ADMIN_URL, Config
from .goals import evaluate_targets
from .measuring import Measuring
from .operations import Operations
from .processes import Cleanup, machine_info, wrk_version
from .setup import SetUp
from .systems import Seed, Target


class Bench(SetUp, Measuring, Operations):
    """One run of the benchmark."""

    def __init__(self, config: Config, cleanup: Cleanup) -> None:
        self.config = config
        self.cleanup = cleanup
        self.run_id = secrets.token_hex(4)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"chat-store-bench-{self.run_id}-"))
        cleanup.push("remove work folder", lambda: shutil.rmtree(self.workdir, True))
        self.database = f"chat_store_bench_{self.run_id}"
        self.redis_prefix = f"chat_store_bench_{self.run_id}:"
        self.database_url = ""
        self.sqlite_path = self.workdir / "data" / "chat-store.db"
        self.seed = Seed()
        self.service: Target | None = None
        self.baseline: Target | None = None
        self.floor: Target | None = None
        self.redis: aredis.Redis | None = None
        self.results: dict[str, Any] = {
            "mode": "embedded" if config.embedded else "postgres",
            "command": " ".join(["scripts/bench.py", *sys.argv[1:]]),
            "config": {
                key: str(value) if isinstance(value, Path) else value
                for key, value in asdict(config).items()
            },
            "throughput": {},
            "last_page": {},
            "stream_1mb": {},
            "sse": {},
            "notes": [],
        }

    async def run(self) -> dict[str, Any]:
        self.results["machine"] = machine_info()
        self.results["started_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        if not self.config.embedded:
            await self.create_database()
        await self.migrate()
        try:
            await self.start_servers()
            self.results["versions"] = await self.versions()
            await self.seed_data()
            phases = {
                "throughput": self.run_throughput,
                "last-page": self.run_last_page,
                "stream": self.run_stream,
                "sse": self.run_sse,
            }
            for name in self.config.phases:
                await phases[name]()
        finally:
            if self.redis is not None:
                await self.redis.aclose()
        self.results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        self.results["targets"] = evaluate_targets(self.results)
        return self.results

    async def versions(self) -> dict[str, str]:
        found = {"python": platform.python_version()}
        for package in PACKAGES:
            with contextlib.suppress(metadata.PackageNotFoundError):
                found["redis-py" if package == "redis" else package] = metadata.version(package)
        found["chat-store"] = metadata.version("chat-store")
        found["wrk"] = wrk_version()
        if self.config.embedded:
            import sqlite3

            found["sqlite"] = sqlite3.sqlite_version
        else:
            connection = await asyncpg.connect(PG_ADMIN_URL)
            try:
                found["postgres"] = (await connection.fetchval("SHOW server_version")).split()[0]
            finally:
                await connection.close()
            assert self.redis is not None
            info = await self.redis.info("server")
            found["redis-server"] = str(info.get("redis_version"))
        return found
