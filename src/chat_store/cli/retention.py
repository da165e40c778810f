"""Sessions idle for too long: `purge` deletes them, `archive` moves their messages to the
object store, `restore` brings one back."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chat_store.cli.running import idle_time, run_on_database
from chat_store.settings import get_settings

if TYPE_CHECKING:
    from chat_store.services.archive import Archiver

OlderThan = Annotated[str, typer.Option(help="Idle time: 90d, 12h or 30m.")]


def purge(
    older_than: OlderThan,
    dry_run: Annotated[bool, typer.Option(help="Only report what would be deleted.")] = False,
) -> None:
    """Delete sessions (with their messages) idle for longer than --older-than."""
    from chat_store.services import retention

    cutoff = idle_time(older_than)

    async def work(sessionmaker: async_sessionmaker[AsyncSession]) -> retention.PurgeReport:
        return await retention.purge_idle_sessions(sessionmaker, cutoff, dry_run=dry_run)

    report = run_on_database(work)
    verb = "would delete" if report.dry_run else "deleted"
    _print_idle(verb, report.sessions, report.messages, report.cutoff)


def archive(
    older_than: OlderThan,
    dry_run: Annotated[bool, typer.Option(help="Only report what would be archived.")] = False,
) -> None:
    """Move the messages of sessions idle for longer than --older-than to ARCHIVE_URL."""
    from chat_store.services import archive as archive_service

    cutoff = idle_time(older_than)

    async def work(sessionmaker: async_sessionmaker[AsyncSession]) -> archive_service.ArchiveReport:
        return await archive_service.archive_idle_sessions(
            _archiver(sessionmaker), cutoff, dry_run=dry_run
        )

    report = run_on_database(work)
    verb = "would archive" if report.dry_run else "archived"
    _print_idle(verb, report.sessions, report.messages, report.cutoff)
    if not report.dry_run:
        print(
            f"finished {report.finished} left half-way, deleted {report.released} objects of "
            f"restored sessions, {report.skipped} changed meanwhile, {report.failed} failed"
        )
    if report.failed:
        raise typer.Exit(1)


def restore(session_id: Annotated[uuid.UUID, typer.Argument(help="The session's id.")]) -> None:
    """Bring an archived session's messages back into the database."""
    from chat_store.services import archive as archive_service

    async def work(sessionmaker: async_sessionmaker[AsyncSession]) -> bool:
        archiver = _archiver(sessionmaker)
        async with sessionmaker() as db, db.begin():
            key = await archive_service.restore_in(db, archiver, session_id, user_id=None)
        if key is not None:
            await archive_service.release_archive(archiver, session_id, key)
        return key is not None

    print("restored" if run_on_database(work) else "not archived: nothing to do")


def _archiver(sessionmaker: async_sessionmaker[AsyncSession]) -> Archiver:
    from chat_store.services.archive import Archiver
    from chat_store.storage import ArchiveStore

    return Archiver(sessionmaker, ArchiveStore(get_settings().archive_location))


def _print_idle(verb: str, sessions: int, messages: int, cutoff: datetime) -> None:
    print(f"{verb} {sessions} sessions and {messages} messages idle since {cutoff.isoformat()}")
