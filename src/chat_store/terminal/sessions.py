"""Account and session commands: login, logout, whoami, sessions, new, show, rename, favorite,
delete."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markdown import Markdown
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from chat_store.client import ChatSession, ChatStoreClient, ExportFormat, Message
from chat_store.terminal import config
from chat_store.terminal.connect import TerminalClient, open_client, reported_errors
from chat_store.terminal.output import (
    ExitCode,
    ask_user,
    confirm,
    fail,
    is_terminal,
    print_json,
    shown,
    stderr_console,
    stdout_console,
)
from chat_store.terminal.refs import resolve_session, short_ids
from chat_store.terminal.workspace import current_workspace

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
SessionArgument = Annotated[
    str, typer.Argument(help="Session id, a unique id prefix, or `last`.", show_default=False)
]


def login(
    url: Annotated[
        str | None,
        typer.Option(help=f"Service URL (default: ${config.URL_ENV} or {config.DEFAULT_URL})."),
    ] = None,
    email: Annotated[str | None, typer.Option(help="Your email (asked when missing).")] = None,
    api_key: Annotated[
        bool, typer.Option("--api-key", help="Log in with an API key (asked, hidden).")
    ] = False,
) -> None:
    """Log in and keep the login in your config folder (mode 0600)."""
    base_url = (url or config.default_url()).rstrip("/")
    with reported_errors():
        if api_key:
            secret = ask_user("API key", hide_input=True).strip()
            record = config.Login(url=base_url, api_key=secret)
            client = TerminalClient(record, persist=False)
            with client:
                user = client.me()
            record = config.Login(url=base_url, email=user.email, api_key=secret)
        else:
            address = email or ask_user("Email").strip()
            password = ask_user("Password", hide_input=True)
            record = config.Login(url=base_url, email=address)
            with TerminalClient(record, persist=False) as client:
                tokens = client.login(address, password)
                user = client.me()
            record = config.Login(
                url=base_url,
                email=user.email,
                access_token=tokens.access_token,
                refresh_token=tokens.refresh_token,
            )
    try:
        # Under the lock: a running process refreshing the old login sees the new one whole.
        with config.locked():
            path = config.save(record)
    except OSError as exc:
        _end_unsaved(record)
        fail(
            f"cannot keep the login in {config.login_path()}: "
            f"{exc.strerror or type(exc).__name__} (CHAT_STORE_CONFIG_DIR sets the folder)"
        )
    stdout_console().print(escape(f"Logged in to {base_url} as {user.email}; login kept in {path}"))


def _end_unsaved(record: config.Login) -> None:
    """A login that could not be kept is ended on the service: its tokens are nowhere else."""
    if not record.refresh_token:
        return
    try:
        with ChatStoreClient(record.url, access_token=record.access_token) as client:
            client.logout(record.refresh_token)
    except Exception as exc:
        sys.stderr.write(f"warning: the service was not told ({type(exc).__name__})\n")


def logout() -> None:
    """End this login on the service and forget it here."""
    saved = config.load()
    if saved is None:
        stdout_console().print("Not logged in.")
        return
    if saved.refresh_token:
        try:
            with ChatStoreClient(saved.url, access_token=saved.access_token) as client:
                client.logout(saved.refresh_token)
        except Exception as exc:  # the file goes anyway; say why the server was not told
            sys.stderr.write(f"warning: the service was not told ({type(exc).__name__})\n")
    config.remove()
    stdout_console().print(escape(f"Logged out of {saved.url}."))


def whoami(as_json: JsonOption = False) -> None:
    """Who you are logged in as, and where."""
    client = open_client()
    with reported_errors(), client:
        user = client.me()
    how = "api key" if client.login_record.api_key else "login"
    if as_json:
        print_json({"url": client.login_record.url, "credential": how, "user": user})
        return
    stdout_console().print(
        escape(f"{user.email} ({user.id}) at {client.login_record.url}, by {how}")
    )


def _ago(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    seconds = int((datetime.now(UTC) - moment).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return "just now"


def sessions_table(items: list[ChatSession], *, numbered: bool = False) -> Table:
    table = Table(show_edge=False, pad_edge=False, header_style="bold")
    if numbered:
        table.add_column("#", justify="right")
    for name in ("id", "title", "last activity", "messages", "fav", "repo"):
        table.add_column(name, justify="right" if name == "messages" else "left")
    short = short_ids([item.id for item in items])
    for index, item in enumerate(items, start=1):
        row: list[str | Text] = [
            short[item.id],
            Text(shown(item.title or "(untitled)")),
            _ago(item.last_message_at or item.updated_at),
            str(item.message_count),
            "*" if item.is_favorite else "",
            Text(shown((item.workspace.repo if item.workspace else None) or "")),
        ]
        table.add_row(*([str(index)] if numbered else []), *row)
    return table


def sessions(
    favorite: Annotated[bool, typer.Option("--favorite", help="Only favourites.")] = False,
    repo: Annotated[str | None, typer.Option(help="Only sessions of this repo.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100, help="How many.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """List your sessions, most recent activity first."""
    client = open_client()
    with reported_errors(), client:
        page = client.list_sessions(limit=limit, favorite=True if favorite else None, repo=repo)
    if as_json:
        print_json(page.data)
    elif not page.data:
        stdout_console().print("No sessions yet: `chat-store chat` starts one.")
    else:
        stdout_console().print(sessions_table(page.data))


def new(
    title: Annotated[str | None, typer.Option(help="Title.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Start a session (repo and branch taken from the current git checkout)."""
    client = open_client()
    with reported_errors(), client:
        created = client.create_session(title=title, workspace=current_workspace())
    if as_json:
        print_json(created)
    else:
        stdout_console().print(f"Started session {created.id}")


