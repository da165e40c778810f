"""Talking to the model from the terminal: chat (interactive), ask (one turn), resume, follow.

The answer is printed as the service stores it. Ctrl-C during an answer cancels it on the
service (the text so far is kept); a dropped connection is reattached by the client itself.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Annotated

import httpx
import typer
from rich.markup import escape
from rich.text import Text

from chat_store.client import (
    ChatSession,
    ChatStoreError,
    ConflictError,
    Message,
    StreamDelta,
    StreamDone,
    StreamReset,
    StreamStale,
)
from chat_store.client.models import ChatTurn
from chat_store.terminal.connect import TerminalClient, open_client, reported_errors
from chat_store.terminal.output import (
    ExitCode,
    ask_user,
    fail,
    is_text,
    print_json,
    problem_line,
    shown,
    stderr_console,
    stdout_console,
    terminal_safe,
    unreachable_line,
)
from chat_store.terminal.refs import resolve_session
from chat_store.terminal.sessions import JsonOption, sessions_table, tool_call_lines
from chat_store.terminal.workspace import current_workspace

OPEN_STATUSES = frozenset({"pending", "in_progress"})
UNFINISHED_STATUSES = OPEN_STATUSES | {"failed", "cancelled"}

HELP = """\
/new             start a new session
/sessions        list recent sessions (numbered for /switch)
/switch N        switch to session N of the last list (or an id prefix)
/fork            continue in a copy of this session
/rename TITLE    rename this session
/retry           ask the last question again
/help            this help
/exit            leave (so do Ctrl-C and Ctrl-D at the prompt)"""

# What a turn's or a message's stream gives, in the order it comes.
StreamedItem = ChatTurn | StreamDelta | StreamReset | StreamStale | StreamDone


@dataclass
class Answer:
    """How a streamed answer ended."""

    message_id: uuid.UUID | None
    status: str
    error_message: str | None = None
    turn: ChatTurn | None = None  # the turn's event, when the stream began with one
    interrupted: bool = False  # Ctrl-C was pressed while it streamed
    shown: int = 0  # the length of the text printed so far


@contextlib.contextmanager
def _going_on() -> Iterator[None]:
    """An error answer (a refused turn, a 429, a 409) or an unreachable service, told in one
    line on stderr: the conversation goes on, and what was typed can be sent again (/retry)."""
    try:
        yield
    except ChatStoreError as exc:
        stderr_console().print(Text(problem_line(exc), style="red"), soft_wrap=True)
    except httpx.TransportError as exc:
        stderr_console().print(Text(unreachable_line(exc)), soft_wrap=True)


def _write(text: str) -> None:
    """An answer's text as it streams: as stored when it goes to a file or a pipe, without
    control characters when it goes to a terminal."""
    sys.stdout.write(terminal_safe(text) if sys.stdout.isatty() else text)
    sys.stdout.flush()


def _rewrite(reset: StreamReset) -> None:
    """The answer's writer replaced its text: said on stderr, and the text printed again from
    its start on a line of its own (stdout then ends with the text as stored)."""
    _write("\n")
    stderr_console().print("[yellow]its writer replaced the text; it is now:[/yellow]")
    _write(reset.text)


def _tell_stale(stale: StreamStale) -> None:
    """One line on stderr (the answer's text on stdout stays as stored); following goes on."""
    since = stale.since.astimezone().strftime("%H:%M:%S")
    stderr_console().print(
        f"\n[yellow]no change since {since} ({stale.length} characters, {stale.status}):"
        " its writer went silent; still following[/yellow]",
        soft_wrap=True,  # one line, however narrow the terminal
    )


def print_stream(
    client: TerminalClient,
    session_id: uuid.UUID,
    items: Iterable[StreamedItem],
    message_id: uuid.UUID | None = None,
    question: str | None = None,
    *,
    echo: bool = True,
) -> Answer:
    """Print an answer's text as it arrives (with `echo`; without, only follow it to its end).
    Ctrl-C cancels the answer on the service and keeps what was written; before the turn's id
    arrived, the answer to `question` is looked for."""
    answer = Answer(message_id, "in_progress")
    iterator: Iterator[StreamedItem] = iter(items)
    try:
        for item in iterator:
            if isinstance(item, ChatTurn):
                answer.message_id = item.assistant_message.id
                answer.turn = item
            elif isinstance(item, StreamDelta):
                if echo:
                    _write(item.delta)
                answer.shown = item.offset
            elif isinstance(item, StreamReset):
                if echo:
                    _rewrite(item)
                answer.shown = item.offset
            elif isinstance(item, StreamStale):
                _tell_stale(item)
            else:
                answer.status, answer.error_message = item.status, item.error_message
    except KeyboardInterrupt:
        answer.interrupted = True
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
        # A second Ctrl-C (people press twice) would cut the cancel itself short, and leave the
        # answer generating: it waits for the cancel instead.
        with _ctrl_c_ignored():
            rest, said = _cancel(client, session_id, answer, question)
        if echo:
            _write(rest + "\n")
        stderr_console().print(said, soft_wrap=True)
        return answer
    if not echo:
        return answer
    _write("\n")
    if answer.status == "complete" and answer.message_id is not None:
        _tell_tool_calls(client, session_id, answer.message_id)
    if answer.status == "failed":
        reason = shown(answer.error_message or "no reason given")
        stderr_console().print(
            f"[red]the answer failed:[/red] {escape(reason)}"
            " (`/retry`, or `chat-store resume` to continue it)"
        )
    return answer


def _cancel(
    client: TerminalClient, session_id: uuid.UUID, answer: Answer, question: str | None
) -> tuple[str, Text]:
    """Cancel the answer on the service: the rest of its text (when it had ended meanwhile,
    what was not printed yet) and what to say of it."""
    answer.status = "interrupted"
    try:
        if answer.message_id is None and question is not None:
            answer.message_id = _open_answer_to(client, session_id, question)
        if answer.message_id is None:
            return "", Text("interrupted before the answer started", style="yellow")
        try:
            answer.status = client.cancel(session_id, answer.message_id).status
        except ChatStoreError as exc:
            if exc.status != 409:
                raise
            # It ended meanwhile, nothing to cancel: shown as it ended, its text whole.
            final = client.get_message(session_id, answer.message_id)
            answer.status, answer.error_message = final.status, final.error_message
            return final.text[answer.shown :], Text(
                f"it had ended {final.status} meanwhile", style="yellow"
            )
    except ChatStoreError as exc:
        return "", Text(problem_line(exc), style="red")
    except httpx.TransportError as exc:
        return "", Text(unreachable_line(exc))
    return "", Text(f"{answer.status}: the text so far is kept", style="yellow")


@contextlib.contextmanager
def _ctrl_c_ignored() -> Iterator[None]:
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: signals are not this code's to set
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _tell_tool_calls(client: TerminalClient, session_id: uuid.UUID, message_id: uuid.UUID) -> None:
    """An answer that asks for tools has them in the stored message, not in its text: said on
    stderr (stdout keeps the answer's text as stored), since this terminal runs no tools. The
    answer is complete whatever becomes of this read: a failed one is not an error."""
    try:
        calls = tool_call_lines(client.get_message(session_id, message_id))
    except (ChatStoreError, httpx.TransportError):
        return
    if calls:
        stderr_console().print(
            "[yellow]the model asked for tools, which this terminal does not run:[/yellow]"
        )
        for line in calls:
            stderr_console().print(Text(shown(line)), soft_wrap=True)


# How long a turn interrupted before its id arrived may take to be stored: the request was on
# its way, and the service stores the turn whatever became of the connection.
_TURN_LOOKUPS = (0.0, 0.5, 1.5)


def _open_answer_to(
    client: TerminalClient, session_id: uuid.UUID, question: str
) -> uuid.UUID | None:
    """The id of the answer being generated to `question`, if the session ends with that turn
    (one generation at a time runs in a session: an open answer after it is this turn's)."""
    for delay in _TURN_LOOKUPS:
        time.sleep(delay)
        newest = client.list_messages(session_id, order="desc", limit=2).data
        if (
            len(newest) == 2
            and newest[0].role == "assistant"
            and newest[0].status in {"pending", "in_progress"}
            and newest[1].role == "user"
            and newest[1].content == question
        ):
            return newest[0].id
    return None


def _pick_session(client: TerminalClient) -> tuple[ChatSession, list[ChatSession]]:
    """The session picked, and the numbered list it was picked from (for /switch N)."""
    recent = client.list_sessions(limit=10).data
    if not recent:
        return client.create_session(workspace=current_workspace()), []
    console = stdout_console()
    console.print(sessions_table(recent, numbered=True))
    console.print("  0  (new session)")
    while True:
        choice = ask_user("Pick a session", default="1").strip()
        if choice.isdigit() and 0 <= int(choice) <= len(recent):
            if choice == "0":
                return client.create_session(workspace=current_workspace()), recent
            return recent[int(choice) - 1], recent
        console.print(f"a number from 0 to {len(recent)}")


_NOT_TEXT = (
    "[red]that line is not UTF-8 text (is the terminal set to another encoding?); "
    "nothing was sent[/red]"
)


_PROMPT = "you> "
_NOT_UTF8 = "\udcff"  # stands for a line whose bytes are not UTF-8 (refused as not text)


def _read_line(prompt: str) -> str:
    """The next line typed; EOFError at the end of the input. From a pipe or a file, a line at a
    time as bytes: one that is not UTF-8 is refused alone, the lines after it still read."""
    if sys.stdin.isatty():
        try:
            return input(prompt)
        except UnicodeDecodeError:
            return _NOT_UTF8
    _write(prompt)
    raw = sys.stdin.buffer.readline()
    if not raw:
        raise EOFError
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        return _NOT_UTF8


def _line_editing() -> None:
    """Arrow keys, Home and End edit the line at `you>` (and Up goes back through it), rather
    than going to the model as escape sequences: what `readline` gives `input()`."""
    with contextlib.suppress(ImportError):  # Windows: no readline
        import readline  # noqa: F401


class ChatLoop:
    """The interactive session: the prompt, slash commands and turns."""

    def __init__(self, client: TerminalClient, chat_session: ChatSession) -> None:
        self.client = client
        self.session = chat_session
        self.listed: list[ChatSession] = []
        self.last_question: str | None = None
        self.console = stdout_console()

    def banner(self) -> None:
        title = shown(self.session.title or "(untitled)")
        self.console.print(f"[bold]{escape(title)}[/bold] {self.session.id}  (/help for commands)")

    def run(self) -> None:
        _line_editing()
        self.banner()
        while True:
            try:
                line = _read_line(_PROMPT)
            except EOFError:
                _write("\n")
                return
            except KeyboardInterrupt:
                _write("\n")
                raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
            if not is_text(line):
                stderr_console().print(_NOT_TEXT)
                continue
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                if not self.command(line):
                    return
                continue
            self.turn(line)

    def turn(self, question: str) -> None:
        self.last_question = question
        with _going_on():
            items = self.client.chat(self.session.id, question)
            print_stream(self.client, self.session.id, items, question=question)

    def command(self, line: str) -> bool:
        """Run a slash command; False to leave."""
        name, _, argument = line.partition(" ")
        argument = argument.strip()
        with _going_on():
            if name in ("/exit", "/quit"):
                return False
            if name == "/help":
                self.console.print(HELP, markup=False)
            elif name == "/new":
                self.session = self.client.create_session(
                    title=argument or None, workspace=current_workspace()
                )
                self.banner()
            elif name == "/sessions":
                self.listed = self.client.list_sessions(limit=20).data
                self.console.print(sessions_table(self.listed, numbered=True))
            elif name == "/switch":
                self.switch(argument)
            elif name == "/fork":
                self.fork()
            elif name == "/rename":
                if not argument:
                    self.console.print("usage: /rename TITLE")
                else:
                    self.session = self.client.rename_session(self.session.id, argument)
                    self.console.print(f"renamed to {escape(repr(self.session.title))}")
            elif name == "/retry":
                if self.last_question is None:
                    self.console.print("nothing to retry yet")
                else:
                    self.turn(self.last_question)
            else:
                self.console.print(f"unknown command {escape(name)}; /help lists them")
        return True

    def fork(self) -> None:
        newest = self.client.list_messages(self.session.id, order="desc", limit=1).data
        if not newest:
            self.console.print("nothing to fork yet: the session has no messages")
            return
        self.session = self.client.fork_session(self.session.id, newest[0].id)
        self.console.print("now in a copy of the session")
        self.banner()

    def switch(self, argument: str) -> None:
        if argument.isdigit() and self.listed and 1 <= int(argument) <= len(self.listed):
            self.session = self.listed[int(argument) - 1]
        elif argument:
            try:
                self.session = resolve_session(self.client, argument)
            except typer.Exit:  # resolve_session has said why
                return
        else:
            self.console.print("usage: /switch N (after /sessions) or /switch ID-PREFIX")
            return
        self.banner()


def chat(
    session: Annotated[
        str | None, typer.Argument(help="Session id, prefix or `last`; asked when left out.")
    ] = None,
) -> None:
    """Chat with the model in a session: the answer streams as it is written.

    Ctrl-C during an answer cancels it on the service (its text so far is kept).
    At the prompt, Ctrl-C, Ctrl-D or /exit leaves.
    Commands: /new, /sessions, /switch N, /fork, /rename TITLE, /retry, /help.
    """
    client = open_client()
    with client:
        listed: list[ChatSession] = []
        with reported_errors():
            if session:
                chosen = resolve_session(client, session)
            else:
                chosen, listed = _pick_session(client)
        loop = ChatLoop(client, chosen)
        loop.listed = listed
        loop.run()


def ask(
    question: Annotated[
        str | None, typer.Argument(help="The question; read from stdin when left out.")
    ] = None,
    session: Annotated[
        str | None, typer.Option(help="Ask in this session (default: a new one).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Ask one question and print the answer (plain text when not on a terminal)."""
    if question is None:
        if sys.stdin.isatty():
            fail("give the question as an argument or on stdin", ExitCode.USAGE)
        try:
            question = sys.stdin.buffer.read().decode("utf-8")
        except UnicodeDecodeError:
            fail("the question on stdin is not UTF-8 text", ExitCode.USAGE)
    if not is_text(question):
        fail("the question is not UTF-8 text", ExitCode.USAGE)
    if not question.strip():
        fail("the question is empty", ExitCode.USAGE)
    client = open_client()
    with client, reported_errors():
        if session:
            target = resolve_session(client, session)
        else:
            target = client.create_session(workspace=current_workspace())
        items = client.chat(target.id, question)
        # With --json: the answer followed to its end (Ctrl-C cancels it, as without), then
        # both messages as stored.
        try:
            answer = print_stream(client, target.id, items, question=question, echo=not as_json)
        except (ChatStoreError, httpx.TransportError):
            if not session:
                _forget_if_empty(client, target.id)
            raise
        if as_json and answer.turn is not None:
            final = client.get_message(target.id, answer.turn.assistant_message.id)
            answer.status = final.status
            print_json(
                {
                    "session_id": target.id,
                    "user_message": answer.turn.user_message,
                    "assistant_message": final,
                }
            )
        elif as_json and not answer.interrupted:
            fail("the service answered no turn")
    if answer.status in ("cancelled", "interrupted"):
        raise typer.Exit(int(ExitCode.INTERRUPTED))
    if answer.status != "complete":
        raise typer.Exit(int(ExitCode.ERROR))


def _forget_if_empty(client: TerminalClient, session_id: uuid.UUID) -> None:
    """The session `ask` made for a turn the service refused: deleted, so that `last` is not an
    empty session. Kept if the turn was stored after all (a connection lost after it)."""
    with contextlib.suppress(ChatStoreError, httpx.TransportError):
        if not client.list_messages(session_id, limit=1).data:
            client.delete_session(session_id)


def _newest_assistant(client: TerminalClient, session_id: uuid.UUID) -> Message | None:
    for message in client.iter_messages(session_id, order="desc"):
        if message.role == "assistant":
            return message
    return None


def _answer_to_resume(client: TerminalClient, session_id: uuid.UUID) -> Message | None:
    """The session's newest answer if it is unfinished and no user message came after it: an
    answer asked again since (or followed by a question) is history, not to be continued."""
    for message in client.iter_messages(session_id, order="desc"):
        if message.role == "user":
            return None
        if message.role == "assistant":
            return message if message.status in UNFINISHED_STATUSES else None
    return None


def resume(
    session: Annotated[str, typer.Argument(help="Session id, prefix or `last`.")] = "last",
) -> None:
    """Continue the newest answer on the service and stream it, when it is interrupted."""
    client = open_client()
    with client, reported_errors():
        target = resolve_session(client, session)
        message = _answer_to_resume(client, target.id)
        if message is None:
            fail(
                "no interrupted answer in this session (its newest answer is complete, or a "
                "question came after it)",
                ExitCode.NOT_FOUND,
            )
        if message.status == "cancelled":
            # The service continues no cancelled answer (409): ask again instead.
            fail(
                "the newest unfinished answer was cancelled, and a cancelled answer is not "
                "continued: ask again (/retry in `chat-store chat`)",
                ExitCode.NOT_FOUND,
            )
        try:
            message = client.continue_message(target.id, message.id)
        except ConflictError as exc:
            if exc.code != "generation_in_progress":
                raise
            # Still generated somewhere (a takeover, another terminal): follow it instead.
            message = client.get_message(target.id, message.id)
        _write(message.text)
        items = client.follow(target.id, message.id, offset=len(message.text))
        answer = print_stream(client, target.id, items, message.id)
    if answer.status != "complete":
        raise typer.Exit(int(ExitCode.ERROR))


def follow(
    session: Annotated[str, typer.Argument(help="Session id, prefix or `last`.")],
    message: Annotated[
        str | None, typer.Argument(help="Message id (default: the newest answer).")
    ] = None,
) -> None:
    """Follow a live answer from another terminal, from its first character."""
    client = open_client()
    with client, reported_errors():
        target = resolve_session(client, session)
        if message is not None:
            try:
                message_id = uuid.UUID(message)
            except ValueError:
                fail(f"not a message id: {message!r}", ExitCode.USAGE)
        else:
            newest = _newest_assistant(client, target.id)
            if newest is None:
                fail("no answer in this session yet", ExitCode.NOT_FOUND)
            message_id = newest.id
        try:
            for item in client.follow(target.id, message_id):
                if isinstance(item, StreamDelta):
                    _write(item.delta)
                elif isinstance(item, StreamReset):
                    _rewrite(item)
                elif isinstance(item, StreamStale):
                    _tell_stale(item)
                elif isinstance(item, StreamDone):
                    _write("\n")
                    if item.status != "complete":
                        stderr_console().print(f"[yellow]the answer ended {item.status}[/yellow]")
        except KeyboardInterrupt:  # following only: the answer goes on
            _write("\n")
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
