"""Shared schema pieces: safe text, bounded JSON fields, input times, list pages, delete answers."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from chat_store.settings import active_settings


def check_text(value: str) -> str:
    """Refuse what Postgres cannot store and JSON cannot carry: NUL and lone surrogates."""
    if "\x00" in value:
        raise ValueError("text must not contain NUL (U+0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must not contain lone surrogates") from None
    return value


def _check_json_depth(value: dict[str, Any], what: str) -> None:
    """Refuse a value nested deeper than MAX_JSON_DEPTH levels (the value itself is level 1,
    each object or array inside it one more). Walked level by level, not recursively: the
    parser accepts nesting far deeper than a recursive walk, or the response serializer, goes.
    Checked before anything else walks the value."""
    limit = active_settings().max_json_depth
    level: list[Any] = [value]
    depth = 1
    while level:
        if depth > limit:
            raise ValueError(f"{what} is nested deeper than {limit} levels")
        children: list[Any] = []
        for node in level:
            items = node.values() if isinstance(node, dict) else node
            children.extend(item for item in items if isinstance(item, dict | list))
        level = children
        depth += 1


def _check_json_strings(value: Any) -> None:
    if isinstance(value, str):
        check_text(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key)
            _check_json_strings(item)
    elif isinstance(value, list):
        for item in value:
            _check_json_strings(item)


def _json_size(value: dict[str, Any], what: str) -> int:
    """Bytes of `value` as compact JSON. NaN and Infinity, which Python's JSON parser takes,
    are refused: they are not JSON, and the database's JSON type refuses them too."""
    try:
        encoded = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        raise ValueError(f"{what} must not contain NaN or Infinity: they are not JSON") from None
    return len(encoded.encode("utf-8"))


def check_metadata(value: dict[str, Any]) -> dict[str, Any]:
    _check_json_depth(value, "metadata")
    _check_json_strings(value)
    size = _json_size(value, "metadata")
    limit = active_settings().max_metadata_bytes
    if size > limit:
        raise ValueError(f"metadata is {size} bytes of JSON, over the limit of {limit}")
    return value


def check_title(value: str) -> str:
    check_text(value)
    limit = active_settings().max_title_chars
    if len(value) > limit:
        raise ValueError(f"title is {len(value)} characters, over the limit of {limit}")
    return value


def check_rag_context(value: dict[str, Any]) -> dict[str, Any]:
    """Retrieved documents and citations: as large as a message may be, not metadata-sized."""
    _check_json_depth(value, "context")
    _check_json_strings(value)
    size = _json_size(value, "context")
    limit = active_settings().max_message_bytes
    if size > limit:
        raise ValueError(f"context is {size} bytes of JSON, over the limit of {limit}")
    return value


def to_utc(value: datetime) -> datetime:
    """The time in UTC, as it is stored and answered. A time near the ends of the calendar
    with an offset (0001-01-01T00:00:00+14:00) has no UTC equivalent Python can hold."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(
            "time is out of range: in UTC it must fall between 0001-01-01 and 9999-12-31"
        ) from None


SafeStr = Annotated[str, AfterValidator(check_text)]
# Every time a request gives (a body field, a query filter): with an offset, turned into UTC.
InputDatetime = Annotated[AwareDatetime, AfterValidator(to_utc)]
RagContext = Annotated[dict[str, Any], AfterValidator(check_rag_context)]
Title = Annotated[str, AfterValidator(check_title)]
Metadata = Annotated[dict[str, Any], AfterValidator(check_metadata)]


class InputModel(BaseModel):
    """Request bodies: unknown fields are an error, never silently dropped."""

    model_config = ConfigDict(extra="forbid")


class OutputModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# Seqs, versions and lengths are stored as 4-byte integers: a larger one given as input (a
# cursor, an expected seq) is refused there (422), not sent to the database to fail (500).
INT32_MAX = 2_147_483_647

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    first_id: uuid.UUID | None
    last_id: uuid.UUID | None
    has_more: bool


class Deleted(BaseModel):
    id: uuid.UUID
    object: str = Field(examples=["session.deleted"])
    deleted: Literal[True] = True


class Problem(BaseModel):
    """RFC 9457 problem details, as every error is answered."""

    type: str = Field(examples=["about:blank"])
    title: str
    status: int
    detail: str
    instance: str
    code: str = Field(examples=["not_found"])
    errors: list[dict[str, Any]] | None = None