def tool_call_lines(message: Message) -> list[str]:
    """The calls an assistant message made, one line each: `→ name(arguments) [id]`."""
    return [f"→ {call.name}({call.arguments}) [{call.id}]" for call in message.tool_calls or ()]


def render_message(message: Message) -> None:
    console = stdout_console()
    label = message.role if message.status == "complete" else f"{message.role} ({message.status})"
    if message.tool_call_id is not None:
        label = f"{label}, result of {message.tool_call_id}"
    calls = tool_call_lines(message)
    if is_terminal():
        console.rule(Text(shown(label), style="bold"), align="left")
        if message.text:
            console.print(Markdown(shown(message.text)))
        for line in calls:
            console.print(Text(shown(line), style="cyan"))
    else:
        text = "\n".join(part for part in (message.text, *calls) if part)
        console.print(f"## {label}\n\n{text}\n", markup=False)


def show(session: SessionArgument, as_json: JsonOption = False) -> None:
    """Print a session's messages, markdown rendered."""
    client = open_client()
    with reported_errors(), client:
        chat_session = resolve_session(client, session)
        messages = list(client.iter_messages(chat_session.id))
    if as_json:
        print_json({"session": chat_session, "messages": messages})
        return
    stdout_console().print(
        f"[bold]{escape(shown(chat_session.title or '(untitled)'))}[/bold]  {chat_session.id}"
    )
    for message in messages:
        render_message(message)


def rename(
    session: SessionArgument,
    title: Annotated[str, typer.Argument(help="The new title.")],
    as_json: JsonOption = False,
) -> None:
    """Rename a session."""
    client = open_client()
    with reported_errors(), client:
        renamed = client.rename_session(resolve_session(client, session).id, title)
    if as_json:
        print_json(renamed)
    else:
        stdout_console().print(escape(f"Renamed {renamed.id} to {renamed.title!r}"))


def favorite(
    session: SessionArgument,
    remove: Annotated[bool, typer.Option("--remove", help="Unmark it.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Mark a session as a favourite (or unmark it with --remove)."""
    client = open_client()
    with reported_errors(), client:
        changed = client.set_favorite(resolve_session(client, session).id, not remove)
    if as_json:
        print_json(changed)
    else:
        state = "a favourite" if changed.is_favorite else "not a favourite"
        stdout_console().print(f"{changed.id} is {state}")


def delete(
    session: SessionArgument,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete a session and its messages (asks first)."""
    client = open_client()
    with reported_errors(), client:
        target = resolve_session(client, session)
        if not yes:
            if not sys.stdin.isatty():
                fail("not deleting without --yes when not asked at a terminal", ExitCode.USAGE)
            name = target.title or "(untitled)"
            if not confirm(f"Delete {name!r} ({target.message_count} messages)?"):
                raise typer.Exit(int(ExitCode.ERROR))
        client.delete_session(target.id)
    stdout_console().print(f"Deleted {target.id}")


_FORMATS: dict[str, ExportFormat] = {
    "md": "markdown",
    "markdown": "markdown",
    "json": "json",
    "jsonl": "jsonl",
}


def _check_writable(output: Path) -> None:
    """Before anything is asked of the service: an --output that cannot be a file."""
    if output.is_dir():
        fail(f"--output: {output} is a folder; name a file in it", ExitCode.USAGE)
    folder = output.parent
    if not folder.is_dir():
        fail(f"--output: there is no folder {folder}", ExitCode.USAGE)


def export(
    session: SessionArgument,
    export_format: Annotated[
        str, typer.Option("--format", "-f", help="md, json or jsonl (chat-store/1).")
    ] = "md",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file (default: stdout).")
    ] = None,
) -> None:
    """Export a session as markdown, or as chat-store/1 JSON or JSONL."""
    chosen = _FORMATS.get(export_format.lower())
    if chosen is None:
        fail(f"--format: one of md, json, jsonl (not {export_format!r})", ExitCode.USAGE)
    if output is not None:
        _check_writable(output)
    client = open_client()
    with reported_errors(), client:
        target = resolve_session(client, session)
        chunks = client.iter_export(target.id, export_format=chosen)
        if output is None:
            for chunk in chunks:
                sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
            return
        # Into a temporary file first: an export cut short never leaves a half file behind.
        partial = output.with_name(f".{output.name}.partial")
        try:
            with partial.open("wb") as file:
                for chunk in chunks:
                    file.write(chunk)
            partial.replace(output)
        except OSError as exc:
            fail(f"cannot write {output}: {exc.strerror or type(exc).__name__}")
        finally:
            partial.unlink(missing_ok=True)
    stderr_console().print(escape(f"Exported {target.id} to {output}"))
