"""Shared schema pieces: safe text, bounded JSON fields, input times, list pages, delete answers."""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Annotated, Any, Generic, Literal, Self, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field


def check_text(value: str) -> str:
    """Refuse what Postgres cannot store and JSON cannot carry: NUL and lone surrogates."""
    if "\x00" in value:
        raise ValueError("text must not contain NUL (U+0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must not contain lone surrogates") from None
    return value


def json_size(value: dict[str, Any]) -> int:
    """Bytes of `value` as compact UTF-8 JSON (what the size limits count)."""
    encoded = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return len(encoded.encode("utf-8"))


def _json_object(what: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def check(value: dict[str, Any]) -> dict[str, Any]:
        """Refuse what JSON and the database cannot carry: NUL and lone surrogates in a string
        (a key too), NaN and Infinity (Python's parser takes them). Walked level by level, not
        recursively: here nesting is bounded by the parser alone; how deep a field may go is
        the app's setting (MAX_JSON_DEPTH, services/limits.py)."""
        level: list[Any] = [value]
        while level:
            children: list[Any] = []
            for node in level:
                for key, item in node.items() if isinstance(node, dict) else enumerate(node):
                    if isinstance(key, str):
                        check_text(key)
                    if isinstance(item, dict | list):
                        children.append(item)
                    elif isinstance(item, str):
                        check_text(item)
                    elif isinstance(item, float) and not math.isfinite(item):
                        raise ValueError(
                            f"{what} must not contain NaN or Infinity: they are not JSON"
                        )
            level = children
        return value

    return check


def to_utc(value: datetime) -> datetime:
    """The time in UTC, as it is stored and answered. A time near the ends of the calendar
    with an offset (0001-01-01T00:00:00+14:00) has no UTC equivalent Python can hold."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(
            "time is out of range: in UTC it must fall between 0001-01-01 and 9999-12-31"
        ) from None


# How large a title, metadata or context may be, and how deep a JSON field, are the app's
# settings: the services check them (services/limits.py).
SafeStr = Annotated[str, AfterValidator(check_text)]
# Every time a request gives (a body field, a query filter): with an offset, turned into UTC.
InputDatetime = Annotated[AwareDatetime, AfterValidator(to_utc)]


def _date_only(value: object) -> object:
    # pydantic's date takes a datetime whose time is midnight too: `2026-11-26T00:00:00`
    # (no offset) would pass as a date where `...T10:00:00` is refused for its missing offset.
    if isinstance(value, str) and not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        raise ValueError("a date is written YYYY-MM-DD")
    return value


# A day given alone (a filter's YYYY-MM-DD), never a time.
InputDate = Annotated[date, BeforeValidator(_date_only)]
RagContext = Annotated[dict[str, Any], AfterValidator(_json_object("context"))]
Title = SafeStr
Metadata = Annotated[dict[str, Any], AfterValidator(_json_object("metadata"))]


class InputModel(BaseModel):
    """Request bodies: unknown fields are an error, never silently dropped."""

    model_config = ConfigDict(extra="forbid")


def examples(*values: dict[str, Any]) -> ConfigDict:
    """A request body's config with realistic examples (shown in Swagger UI and ReDoc)."""
    return ConfigDict(json_schema_extra={"examples": list(values)})


class OutputModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# Seqs, versions and lengths are stored as 4-byte integers: a larger one given as input (a
# cursor, an expected seq) is refused there (422), not sent to the database to fail (500).
INT32_MAX = 2_147_483_647
# A session's seq as input (0: before the first message).
Seq = Annotated[int, Field(ge=0, le=INT32_MAX)]

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    first_id: uuid.UUID | None
    last_id: uuid.UUID | None
    has_more: bool

    @classmethod
    def of(cls, data: list[T], *, has_more: bool) -> Self:
        """A page of `data` (items with ids), in list order."""
        first, last = (data[0].id, data[-1].id) if data else (None, None)  # type: ignore[attr-defined]
        return cls(data=data, first_id=first, last_id=last, has_more=has_more)


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
