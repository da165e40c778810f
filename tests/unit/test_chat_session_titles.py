"""The title a session gets from its first user message."""

from __future__ import annotations

import pytest

from chat_store.services.chat_sessions import title_from_first_message


@pytest.mark.parametrize(
    ("text", "title"),
    [
        ("Fix the flaky test", "Fix the flaky test"),
        ("  padded both sides \t", "padded both sides"),
        ("first line\nsecond line", "first line"),
        ("\n\n   \n  after blank lines\nmore", "after blank lines"),
        ("windows\r\nline ends", "windows"),
        ("x" * 80, "x" * 80),
        ("y" * 81, "y" * 80),
        ("  " + "z" * 100 + "  ", "z" * 80),
        ("é" * 100, "é" * 80),  # characters, not bytes
        ("\N{GRINNING FACE}" * 90, "\N{GRINNING FACE}" * 80),
        ("   word   with   inner   spaces   ", "word   with   inner   spaces"),
    ],
)
def test_title_is_the_first_non_blank_line_stripped_and_cut(text: str, title: str) -> None:
    assert title_from_first_message(text) == title


@pytest.mark.parametrize("text", ["", "   ", "\n\n", " \t \n \r\n "])
def test_blank_text_gives_no_title(text: str) -> None:
    assert title_from_first_message(text) is None
