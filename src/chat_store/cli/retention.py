"""Sessions idle for too long: `purge` deletes them, `archive` moves their messages to the
object store, `restore` brings one back."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Protocol, TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chat_store.cli.running import idle_time, run_on_database
from chat_store.settings import get_settings

if TYPE_CHECKING:
    from chat_store.services.archive import Archiver

OlderThan = Annotated[str, typer.Option(help="Idle time: 90d, 12h or 30m.")]
Sessionmaker = async_sessionmaker[AsyncSession]
Report = TypeVar("Report", bound="IdleReport")


def purge(
    older_than: OlderThan,
    dry_run: Annotated[bool, typer.Option(help="Only report what would be deleted.")] = False,
) -> None:
    """Delete sessions (with their messages and archive objects) idle for longer than
    --older-than."""
    from chat_store.services import retention
    from chat_store.storage import ArchiveStore

    async def work(sessionmaker: Sessionmaker, idle: timedelta) -> retention.PurgeReport:
        store = ArchiveStore(get_settings().archive_location)
        return await retention.purge_idle_sessions(
            sessionmaker, idle, dry_run=dry_run, archive=store
        )

    report = _on_idle_sessions(older_than, work, done="deleted", dry="would delete")
    if report.objects.deleted:
        print(f"deleted {report.objects.deleted} archive objects of deleted sessions")
    if report.objects.refused:
        print(
            f"{report.objects.refused} archive objects of deleted sessions could not be deleted "
            f"yet ({report.objects.reason}); the next purge or housekeeping run tries again",
            file=sys.stderr,
        )
        raise typer.Exit(1)


def archive(
    older_than: OlderThan,
    dry_run: Annotated[bool, typer.Option(help="Only report what would be archived.")] = False,
) -> None:
    """Move the messages of sessions idle for longer than --older-than to ARCHIVE_URL."""
    from chat_store.services import archive as archive_service

    async def work(sessionmaker: Sessionmaker, idle: timedelta) -> archive_service.ArchiveReport:
        archiver = _archiver(sessionmaker)
        return await archive_service.archive_idle_sessions(archiver, idle, dry_run=dry_run)

    report = _on_idle_sessions(older_than, work, done="archived", dry="would archive")
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

    async def work(sessionmaker: Sessionmaker) -> bool:
        archiver = _archiver(sessionmaker)
        async with sessionmaker() as db, db.begin():
            key = await archive_service.restore_in(db, archiver, session_id, user_id=None)
        if key is not None:
            await archive_service.release_archive(archiver, session_id, key)
        return key is not None

    print("restored" if run_on_database(work) else "not archived: nothing to do")


def _archiver(sessionmaker: Sessionmaker) -> Archiver:
    from chat_store.services.archive import Archiver
    from chat_store.storage import ArchiveStore

    return Archiver(sessionmaker, ArchiveStore(get_settings().archive_location))


class IdleReport(Protocol):
    """What `purge` and `archive` report alike."""

    @property
    def dry_run(self) -> bool: ...
    @property
    def sessions(self) -> int: ...
    @property
    def messages(self) -> int: ...
    @property
    def cutoff(self) -> datetime: ...


def _on_idle_sessions(
    older_than: str,
    work: Callable[[Sessionmaker, timedelta], Awaitable[Report]],
    *,
    done: str,
    dry: str,
) -> Report:
    """Run `work` on the sessions idle for longer than `older_than` and say what it did (or,
    on a dry run, what it would do)."""
    idle = idle_time(older_than)

    async def run(sessionmaker: Sessionmaker) -> Report:
        return await work(sessionmaker, idle)

    report = run_on_database(run)
    verb = dry if report.dry_run else done
    idle_since = report.cutoff.isoformat()
    print(
        f"{verb} {report.sessions} sessions and {report.messages} messages idle since {idle_since}"
    )
    return report
