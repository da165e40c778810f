"""How the terminal client speaks: results on stdout (tables, markdown or JSON), errors as one
line on stderr, and the documented exit codes."""

from __future__ import annotations

import contextlib
import enum
import json
import os
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

import httpx
import typer
from pydantic import BaseModel
from rich.console import Console
from rich.text import Text

from chat_store.client import ChatStoreError, NotFoundError, UnauthorizedError


class ExitCode(enum.IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    NOT_LOGGED_IN = 3
    NOT_FOUND = 4
    INTERRUPTED = 130


# The control characters but newline and tab (C0, DEL, C1): stored text (an answer, a title, a
# search excerpt) may hold escape sequences (a model's, or one injected by a retrieved
# document), and a terminal acts on them: writing the clipboard, hiding text, switching screens.
_CONTROL_CODES = [*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F, *range(0x80, 0xA0)]
_CONTROLS_DROPPED = dict.fromkeys(_CONTROL_CODES)
# A carriage return (a line end of Windows, `\r\n`) is a space: marked, every such line would
# end in U+FFFD.
_CONTROLS_MARKED = dict.fromkeys(_CONTROL_CODES, "\ufffd") | {0x0D: " "}


def terminal_safe(text: str) -> str:
    """A streamed answer's text for a terminal: its control characters dropped."""
    return text.translate(_CONTROLS_DROPPED)


def shown(text: str) -> str:
    """Stored text as a table, a heading or markdown shows it: each control character a U+FFFD,
    a carriage return a space (one for one, so that a search match's offsets still hold)."""
    return text.translate(_CONTROLS_MARKED)


def _color(stream: Any) -> bool:
    # Colors only on a terminal, and never with NO_COLOR set (https://no-color.org).
    return "NO_COLOR" not in os.environ and bool(getattr(stream, "isatty", lambda: False)())


def stdout_console() -> Console:
    color = _color(sys.stdout)
    return Console(
        file=sys.stdout,
        no_color=not color,
        color_system="auto" if color else None,
        highlight=False,
        soft_wrap=not sys.stdout.isatty(),
    )


def stderr_console() -> Console:
    color = _color(sys.stderr)
    return Console(
        file=sys.stderr, no_color=not color, color_system="auto" if color else None, highlight=False
    )


def is_terminal() -> bool:
    return sys.stdout.isatty()


def print_json(value: Any) -> None:
    """One JSON document on stdout (models as the API sends them)."""
    text = json.dumps(to_jsonable(value), ensure_ascii=False, indent=2, default=str)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def to_jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [to_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {key: to_jsonable(item) for key, item in value.items()}
    return value


def fail(message: str, code: ExitCode = ExitCode.ERROR) -> NoReturn:
    """One line on stderr, then exit with `code`."""
    # One line whatever the terminal's width: a script reads it, a person copies it.
    stderr_console().print(Text("error:", style="red"), Text(message), soft_wrap=True)
    raise typer.Exit(int(code))


def problem_line(exc: ChatStoreError) -> str:
    """An error answer in one line: the problem's title, detail and code (and the request's id
    for a server error, to find it in the service's log)."""
    title = exc.problem.get("title") if isinstance(exc.problem.get("title"), str) else None
    detail = exc.detail if not title or exc.detail == title else f"{title}: {exc.detail}"
    suffix = f", request {exc.request_id}" if exc.status >= 500 and exc.request_id else ""
    return f"{detail} ({exc.code}{suffix})"


def unreachable_line(exc: httpx.TransportError) -> str:
    return f"cannot reach the service: {type(exc).__name__}: {exc}"


def api_error(exc: ChatStoreError) -> NoReturn:
    """An error answer as one line, then the exit code that says what kind it was."""
    if isinstance(exc, UnauthorizedError):
        fail(f"{problem_line(exc)}; run `chat-store login`", ExitCode.NOT_LOGGED_IN)
    if isinstance(exc, NotFoundError):
        fail(problem_line(exc), ExitCode.NOT_FOUND)
    fail(problem_line(exc))


@contextlib.contextmanager
def _abort_is_interrupt() -> Iterator[None]:
    """Ctrl-C or Ctrl-D at a prompt (typer's Abort, "Aborted." and exit 1) is an interrupt, as
    everywhere else: exit 130."""
    try:
        yield
    except typer.Abort:
        sys.stderr.write("\n")
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None


def ask_user(text: str, **options: Any) -> Any:
    """typer.prompt, with Ctrl-C or Ctrl-D at it an interrupt (exit 130)."""
    with _abort_is_interrupt():
        return typer.prompt(text, **options)


def confirm(text: str) -> bool:
    """typer.confirm, with Ctrl-C or Ctrl-D at it an interrupt (exit 130)."""
    with _abort_is_interrupt():
        return typer.confirm(text)


def is_text(value: str) -> bool:
    """Whether `value` is text the service can store: a line read from a terminal whose bytes
    were not UTF-8 arrives with lone surrogates in it (Python's surrogateescape)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
