"""Loading from files: `import` (conversations from exports) and `seed` (users, API keys and
sessions)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chat_store.cli.running import console, run_on_database
from chat_store.errors import AppError
from chat_store.settings import get_settings

ReadableFile = Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)]


def import_command(
    file: ReadableFile,
    user: Annotated[
        str | None,
        typer.Option(help="Owner's email (default: the account of a chat-store account export)."),
    ] = None,
    source_format: Annotated[
        Literal["auto", "chat-store", "chatgpt", "plain"],
        typer.Option("--format", help="Format of each conversation (auto: recognised)."),
    ] = "auto",
) -> None:
    """Import conversations from a chat-store export, ChatGPT or a plain file.

    Reads chat-store/1 JSON or JSONL exports, ChatGPT's conversations.json,
    or plain {title?, messages} documents (one, or a JSON list).
    Each conversation is all or nothing; one imported before is found, not duplicated.
    """
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
                if isinstance(document, imports.Unreadable):
                    counts["failed"] += 1
                    console.print(f"[red]{label}:[/red] {document.reason}", markup=True)
                    progress.update(task, completed=source.progress)
                    continue
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

    run_on_database(work)
    print(
        f"imported {counts['created']} sessions ({counts['messages']} messages), "
        f"{counts['found']} imported before, {counts['failed']} failed"
    )
    if counts["failed"]:
        raise typer.Exit(1)


def seed(file: ReadableFile) -> None:
    """Create users, API keys and sessions from a JSON file (safe to run again).

    Run again, it adds only what is missing.
    Keys generated here are printed once: email, name, secret (tab-separated).
    """
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
            # Printed as each user's keys are committed: a later user's failure must not leave
            # a key stored whose secret was never shown (a run again finds it, and shows none).
            for email, name, secret in report.new_secrets:
                print(f"{email}\t{name}\t{secret}", flush=True)
            report.new_secrets.clear()

    run_on_database(work)
    console.print(
        f"users: {report.users_created} created, {report.users_found} found; "
        f"API keys: {report.keys_created} created, {report.keys_found} found; "
        f"sessions: {report.sessions_created} created, {report.sessions_found} found"
    )
