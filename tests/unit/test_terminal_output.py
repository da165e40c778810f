"""What the terminal program writes: an answer's control characters, a title's brackets."""

from __future__ import annotations

import io
import sys
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from rich.console import Console

from chat_store.client._follow import retryable
from chat_store.client.errors import error_from_response
from chat_store.client.models import ChatSession
from chat_store.terminal import conversation
from chat_store.terminal.sessions import sessions_table


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_control_characters_of_an_answer_do_not_reach_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = "ok\x1b]52;c;ZXZpbA==\x07 \x1b[8mhidden\x1b[0m\tdone\r\n\x9b2J é😀"
    terminal, pipe = _Terminal(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", terminal)
    conversation._write(text)
    monkeypatch.setattr(sys, "stdout", pipe)
    conversation._write(text)

    assert terminal.getvalue() == "ok]52;c;ZXZpbA== [8mhidden[0m\tdone\n2J é😀"
    assert pipe.getvalue() == text  # to a file or a pipe: as stored


def test_a_title_with_brackets_is_shown_as_it_is() -> None:
    now = datetime.now(UTC)
    session = ChatSession.model_validate(
        {
            "id": str(uuid.uuid4()),
            "object": "session",
            "title": "why does x[/2] fail [bold]",
            "is_favorite": False,
            "status": "active",
            "metadata": {},
            "workspace": None,
            "system_prompt": None,
            "message_count": 1,
            "total_tokens": 0,
            "last_message_at": now.isoformat(),
            "created_at": now.isoformat(),
            "updated_at": now.isoformat(),
            "ended_at": None,
            "archived_at": None,
        }
    )
    console = Console(file=io.StringIO(), width=200)
    console.print(sessions_table([session]))
    assert "why does x[/2] fail [bold]" in console.file.getvalue()  # type: ignore[attr-defined]


def test_in_a_conversation_an_error_is_one_line_and_it_goes_on(
    capsys: pytest.CaptureFixture[str],
) -> None:
    refused = error_from_response(
        httpx.Response(
            429,
            json={
                "type": "urn:chat-store:problem:rate_limited",
                "title": "Too many requests",
                "status": 429,
                "detail": "x[/2] too many writes",
                "code": "rate_limited",
            },
            headers={"Content-Type": "application/problem+json"},
        )
    )
    for error in (refused, httpx.ConnectError("connection refused")):
        with conversation._going_on():
            raise error
    told = capsys.readouterr().err.splitlines()
    assert told == [
        "Too many requests: x[/2] too many writes (rate_limited)",
        "cannot reach the service: ConnectError: connection refused",
    ]


def test_a_service_without_a_provider_is_not_asked_again_and_again() -> None:
    unavailable = error_from_response(
        httpx.Response(503, json={"code": "generation_unavailable", "detail": "no provider"})
    )
    busy = error_from_response(httpx.Response(503, json={"code": "service_unavailable"}))
    assert not retryable(unavailable)
    assert retryable(busy)


def test_an_unknown_command_with_brackets_is_told_as_typed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    talk = object.__new__(conversation.ChatLoop)
    talk.console = Console(file=io.StringIO(), width=200)
    assert talk.command("/x[/y]") is True  # the conversation goes on
    assert "unknown command /x[/y]" in talk.console.file.getvalue()  # type: ignore[attr-defined]


ESCAPES = "\x1b]52;c;ZXZpbA==\x1b\\ \x1b[8mhidden\x1b[0m \x9b2J"  # a clipboard write, hidden text


def _now() -> str:
    return datetime.now(UTC).isoformat()


def test_show_search_and_titles_send_no_escape_sequence_to_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only the streamed answer dropped them: `show`, the session tables, the chat banner and
    `search` printed stored text with its escape sequences."""
    from chat_store.client.models import Message, SearchResult
    from chat_store.terminal import search, sessions

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    session_id = str(uuid.uuid4())
    message = Message.model_validate(
        {
            "id": str(uuid.uuid4()),
            "session_id": session_id,
            "seq": 2,
            "role": "assistant",
            "content": f"ok {ESCAPES}",
            "status": "complete",
            "created_at": _now(),
            "updated_at": _now(),
        }
    )
    titled = ChatSession.model_validate(
        {
            "id": session_id,
            "title": f"title {ESCAPES}",
            "is_favorite": False,
            "status": "active",
            "message_count": 1,
            "total_tokens": 0,
            "created_at": _now(),
            "updated_at": _now(),
        }
    )
    snippet = f"match {ESCAPES} match"
    hit = SearchResult.model_validate(
        {
            "session": {"id": session_id, "title": f"t {ESCAPES}"},
            "message": {
                "id": str(uuid.uuid4()),
                "seq": 2,
                "role": "assistant",
                "created_at": _now(),
            },
            "snippet": snippet,
            "highlights": [[len(snippet) - 5, len(snippet)]],
            "rank": 1.0,
        }
    )

    sessions.render_message(message)
    console = sessions.stdout_console()
    console.print(sessions_table([titled]))
    console.print(search.results_table([hit], emphasize=True))
    conversation.ChatLoop(client=None, chat_session=titled).banner()  # type: ignore[arg-type]

    written = terminal.getvalue()
    assert "\x1b]52" not in written and "\x1b[8m" not in written and "\x9b" not in written
    assert "hidden" in written and "\ufffd" in written
    # The match is still the last word: one mark for each character taken out.
    emphasized = search.snippet_text(hit, emphasize=True)
    assert [emphasized.plain[span.start : span.end] for span in emphasized.spans] == ["match"]


def test_show_of_windows_line_ends_marks_no_character(monkeypatch: pytest.MonkeyPatch) -> None:
    from chat_store.client.models import Message
    from chat_store.terminal import sessions

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    message = Message.model_validate(
        {
            "id": str(uuid.uuid4()),
            "session_id": str(uuid.uuid4()),
            "seq": 1,
            "role": "user",
            "content": "first line\r\nsecond line\r\n",
            "status": "complete",
            "created_at": _now(),
            "updated_at": _now(),
        }
    )
    sessions.render_message(message)
    assert "\ufffd" not in terminal.getvalue() and "\r" not in terminal.getvalue()
    assert "first line" in terminal.getvalue() and "second line" in terminal.getvalue()
