"""Warnings the app logs at start, as a test reads them."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def startup_warnings() -> Iterator[list[str]]:
    """Warnings logged by chat_store.main (create_app replaces the root logger's handlers)."""
    seen: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("chat_store.main")
    logger.addHandler(handler)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)
