"""UUIDv7 ids: version 7, RFC 9562 variant, strictly increasing in this process."""

from __future__ import annotations

import time
import uuid
from itertools import pairwise
from types import SimpleNamespace

import pytest

from chat_store import ids
from chat_store.ids import uuid7


def timestamp_ms(value: uuid.UUID) -> int:
    return value.int >> 80


def test_ids_are_version_7_with_the_rfc_variant() -> None:
    for value in (uuid7() for _ in range(1000)):
        assert value.version == 7
        assert value.variant == uuid.RFC_4122


def test_ids_carry_the_current_time() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000

    # The clock can only have been borrowed ahead by a counter overflow, a few ms at most.
    assert before <= timestamp_ms(value) <= after + 5


def test_10000_ids_are_strictly_increasing() -> None:
    values = [uuid7() for _ in range(10_000)]

    assert all(a < b for a, b in pairwise(values))
    # Also as text, which is how SQLite stores and compares them.
    texts = [value.hex for value in values]
    assert all(a < b for a, b in pairwise(texts))
    assert len(set(values)) == len(values)


def test_ids_keep_increasing_when_the_clock_stands_still(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frozen = time.time_ns()
    monkeypatch.setattr(ids, "time", SimpleNamespace(time_ns=lambda: frozen))

    # More ids than the 12-bit counter holds in one millisecond.
    values = [uuid7() for _ in range(10_000)]

    assert all(a < b for a, b in pairwise(values))
    assert all(value.version == 7 for value in values)


def test_ids_keep_increasing_when_the_clock_goes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time_ns()
    readings = iter([now, now - 5_000_000_000, now - 5_000_000_000, now + 1_000_000])
    monkeypatch.setattr(ids, "time", SimpleNamespace(time_ns=lambda: next(readings)))

    values = [uuid7() for _ in range(4)]

    assert values == sorted(values)
    assert len(set(values)) == 4
