"""Warnings the app logs, as a test reads them."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def warnings_of(name: str) -> Iterator[list[str]]:
    """Warnings (and worse) logged by the logger `name` meanwhile, as their messages: read from
    the logger itself (create_app replaces the root logger's handlers)."""
    seen: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)


def startup_warnings() -> contextlib.AbstractContextManager[list[str]]:
    """Warnings logged by chat_store.main, at start."""
    return warnings_of("chat_store.main")
