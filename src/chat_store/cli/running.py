"""How an admin command runs: its command group, the console it reports on, and the database it
works on (the configured one, once it is known to be migrated)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import typer
from rich.console import Console
from sqlalchemy import Connection
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from chat_store import migrate
from chat_store.settings import Settings, get_settings

console = Console(stderr=True)
T = TypeVar("T")


def command_group(summary: str) -> typer.Typer:
    # typer's own traceback shows every frame's locals, a password among them: main() reports
    # failures instead.
    return typer.Typer(help=summary, no_args_is_help=True, pretty_exceptions_enable=False)


class CommandFailed(Exception):
    """A failure main() reports as it is worded here."""


def _migrated_engine(settings: Settings) -> AsyncEngine:
    """An engine on the configured database, for a command that needs its tables. A missing
    SQLite file is not created: a command run in another folder, or with a mistyped DATA_DIR,
    would otherwise write into a new, empty database of its own."""
    from chat_store.db import create_engine

    path = sqlite_file(settings.sqlalchemy_url)
    if path is not None and not path.is_file():
        raise CommandFailed(
            f"no database at {path.resolve()}: run `chat-store migrate` first "
            "(or set DATA_DIR or DATABASE_URL to the existing database)"
        )
    return create_engine(settings)


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite database URL; None for another database, or one in memory."""
    if not url.startswith("sqlite"):
        return None
    path = make_url(url).database
    return Path(path) if path and path != ":memory:" else None


async def _check_migrated(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        current = await connection.run_sync(migrate.current_revisions)
    if current != migrate.head_revisions():
        found = ", ".join(sorted(current)) or "no revision"
        raise CommandFailed(
            f"the database is not at the schema this version needs ({found}): "
            "run `chat-store migrate` first"
        )


def _run_migrated(work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Run `work` on an engine of the configured database, once it is known to be migrated."""

    async def main() -> T:
        engine = _migrated_engine(get_settings())
        try:
            await _check_migrated(engine)
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def run_on_database(work: Callable[[async_sessionmaker[AsyncSession]], Awaitable[T]]) -> T:
    """Run `work` on the configured database, once it is known to be migrated."""
    from chat_store.db import create_sessionmaker

    return _run_migrated(lambda engine: work(create_sessionmaker(engine)))


def run_on_connection(work: Callable[[Connection], T]) -> T:
    """Run `work` on a connection of the configured database (no transaction open), once it is
    known to be migrated."""

    async def on_connection(engine: AsyncEngine) -> T:
        async with engine.connect() as connection:
            return await connection.run_sync(work)

    return _run_migrated(on_connection)


def idle_time(older_than: str) -> timedelta:
    """The --older-than option (90d, 12h, 30m) as a duration."""
    from chat_store.services import retention

    try:
        return retention.parse_duration(older_than)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--older-than") from None
