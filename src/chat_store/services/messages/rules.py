"""The rules of a message: its status moves and its token estimate."""

from __future__ import annotations

import math

from chat_store.errors import InvalidTransition

TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"in_progress", "complete", "failed", "cancelled"}),
    "in_progress": frozenset({"complete", "failed", "cancelled"}),
    "failed": frozenset({"in_progress"}),
    "complete": frozenset(),
    "cancelled": frozenset(),
}

# Documented token estimate where no token_count is stored: one token per 4 characters
# (the usual rule of thumb for English text with BPE vocabularies), at least 1.
CHARS_PER_TOKEN = 4


def check_transition(current: str, new: str) -> None:
    if new != current and new not in TRANSITIONS[current]:
        raise InvalidTransition(f"A {current} message cannot become {new}")


def estimate_tokens(text: str | None) -> int:
    return max(1, math.ceil(len(text or "") / CHARS_PER_TOKEN))


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))
