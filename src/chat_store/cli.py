"""`chat-store` command line: run the server, migrate, bootstrap users and API keys, archive,
import and seed, and the client side for people at a terminal.

Every failure is one line on stderr and a non-zero exit status (main()): an operator typing a
command needs to know what to fix, and a traceback can carry what was typed (a password).
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.console import Console
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from chat_store import __version__, migrate, terminal
from chat_store.errors import AppError
from chat_store.settings import Settings, get_settings

if TYPE_CHECKING:
    from chat_store.services.archive import Archiver


def _typer(summary: str) -> typer.Typer:
    # typer's own traceback shows every frame's locals, a password among them: main() reports
    # failures instead.
    return typer.Typer(help=summary, no_args_is_help=True, pretty_exceptions_enable=False)


app = _typer("chat-store: a store for LLM chat history.")
users_app = _typer("Manage users without HTTP.")
keys_app = _typer("Manage API keys without HTTP.")
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="api-keys")
terminal.register(app)

console = Console(stderr=True)
T = TypeVar("T")


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)


@app.command("migrate")
def migrate_command(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply database migrations (to head by default)."""
    settings = get_settings()
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    # The URL as configured: the migration environment turns sslmode into asyncpg's ssl option.
    migrate.upgrade(settings.database_url or settings.sqlalchemy_url, revision)
    console.print(f"database at revision {revision}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default: HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: PORT).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    run_migrations: Annotated[
        bool, typer.Option("--migrate/--no-migrate", help="Migrate to head before serving.")
    ] = True,
    reload: Annotated[bool, typer.Option(help="Reload on code changes (development).")] = False,
) -> None:
    """Run the HTTP server (Swagger UI at /docs)."""
    import uvicorn

    settings = get_settings()
    if run_migrations:
        migrate_command("head")
    _print_where(settings, host or settings.host, port or settings.port)
    uvicorn.run(
        "chat_store.main:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        reload=reload,
        log_config=None,  # logging is configured by create_app
        # X-Forwarded-For is read by the service itself, only from TRUSTED_PROXIES; uvicorn
        # would otherwise believe it from any local caller.
        proxy_headers=False,
        # No "server: uvicorn" on every answer: it tells a scanner what to try.
        server_header=False,
        timeout_graceful_shutdown=10,
    )


