"""What the logs carry, and what they never do."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from chat_store.logging_setup import JsonFormatter, configure_logging


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = logging.getLogger("aiosqlite").level
    try:
        yield
    finally:
        root.handlers[:], root.level = handlers, level
        logging.getLogger("aiosqlite").setLevel(quiet)


def test_debug_never_logs_the_sqlite_drivers_statements(restored_logging: None) -> None:
    """aiosqlite logs each statement with its values at DEBUG (password hashes, the hashes
    credentials are found by), from its own thread and so without the request id."""
    configure_logging("DEBUG", use_json=True)
    assert logging.getLogger("chat_store").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("aiosqlite").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("aiosqlite").isEnabledFor(logging.INFO)


def test_a_json_line_leaves_out_uvicorns_coloured_copy_of_the_message() -> None:
    record = logging.makeLogRecord(
        {
            "name": "uvicorn.error",
            "levelname": "INFO",
            "levelno": logging.INFO,
            "msg": "Started server process [%d]",
            "args": (42,),
            "color_message": "Started server process [\x1b[36m%d\x1b[0m]",
            "method": "GET",
        }
    )
    entry = json.loads(JsonFormatter().format(record))
    assert entry["msg"] == "Started server process [42]"
    assert "color_message" not in entry
    assert entry["method"] == "GET"  # the fields a line is given are kept
