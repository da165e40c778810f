"""Shared schema pieces: safe text, bounded metadata, list pages, delete answers."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Generic, Literal, Self, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def check_text(value: str) -> str:
    """Refuse what Postgres cannot store and JSON cannot carry: NUL and lone surrogates."""
    if "\x00" in value:
        raise ValueError("text must not contain NUL (U+0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must not contain lone surrogates") from None
    return value


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


def json_size(value: dict[str, Any]) -> int:
    """Bytes of `value` as compact UTF-8 JSON (what the size limits count)."""
    encoded = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return len(encoded.encode("utf-8"))


def _json_object(what: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def check(value: dict[str, Any]) -> dict[str, Any]:
        _check_json_strings(value)
        try:
            json_size(value)
        except ValueError:
            # NaN and Infinity, which Python's JSON parser takes: they are not JSON, and the
            # database's JSON type refuses them too.
            raise ValueError(
                f"{what} must not contain NaN or Infinity: they are not JSON"
            ) from None
        return value

    return check


# How large a title, metadata or context may be is the app's setting: the services check it
# (services/limits.py).
SafeStr = Annotated[str, AfterValidator(check_text)]
RagContext = Annotated[dict[str, Any], AfterValidator(_json_object("context"))]
Title = SafeStr
Metadata = Annotated[dict[str, Any], AfterValidator(_json_object("metadata"))]


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
