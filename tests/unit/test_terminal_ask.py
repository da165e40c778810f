"""`chat-store ask`: its exit status and Ctrl-C are the same with --json as without."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from chat_store import cli
from chat_store.client import (
    ChatTurn,
    ConflictError,
    PayloadTooLargeError,
    StreamDelta,
    StreamDone,
    StreamReset,
)
from chat_store.client.models import ChatSession, Message
from chat_store.terminal import conversation


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _message(role: str, status: str, text: str, session_id: uuid.UUID) -> Message:
    complete = status == "complete"
    return Message.model_validate(
        {
            "id": str(uuid.uuid4()),
            "session_id": str(session_id),
            "seq": 1 if role == "user" else 2,
            "role": role,
            "content": text if complete else None,
            "partial_content": None if complete else text,
            "status": status,
            "created_at": _now(),
            "updated_at": _now(),
        }
    )


class _Service:
    """What `ask` asks of the client: a turn whose answer ends as `status`, or is interrupted
    (Ctrl-C) after its first delta."""

    def __init__(self, status: str, *, interrupt: bool, before_turn: bool = False) -> None:
        self.session = ChatSession.model_validate(
            {
                "id": str(uuid.uuid4()),
                "is_favorite": False,
                "status": "active",
                "message_count": 0,
                "total_tokens": 0,
                "created_at": _now(),
                "updated_at": _now(),
            }
        )
        self.answer = _message("assistant", status, "The fixture", self.session.id)
        self.question = _message("user", "complete", "why?", self.session.id)
        self.interrupt = interrupt
        self.before_turn = before_turn
        self.cancelled: list[uuid.UUID] = []

    def __enter__(self) -> _Service:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def get_session(self, session_id: Any) -> ChatSession:
        return self.session

    def chat(self, session_id: uuid.UUID, question: str) -> Iterator[Any]:
        if self.before_turn:
            raise KeyboardInterrupt
        yield ChatTurn(user_message=self.question, assistant_message=self.answer)
        yield StreamDelta(delta="The fixture", offset=11)
        if self.interrupt:
            raise KeyboardInterrupt
        yield StreamDone(status=self.answer.status, error_message="provider down", length=11)

    def get_message(self, session_id: uuid.UUID, message_id: uuid.UUID) -> Message:
        return self.answer

    def cancel(self, session_id: uuid.UUID, message_id: uuid.UUID) -> Message:
        self.cancelled.append(message_id)
        return self.answer.model_copy(update={"status": "cancelled"})


def _ask(monkeypatch: pytest.MonkeyPatch, service: _Service, *options: str) -> int:
    monkeypatch.setattr(conversation, "open_client", lambda: service)
    monkeypatch.setattr(
        sys, "argv", ["chat-store", "ask", "--session", str(service.session.id), *options, "why?"]
    )
    with pytest.raises(SystemExit) as exited:
        cli.main()
    return int(exited.value.code or 0)


@pytest.mark.parametrize("options", [(), ("--json",)])
def test_a_failed_answer_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], options: tuple[str, ...]
) -> None:
    assert _ask(monkeypatch, _Service("failed", interrupt=False), *options) == 1


@pytest.mark.parametrize("options", [(), ("--json",)])
def test_ctrl_c_cancels_the_answer_on_the_service_and_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], options: tuple[str, ...]
) -> None:
    service = _Service("cancelled", interrupt=True)
    assert _ask(monkeypatch, service, *options) == 130
    assert service.cancelled == [service.answer.id]


@pytest.mark.parametrize("options", [(), ("--json",)])
def test_ctrl_c_before_the_turn_arrived_cancels_the_answer_it_finds_and_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], options: tuple[str, ...]
) -> None:
    """The answer is found as the open one after the question (print_stream's lookup)."""
    service = _Service("in_progress", interrupt=True, before_turn=True)

    def list_messages(session_id: uuid.UUID, order: str, limit: int) -> Any:
        return SimpleNamespace(data=[service.answer, service.question])

    monkeypatch.setattr(service, "list_messages", list_messages, raising=False)
    monkeypatch.setattr(conversation, "_TURN_LOOKUPS", (0.0,))
    assert _ask(monkeypatch, service, *options) == 130
    assert service.cancelled == [service.answer.id]
    assert "no turn" not in capsys.readouterr().err


def test_with_json_a_complete_answer_prints_both_messages_and_exits_0(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    service = _Service("complete", interrupt=False)
    assert _ask(monkeypatch, service, "--json") == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["assistant_message"]["id"] == str(service.answer.id)
    assert printed["user_message"]["content"] == "why?"


def test_resume_after_a_cancel_says_to_ask_again(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The service continues no cancelled answer: `resume` forwarded its 409."""
    service = _Service("cancelled", interrupt=False)
    continued: list[uuid.UUID] = []

    def iter_messages(session_id: uuid.UUID, order: str = "asc") -> Iterator[Message]:
        return iter([service.answer, service.question])

    def continue_message(session_id: uuid.UUID, message_id: uuid.UUID) -> Message:
        continued.append(message_id)
        return service.answer

    monkeypatch.setattr(service, "iter_messages", iter_messages, raising=False)
    monkeypatch.setattr(service, "continue_message", continue_message, raising=False)
    monkeypatch.setattr(conversation, "open_client", lambda: service)
    monkeypatch.setattr(sys, "argv", ["chat-store", "resume", str(service.session.id)])
    with pytest.raises(SystemExit) as exited:
        cli.main()

    assert exited.value.code == 4
    assert "cancelled" in capsys.readouterr().err
    assert continued == []


def test_a_replaced_text_is_printed_again_after_a_notice(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """stdout ends with the text as stored: what came before the replacement, a line break,
    then the whole new text and what followed it; the notice goes to stderr."""
    items = [
        StreamDelta(delta="Hello world", offset=11),
        StreamReset(text="Hi", offset=2),
        StreamDelta(delta=" there", offset=8),
        StreamDone(status="complete", error_message=None, length=8),
    ]

    stored = SimpleNamespace(
        get_message=lambda session_id, message_id: SimpleNamespace(tool_calls=None)
    )
    answer = conversation.print_stream(stored, uuid.uuid4(), items, uuid.uuid4())  # type: ignore[arg-type]

    out, err = capsys.readouterr()
    assert answer.status == "complete"
    assert out == "Hello world\nHi there\n"
    assert "replaced" in err


class _Refusing(_Service):
    """A service that refuses the turn (413): `ask` made a session for it."""

    def __init__(self, stored: list[Message]) -> None:
        super().__init__("complete", interrupt=False)
        self.stored = stored
        self.deleted: list[uuid.UUID] = []

    def create_session(self, **fields: Any) -> ChatSession:
        return self.session

    def chat(self, session_id: uuid.UUID, question: str) -> Iterator[Any]:
        raise PayloadTooLargeError(413, "payload_too_large", "over the limit")
        yield  # a generator, as the client's chat() is

    def list_messages(self, session_id: uuid.UUID, **options: Any) -> Any:
        return SimpleNamespace(data=self.stored)

    def delete_session(self, session_id: uuid.UUID) -> None:
        self.deleted.append(session_id)


@pytest.mark.parametrize("stored", [False, True], ids=["refused", "stored-then-lost"])
def test_ask_deletes_the_session_it_made_for_a_refused_turn(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], stored: bool
) -> None:
    service = _Refusing([])
    if stored:
        service.stored = [service.question]
    monkeypatch.setattr(conversation, "open_client", lambda: service)
    monkeypatch.setattr(sys, "argv", ["chat-store", "ask", "why?"])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 1
    assert "over the limit" in capsys.readouterr().err
    assert service.deleted == ([] if stored else [service.session.id])


def _history(session_id: uuid.UUID, *entries: tuple[str, str]) -> list[Message]:
    return [_message(role, status, "text", session_id) for role, status in entries]


@pytest.mark.parametrize(
    ("newest_first", "resumed"),
    [
        ([("assistant", "failed"), ("user", "complete")], 0),
        ([("tool", "complete"), ("assistant", "in_progress"), ("user", "complete")], 1),
        ([("assistant", "complete"), ("user", "complete"), ("assistant", "failed")], None),
        ([("user", "complete"), ("assistant", "failed")], None),
        ([], None),
    ],
    ids=["failed-last", "open-before-a-tool-result", "asked-again", "question-after", "empty"],
)
def test_resume_takes_only_the_newest_answer_when_it_is_unfinished(
    newest_first: list[tuple[str, str]], resumed: int | None
) -> None:
    session_id = uuid.uuid4()
    history = _history(session_id, *newest_first)
    client = SimpleNamespace(iter_messages=lambda session_id, order: iter(history))

    found = conversation._answer_to_resume(client, session_id)  # type: ignore[arg-type]

    assert found == (None if resumed is None else history[resumed])


class _EndedMeanwhile(_Service):
    """Ctrl-C just as the answer ended: the cancel finds it complete (409)."""

    def __init__(self) -> None:
        super().__init__("complete", interrupt=True)
        self.answer = _message("assistant", "complete", "The fixture uses a clock", self.session.id)

    def cancel(self, session_id: uuid.UUID, message_id: uuid.UUID) -> Message:
        raise ConflictError(409, "invalid_transition", "a complete answer is not cancelled")


def test_ctrl_c_as_the_answer_ended_prints_the_rest_of_its_text(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _ask(monkeypatch, _EndedMeanwhile()) == 0
    out, err = capsys.readouterr()
    assert out == "The fixture uses a clock\n"
    assert "ended complete meanwhile" in err
