"""Running the service: `serve`, `migrate`, `version`."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy.engine import make_url

from chat_store import __version__, migrate
from chat_store.cli.running import console
from chat_store.settings import Settings, get_settings


def version() -> None:
    """Print the version."""
    print(__version__)


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
