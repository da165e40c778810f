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