def _print_where(settings: Settings, host: str, port: int) -> None:
    """Where the server answers, what it stores into, and what to do next (no secret shown)."""
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104 (only shown)
    base = f"http://{shown_host}:{port}"
    if settings.database_url is None:
        database = f"SQLite file {(settings.data_dir / 'chat-store.db').resolve()}"
    else:
        database = make_url(settings.sqlalchemy_url).render_as_string(hide_password=True)
    cache = "in-process" if settings.redis_url is None else "Redis"
    console.print(
        f"chat-store on {base}  (Swagger UI: {base}/docs)\n"
        f"  database: {database}\n  cache: {cache}\n"
        f"  next: create an account in Swagger UI or with `chat-store users create`, "
        f"then `chat-store login --url {base}`",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


class CommandFailed(Exception):
    """A failure main() reports as it is worded here."""


def _migrated_engine(settings: Settings) -> AsyncEngine:
    """An engine on the configured database, for a command that needs its tables. A missing
    SQLite file is not created: a command run in another folder, or with a mistyped DATA_DIR,
    would otherwise write into a new, empty database of its own."""
    from chat_store.db import create_engine

    url = settings.sqlalchemy_url
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path and path != ":memory:" and not Path(path).is_file():
            raise CommandFailed(
                f"no database at {Path(path).resolve()}: run `chat-store migrate` first "
                "(or set DATA_DIR or DATABASE_URL to the existing database)"
            )
    return create_engine(settings)


async def _check_migrated(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        current = await connection.run_sync(migrate.current_revisions)
    if current != migrate.head_revisions():
        found = ", ".join(sorted(current)) or "no revision"
        raise CommandFailed(
            f"the database is not at the schema this version needs ({found}): "
            "run `chat-store migrate` first"
        )


def _run(work: Callable[[async_sessionmaker[AsyncSession]], Awaitable[T]]) -> T:
    """Run `work` on the configured database, once it is known to be migrated."""
    from chat_store.db import create_sessionmaker

    async def main() -> T:
        engine = _migrated_engine(get_settings())
        try:
            await _check_migrated(engine)
            return await work(create_sessionmaker(engine))
        finally:
            await engine.dispose()

    return asyncio.run(main())


@app.command()
def purge(
    older_than: Annotated[str, typer.Option(help="Idle time: 90d, 12h or 30m.")],
    dry_run: Annotated[bool, typer.Option(help="Only report what would be deleted.")] = False,
) -> None:
    """Delete sessions (with their messages) idle for longer than --older-than."""
    from chat_store.services import retention

    cutoff = _duration(older_than)

    async def work(sessionmaker: async_sessionmaker[AsyncSession]) -> retention.PurgeReport:
        return await retention.purge_idle_sessions(sessionmaker, cutoff, dry_run=dry_run)

    report = _run(work)
    verb = "would delete" if report.dry_run else "deleted"
    print(
        f"{verb} {report.sessions} sessions and {report.messages} messages "
        f"idle since {report.cutoff.isoformat()}"
    )


def _duration(older_than: str) -> timedelta:
    from chat_store.services import retention

    try:
        return retention.parse_duration(older_than)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--older-than") from None


def _archiver(sessionmaker: async_sessionmaker[AsyncSession]) -> Archiver:
    from chat_store.services.archive import Archiver
    from chat_store.storage import ArchiveStore

    return Archiver(sessionmaker, ArchiveStore(get_settings().archive_location))


@app.command()
def archive(
    older_than: Annotated[str, typer.Option(help="Idle time: 90d, 12h or 30m.")],
    dry_run: Annotated[bool, typer.Option(help="Only report what would be archived.")] = False,
) -> None:
    """Move the messages of sessions idle for longer than --older-than to ARCHIVE_URL."""
    from chat_store.services import archive as archive_service

    cutoff = _duration(older_than)

    async def work(sessionmaker: async_sessionmaker[AsyncSession]) -> archive_service.ArchiveReport:
        return await archive_service.archive_idle_sessions(
            _archiver(sessionmaker), cutoff, dry_run=dry_run
        )

    report = _run(work)
    verb = "would archive" if report.dry_run else "archived"
    print(
        f"{verb} {report.sessions} sessions and {report.messages} messages "
        f"idle since {report.cutoff.isoformat()}"
    )
    if not report.dry_run:
        print(
            f"finished {report.finished} left half-way, deleted {report.released} objects of "
            f"restored sessions, {report.skipped} changed meanwhile, {report.failed} failed"
        )
    if report.failed:
        raise typer.Exit(1)


@app.command()
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

    print("restored" if _run(work) else "not archived: nothing to do")


@app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    user: Annotated[
        str | None,
        typer.Option(help="Owner's email (default: the account of a chat-store account export)."),
    ] = None,
    source_format: Annotated[
        Literal["auto", "chat-store", "chatgpt", "plain"],
        typer.Option("--format", help="Format of each conversation (auto: recognised)."),
    ] = "auto",
) -> None:
    """Import conversations: chat-store/1 JSON or JSONL exports, ChatGPT's conversations.json,
    or plain {title?, messages} documents (one, or a JSON list). Each conversation is all or
    nothing; one imported before is found, not duplicated."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from chat_store.services import imports

    settings = get_settings()
    chosen = None if source_format == "auto" else source_format
    try:
        source = imports.open_source(file)
    except ValueError as exc:
        raise typer.BadParameter(f"not JSON or JSONL: {exc}", param_hint="FILE") from None
    email = user or source.owner_email
    if email is None:
        raise typer.BadParameter("give the owner with --user EMAIL", param_hint="--user")
    counts = {"created": 0, "found": 0, "failed": 0, "messages": 0}

    async def work(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        async with sessionmaker() as db:
            owner = await imports.owner_id(db, email)
        columns = (TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task(f"importing {file.name}", total=source.total)
            for label, document in source.conversations:
                try:
                    spec = imports.parse(document, settings, chosen)
                    async with sessionmaker() as db, db.begin():
                        result = await imports.import_chat_session(db, owner, spec)
                except AppError as exc:
                    counts["failed"] += 1
                    console.print(f"[red]{label}:[/red] {exc.detail}")
                else:
                    counts["created" if result.created else "found"] += 1
                    counts["messages"] += result.message_count if result.created else 0
                progress.update(task, completed=source.progress)

    _run(work)
    print(
        f"imported {counts['created']} sessions ({counts['messages']} messages), "
        f"{counts['found']} imported before, {counts['failed']} failed"
    )
    if counts["failed"]:
        raise typer.Exit(1)


@app.command()
def seed(file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)]) -> None:
    """Create users, API keys and sessions from a JSON file; run again, it adds only what is
    missing. Keys generated here are printed once: email, name, secret (tab-separated)."""
    from chat_store.services import seed as seed_service

    settings = get_settings()
    try:
        document = seed_service.parse(json.loads(file.read_bytes()))
    except ValueError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint="FILE") from None
    except AppError as exc:
        raise typer.BadParameter(exc.detail, param_hint="FILE") from None
    report = seed_service.SeedReport()

    async def work(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        for entry in document.users:
            async with sessionmaker() as db, db.begin():  # one user at a time
                await seed_service.seed_user(db, settings, entry, report)

    _run(work)
    for email, name, secret in report.new_secrets:
        print(f"{email}\t{name}\t{secret}")
    console.print(
        f"users: {report.users_created} created, {report.users_found} found; "
        f"API keys: {report.keys_created} created, {report.keys_found} found; "
        f"sessions: {report.sessions_created} created, {report.sessions_found} found"
    )


@users_app.command("create")
def create_user(
    email: Annotated[str, typer.Option(help="Login email.")],
    password: Annotated[
        str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True, help="8+ chars.")
    ],
    display_name: Annotated[str | None, typer.Option(help="Shown name.")] = None,
) -> None:
    """Create a user (the first account of a fresh deployment)."""
    from chat_store.schemas.users import UserCreate
    from chat_store.services import auth as auth_service

    body = UserCreate(email=email, password=password, display_name=display_name)
    settings = get_settings()

    async def work(sessionmaker: async_sessionmaker[AsyncSession]) -> str:
        async with sessionmaker() as db, db.begin():
            user = await auth_service.create_user(
                db, settings, str(body.email), body.password, body.display_name
            )
        return str(user.id)

    print(_run(work))


@keys_app.command("create")
def create_api_key(
    email: Annotated[str, typer.Option(help="Owner's email.")],
    name: Annotated[str, typer.Option(help="What the key is for.")] = "cli",
) -> None:
    """Create an API key for a user and print the secret (shown once)."""
    from chat_store.schemas.api_keys import ApiKeyCreate
    from chat_store.services import api_keys as api_key_service

    body = ApiKeyCreate(name=name)
    settings = get_settings()

    async def work(sessionmaker: async_sessionmaker[AsyncSession]) -> str:
        async with sessionmaker() as db, db.begin():
            created = await api_key_service.create_api_key_for_email(db, settings, email, body)
        return created.key

    print(_run(work))


def main() -> None:
    """The `chat-store` console script: the commands, with every failure reported as one line
    on stderr (exit status 1) rather than a traceback."""
    try:
        app()
    except KeyboardInterrupt:
        _fail("interrupted", status=130)
    except Exception as exc:
        _fail(describe_error(exc))


def _fail(message: str, status: int = 1) -> NoReturn:
    # Plain print, not rich: a message may hold brackets ("[Errno 111]") rich reads as markup.
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    raise SystemExit(status)


def describe_error(exc: BaseException) -> str:
    """One line saying what went wrong, never echoing a value that was typed or configured:
    a validation error's input (a password) or a database URL (its password)."""
    if isinstance(exc, CommandFailed):
        return str(exc)
    if isinstance(exc, AppError):
        return exc.detail
    if isinstance(exc, ValidationError):
        return _validation_errors(exc)
    if isinstance(exc, SettingsError):  # a list setting that is not valid JSON
        return f"settings: {_first_line(exc)}"
    if isinstance(exc, ArgumentError):
        return "DATABASE_URL is not a database URL (write it like postgresql://user:pw@host/db)"
    if isinstance(exc, DBAPIError):
        from chat_store.db import is_connection_error

        lost = is_connection_error(exc) or isinstance(exc, OperationalError)
        return (
            f"{'cannot reach the database' if lost else 'database error'}: {_first_line(exc.orig)}"
        )
    if isinstance(exc, SQLAlchemyError):  # its message may quote a statement's parameters
        return f"database error: {type(exc).__name__}"
    if isinstance(exc, OSError):
        return f"cannot reach the database: {_first_line(exc)}"
    from alembic.util import CommandError

    if isinstance(exc, CommandError):
        return f"migration failed: {_first_line(exc)}"
    return f"unexpected {type(exc).__name__}: {_first_line(exc)}"


def _validation_errors(exc: ValidationError) -> str:
    """`--password: String should have at least 8 characters`; for settings, the variable's
    name. Pydantic's own text quotes each input value, which is left out."""
    settings = exc.title == Settings.__name__
    described = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        name = "_".join(str(part) for part in error["loc"])
        if not name:
            described.append(message)
        elif settings:
            described.append(f"setting {name.upper()}: {message}")
        else:
            described.append(f"--{name.replace('_', '-')}: {message}")
    return "; ".join(described)


def _first_line(exc: BaseException | None) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


if __name__ == "__main__":
    main()
