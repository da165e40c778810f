"""Running the service: `serve`, `migrate`, `version`."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.engine import make_url

from chat_store import __version__, migrate, search_index
from chat_store.cli.running import CommandFailed, console, run_on_connection, sqlite_file
from chat_store.logging_setup import JsonFormatter
from chat_store.settings import Settings, get_settings

logger = logging.getLogger("chat_store.cli")


def version() -> None:
    """Print the version."""
    print(__version__)


def migrate_command(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply database migrations (to head by default); only forward."""
    settings = get_settings()
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    else:
        _check_sqlite_folder(settings.sqlalchemy_url)
    try:
        target = migrate.resolve(revision)
    except ValueError as exc:
        raise CommandFailed(f"{exc}: `chat-store migrate` takes a revision id or head") from None
    # The URL as configured: the migration environment turns sslmode into asyncpg's ssl option.
    url = settings.database_url or settings.sqlalchemy_url
    migrate.upgrade(url, revision)
    current = migrate.current_revision(url)
    if current != target:
        # Alembic's upgrade to a revision behind the database's does nothing.
        raise CommandFailed(
            f"the database is at revision {current}, past {target}: `chat-store migrate` only "
            "goes forward (going back would drop what later revisions store)"
        )
    _tell(settings, f"database at revision {current}")


def reindex() -> None:
    """Build the search index again in SEARCH_LANGUAGE (after changing it)."""
    settings = get_settings()
    language = settings.search_language
    try:
        rebuilt = run_on_connection(lambda connection: search_index.rebuild(connection, language))
    except search_index.UnknownLanguage as exc:
        raise CommandFailed(f"{exc}: set SEARCH_LANGUAGE to one of them") from None
    _tell(
        settings,
        f"search index built again in {rebuilt.language}: {rebuilt.messages} messages, "
        f"{rebuilt.titles} titles",
    )


def _check_sqlite_folder(url: str) -> None:
    """A SQLite file in a folder that does not exist (a mistyped path, a volume not mounted):
    said in one line before the driver tries it."""
    path = sqlite_file(url)
    if path is not None and not path.parent.is_dir():
        raise CommandFailed(f"no folder {path.parent.resolve()} for the SQLite database")


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
    # Outside production without JWT_SECRET, the kept secret is made here, once, before the
    # workers start and read it.
    settings.jwt_secret_value()
    _print_where(settings, host or settings.host, port or settings.port)
    uvicorn.run(
        "chat_store.main:create_served_app",
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


def _where_stored(url: str) -> str:
    """The database as the banner names it: its kind, host, port and name only. A URL holds
    secrets beside its password (`?password=`, a password with an unescaped @ read as part of
    the host), and none of them is shown."""
    try:
        parsed = make_url(url)
    except Exception:  # ArgumentError, ValueError: said by the commands that connect
        return "a database URL that does not parse"
    kind = parsed.get_backend_name()
    if kind == "sqlite":
        return f"SQLite file {Path(parsed.database or '').resolve()}"
    # A password with an @, /, ? or # not escaped is read in part as the host, the database or
    # the query: then only the kind is named.
    userinfo = url.partition("://")[2].rpartition("@")[0]
    if any(char in userinfo for char in "@/?#"):
        return kind
    host, database = parsed.host or "", parsed.database or ""
    port = f":{parsed.port}" if parsed.port else ""
    return f"{kind} at {host}{port}, database {database}"


def _print_where(settings: Settings, host: str, port: int) -> None:
    """Where the server answers, what it stores into, and what to do next (no secret shown)."""
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104 (only shown)
    base = f"http://{shown_host}:{port}"
    if settings.database_url is None:
        database = f"SQLite file {(settings.data_dir / 'chat-store.db').resolve()}"
    else:
        database = _where_stored(settings.sqlalchemy_url)
    cache = "in-process" if settings.redis_url is None else "Redis"
    # Only what this server offers: Swagger UI is off with DOCS_ENABLED=false, and an account
    # is made with the command alone when registration is closed.
    swagger = f"  (Swagger UI: {base}/docs)" if settings.docs_enabled else ""
    where = "in Swagger UI or " if settings.docs_enabled and settings.allow_registration else ""
    _tell(
        settings,
        f"chat-store on {base}{swagger}\n"
        f"  database: {database}\n  cache: {cache}\n"
        f"  next: create an account {where}with `chat-store users create`, "
        f"then `chat-store login --url {base}`",
    )


def _tell(settings: Settings, message: str) -> None:
    """A line for the operator: with JSON logs (production), one JSON log line like the
    server's, so that a log collector reads every line of the process; else plain text."""
    if settings.use_json_logs:
        # Written whatever LOG_LEVEL is: the operator asked for it.
        record = logging.makeLogRecord(
            {"name": logger.name, "levelname": "INFO", "levelno": logging.INFO}
        )
        record.msg = " ".join(message.split())
        print(JsonFormatter().format(record), file=sys.stderr, flush=True)
    else:
        console.print(message, markup=False, highlight=False, soft_wrap=True)
