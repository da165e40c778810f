"""`chat-store search`: your messages and session titles that match a query, best first."""

from __future__ import annotations

from typing import Annotated, cast, get_args

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from chat_store.client import SearchResult
from chat_store.client.models import MessageRole
from chat_store.terminal.connect import open_client, reported_errors
from chat_store.terminal.output import (
    ExitCode,
    fail,
    is_terminal,
    print_json,
    shown,
    stdout_console,
)
from chat_store.terminal.refs import resolve_session

ROLES: tuple[str, ...] = get_args(MessageRole)


def snippet_text(result: SearchResult, *, emphasize: bool) -> Text:
    """The excerpt, its matches in bold on a terminal (plain text otherwise, for pipes)."""
    text = Text(shown(result.snippet))
    if emphasize:
        for start, end in result.highlights:
            text.stylize("bold yellow", start, end)
    return text


def results_table(results: list[SearchResult], *, emphasize: bool) -> Table:
    table = Table(show_edge=False, pad_edge=False, header_style="bold")
    for name in ("session", "role", "seq", "snippet"):
        table.add_column(name, justify="right" if name == "seq" else "left")
    for result in results:
        message = result.message
        table.add_row(
            Text(shown(result.session.title or "(untitled)")),
            message.role if message else "title",
            str(message.seq) if message else "",
            snippet_text(result, emphasize=emphasize),
        )
    return table


def search(
    query: Annotated[
        str,
        typer.Argument(
            help='Words, "quoted phrases", -excluded, `or` between alternatives.',
            show_default=False,
        ),
    ],
    session: Annotated[
        str | None,
        typer.Option("--session", help="Only this session (an id, a unique prefix, or `last`)."),
    ] = None,
    role: Annotated[
        str | None, typer.Option("--role", help=f"Only messages of this role: {', '.join(ROLES)}.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100, help="How many results.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Search your messages and session titles, best match first."""
    if role is not None and role not in ROLES:
        fail(f"--role: one of {', '.join(ROLES)} (not {role!r})", ExitCode.USAGE)
    client = open_client()
    with reported_errors(), client:
        session_id = resolve_session(client, session).id if session is not None else None
        chosen = cast(MessageRole | None, role)
        page = client.search(query, limit=limit, session_id=session_id, role=chosen)
    if as_json:
        print_json(page.data)
    elif not page.data:
        stdout_console().print(f"Nothing matches {escape(repr(query))}.")
    else:
        stdout_console().print(results_table(page.data, emphasize=is_terminal()))
