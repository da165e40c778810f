"""This deployment's limits on what a request stores: MAX_TITLE_CHARS, MAX_METADATA_BYTES,
MAX_JSON_DEPTH and MAX_MESSAGE_BYTES (a message's text, and its RAG context).

The schemas say what a well-formed request is; the limits are settings of the app, so the
services check them, first thing, and answer them as a schema's own checks are answered (422
at the field), or for a message's text 413.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chat_store.errors import PayloadTooLarge, ValidationFailed
from chat_store.schemas.common import json_size
from chat_store.settings import Settings

Loc = Sequence[str | int]


def check_title(settings: Settings, title: str | None, loc: Loc) -> None:
    limit = settings.max_title_chars
    if title is not None and len(title) > limit:
        _refuse(loc, f"title is {len(title)} characters, over the limit of {limit}")


# Room for the keys the service adds to an answer's metadata (its usage, finish reason,
# failure) over the client's MAX_METADATA_BYTES: an export holds them, and its import takes it.
SERVICE_METADATA_BYTES = 4096


def check_metadata(
    settings: Settings,
    metadata: dict[str, Any] | None,
    loc: Loc,
    *,
    with_service_keys: bool = False,
) -> None:
    limit = settings.max_metadata_bytes + (SERVICE_METADATA_BYTES if with_service_keys else 0)
    _check_json(settings, metadata, "metadata", limit, loc)


def check_context(settings: Settings, context: dict[str, Any] | None, loc: Loc) -> None:
    """Retrieved documents and citations: as large as a message may be, not metadata-sized."""
    _check_json(settings, context, "context", settings.max_message_bytes, loc)


def check_tools(settings: Settings, tools: list[dict[str, Any]] | None, loc: Loc) -> None:
    """A turn's function definitions: JSON sent to the model, as large as a message may be."""
    if tools is not None:
        _check_json(settings, {"tools": tools}, "tools", settings.max_message_bytes, loc)


def check_text(settings: Settings, text: str | None, field: str) -> None:
    """A message's text, counted in UTF-8 bytes."""
    limit = settings.max_message_bytes
    if text is not None and len(text.encode("utf-8")) > limit:
        raise PayloadTooLarge(f"{field} is over the limit of {limit} bytes of UTF-8")


def _check_json(
    settings: Settings, value: dict[str, Any] | None, what: str, limit: int, loc: Loc
) -> None:
    if value is None:
        return
    # The depth first: serialising the value (to count its bytes) walks it recursively.
    deepest = settings.max_json_depth
    if _deeper_than(value, deepest):
        _refuse(loc, f"{what} is nested deeper than {deepest} levels")
    size = json_size(value)
    if size > limit:
        _refuse(loc, f"{what} is {size} bytes of JSON, over the limit of {limit}")


def _deeper_than(value: dict[str, Any], limit: int) -> bool:
    """Whether `value` nests more than `limit` levels of objects and arrays (the value itself is
    level 1). Walked level by level, not recursively."""
    level: list[Any] = [value]
    for _ in range(limit):
        level = [
            item
            for node in level
            for item in (node.values() if isinstance(node, dict) else node)
            if isinstance(item, dict | list)
        ]
        if not level:
            return False
    return True


def _refuse(loc: Loc, message: str) -> None:
    where = [*loc]
    raise ValidationFailed(
        f"{'.'.join(map(str, where))}: Value error, {message}", where, msg=f"Value error, {message}"
    )
