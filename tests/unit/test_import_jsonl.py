"""Reading a chat-store/1 JSONL export for `chat-store import`: a line that cannot be read
fails the session it belongs to, and only that one; no session is lost without a word."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chat_store.services.imports import Unreadable, open_source

HEAD = {"format": "chat-store/1", "type": "account", "user": {"email": "ada@example.com"}}


def session(sid: str, title: str) -> str:
    return json.dumps({"type": "session", "session": {"id": sid, "title": title}})


def message(sid: str, content: str) -> str:
    record = {"type": "message", "session_id": sid, "message": {"role": "user", "content": content}}
    return json.dumps(record)


def cut(line: str, keep: int | None = None) -> str:
    return line[: keep if keep is not None else len(line) // 2]


def read(tmp_path: Path, lines: list[str]) -> list[tuple[str, Any]]:
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join([json.dumps(HEAD), *lines]) + "\n")
    return list(open_source(path).conversations)


def outcome(results: list[tuple[str, Any]]) -> tuple[dict[str, int], int]:
    """The sessions handed out whole (title: message count), and how many failed."""
    whole = {
        document["session"]["title"]: len(document["messages"])
        for _, document in results
        if not isinstance(document, Unreadable)
    }
    return whole, sum(isinstance(document, Unreadable) for _, document in results)


def test_a_whole_export_is_read_whole(tmp_path: Path) -> None:
    lines = [session("S1", "one"), message("S1", "a"), message("S1", "b"), session("S2", "two")]
    assert outcome(read(tmp_path, ["", *lines, ""])) == ({"one": 2, "two": 0}, 0)


def test_a_cut_message_line_fails_its_session(tmp_path: Path) -> None:
    lines = [session("S1", "one"), cut(message("S1", "a")), message("S1", "b")]
    lines += [session("S2", "two"), message("S2", "c")]
    results = read(tmp_path, lines)
    assert outcome(results) == ({"two": 1}, 1)
    assert results[0] == ("#1 (one)", Unreadable("line 3: a message that cannot be read"))


def test_a_cut_session_line_between_sessions_without_messages_fails_that_one(
    tmp_path: Path,
) -> None:
    lines = [session("S1", "one"), cut(session("S2", "two")), session("S3", "three")]
    assert outcome(read(tmp_path, lines)) == ({"one": 0, "three": 0}, 1)


def test_a_file_cut_in_its_last_session_line_keeps_the_one_before(tmp_path: Path) -> None:
    lines = [session("S1", "one"), message("S1", "a"), cut(session("S2", "two"))]
    assert outcome(read(tmp_path, lines)) == ({"one": 1}, 1)


def test_two_cut_session_lines_in_a_row_are_two_failures(tmp_path: Path) -> None:
    lines = [session("S1", "one"), message("S1", "a"), cut(session("S2", "two"))]
    lines += [cut(session("S3", "three")), session("S4", "four"), message("S4", "b")]
    assert outcome(read(tmp_path, lines)) == ({"one": 1, "four": 1}, 2)


def test_a_line_cut_before_it_says_what_it_was_goes_by_the_next_message(tmp_path: Path) -> None:
    # Cut after 5 characters: `{"typ`. The next message names "two": it was two's record.
    lines = [session("S1", "one"), message("S1", "a"), cut(session("S2", "two"), 5)]
    lines += [message("S2", "b"), session("S3", "three")]
    assert outcome(read(tmp_path, lines)) == ({"one": 1, "three": 0}, 1)
    # The next message names the session being read: it was one of its messages.
    lines = [session("S1", "one"), cut(message("S1", "a"), 5), message("S1", "b")]
    assert outcome(read(tmp_path, lines)) == ({}, 1)


def test_messages_that_name_another_id_are_their_session_s(tmp_path: Path) -> None:
    """Files other tools write: the messages' session_id need not be the session's id."""
    lines = [session("S1", "one"), message("other", "a"), cut(message("other", "b"))]
    lines += [message("other", "c")]
    assert outcome(read(tmp_path, lines)) == ({}, 1)
    lines = [session("S1", "one"), message("other", "a"), message("other", "b")]
    assert outcome(read(tmp_path, lines)) == ({"one": 2}, 0)


def test_messages_of_a_session_whose_record_is_left_out_fail_alone(tmp_path: Path) -> None:
    """Once a session's messages have named it, messages naming another session are that
    session's, whose record is missing: reported, never added to the one before."""
    lines = [session("S1", "one"), message("S1", "a"), message("S2", "b"), message("S2", "c")]
    lines += [session("S3", "three"), message("S3", "d")]
    assert outcome(read(tmp_path, lines)) == ({"one": 1, "three": 1}, 1)
    # Messages before any session record: a session of their own, reported.
    lines = [message("S0", "x"), session("S1", "one"), message("S1", "a")]
    assert outcome(read(tmp_path, lines)) == ({"one": 1}, 1)


def test_a_session_record_without_its_session_is_one_failure(tmp_path: Path) -> None:
    broken = json.dumps({"type": "session", "session": None})
    lines = [broken, message("S1", "a"), cut(message("S1", "b")), session("S2", "two")]
    assert outcome(read(tmp_path, lines)) == ({"two": 0}, 1)


def test_an_account_line_without_a_user_leaves_the_owner_to_user(tmp_path: Path) -> None:
    path = tmp_path / "export.jsonl"
    head = {"format": "chat-store/1", "type": "account", "user": None}
    path.write_text("\n".join([json.dumps(head), session("S1", "one")]) + "\n")
    source = open_source(path)
    assert source.owner_email is None
    assert outcome(list(source.conversations)) == ({"one": 0}, 0)
