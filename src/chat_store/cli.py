"""`chat-store` command line: run the server, migrate, and bootstrap users and API keys."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncSession

from chat_store import __version__, migrate
from chat_store.errors import AppError
from chat_store.settings import get_settings

app = typer.Typer(help="chat-store: a store for LLM chat history.", no_args_is_help=True)
users_app = typer.Typer(help="Manage users without HTTP.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys without HTTP.", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="api-keys")

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
        timeout_graceful_shutdown=10,
    )


def _run(work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    from chat_store.db import create_engine, create_sessionmaker

    async def main() -> T:
        engine = create_engine(get_settings())
        try:
            async with create_sessionmaker(engine)() as db, db.begin():
                return await work(db)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except AppError as exc:
        console.print(f"[red]error:[/red] {exc.detail}")
        raise typer.Exit(1) from None


@app.command()
def purge(
    older_than: Annotated[str, typer.Option(help="Idle time: 90d, 12h or 30m.")],
    dry_run: Annotated[bool, typer.Option(help="Only report what would be deleted.")] = False,
) -> None:
    """Delete sessions (with their messages) idle for longer than --older-than."""
    from chat_store.db import create_engine, create_sessionmaker
    from chat_store.services import retention

    try:
        cutoff = retention.parse_duration(older_than)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--older-than") from None

    async def main() -> retention.PurgeReport:
        engine = create_engine(get_settings())
        try:
            return await retention.purge_idle_sessions(
                create_sessionmaker(engine), cutoff, dry_run=dry_run
            )
        finally:
            await engine.dispose()

    report = asyncio.run(main())
    verb = "would delete" if report.dry_run else "deleted"
    print(
        f"{verb} {report.sessions} sessions and {report.messages} messages "
        f"idle since {report.cutoff.isoformat()}"
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

    async def work(db: AsyncSession) -> str:
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

    settings = get_settings()

    async def work(db: AsyncSession) -> str:
        created = await api_key_service.create_api_key_for_email(
            db, settings, email, ApiKeyCreate(name=name)
        )
        return created.key

    print(_run(work))


if __name__ == "__main__":
    app()
