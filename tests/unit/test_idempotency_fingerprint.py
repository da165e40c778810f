"""The idempotency fingerprint over many bodies (hypothesis): the same body, however its JSON
is written, gives the same fingerprint; bodies that differ once validated give different ones.

docs/api.md, Idempotency: "The same body" means the same after validation: field order and
whitespace do not matter.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from chat_store.schemas.chat_sessions import ChatSessionCreate
from chat_store.schemas.messages import MessageAppend
from chat_store.services.idempotency import fingerprint

PROPERTY = settings(max_examples=100, deadline=None, derandomize=True, database=None)

_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
_json: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_text, children, max_size=4),
    max_leaves=12,
)
_objects = st.dictionaries(_text, _json, max_size=5)

_session_bodies = st.fixed_dictionaries(
    {},
    optional={
        "title": st.none() | _text,
        "metadata": _objects,
        "workspace": st.none()
        | st.fixed_dictionaries({}, optional={"repo": _text, "branch": _text, "path": _text}),
    },
)
_message_fields = {
    "metadata": _objects,
    "context": st.none() | _objects,
    "token_count": st.none() | st.integers(0, 10**6),
    "model": st.none() | _text,
    "expected_last_seq": st.none() | st.integers(0, 2**31 - 1),
}
_message_bodies = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system"]), "content": _text},
    optional=_message_fields,
) | st.fixed_dictionaries(
    # A tool message answers a call.
    {"role": st.just("tool"), "content": _text, "tool_call_id": _text.filter(bool)},
    optional=_message_fields,
)
_bodies = st.one_of(
    st.tuples(st.just(ChatSessionCreate), _session_bodies),
    st.tuples(st.just(MessageAppend), _message_bodies),
)


def _reordered(value: Any, data: st.DataObject) -> Any:
    """The same JSON value with the keys of every object in another order."""
    if isinstance(value, dict):
        keys = data.draw(st.permutations(list(value)), label="key order")
        return {key: _reordered(value[key], data) for key in keys}
    if isinstance(value, list):
        return [_reordered(item, data) for item in value]
    return value


def _fingerprint(model: type[BaseModel], body: dict[str, Any], *, indent: int | None = None) -> str:
    validated = model.model_validate_json(json.dumps(body, indent=indent, ensure_ascii=False))
    return fingerprint("create", "scope", validated)


@PROPERTY
@given(pair=_bodies)
def test_the_same_json_text_gives_the_same_fingerprint(
    pair: tuple[type[BaseModel], dict[str, Any]],
) -> None:
    model, body = pair
    assert _fingerprint(model, body) == _fingerprint(model, body)


@PROPERTY
@given(pair=_bodies)
def test_whitespace_and_top_level_field_order_do_not_matter(
    pair: tuple[type[BaseModel], dict[str, Any]],
) -> None:
    model, body = pair
    reversed_fields = dict(reversed(body.items()))
    assert _fingerprint(model, body) == _fingerprint(model, reversed_fields, indent=3)


@PROPERTY
@given(pair=_bodies, data=st.data())
def test_key_order_inside_nested_objects_does_not_matter(
    pair: tuple[type[BaseModel], dict[str, Any]], data: st.DataObject
) -> None:
    model, body = pair
    assert _fingerprint(model, body) == _fingerprint(model, _reordered(body, data))


def _canonical(model: type[BaseModel], body: dict[str, Any]) -> str:
    """An independent reading of "the same after validation": the validated body as JSON with
    sorted keys, defaults included."""
    validated = model.model_validate_json(json.dumps(body))
    return json.dumps(validated.model_dump(mode="json"), sort_keys=True)


@PROPERTY
@given(first=_bodies, second=_bodies)
def test_different_bodies_give_different_fingerprints(
    first: tuple[type[BaseModel], dict[str, Any]],
    second: tuple[type[BaseModel], dict[str, Any]],
) -> None:
    (model_a, body_a), (model_b, body_b) = first, second
    if model_a is not model_b or _canonical(model_a, body_a) == _canonical(model_b, body_b):
        return  # the same body once validated (or another model): nothing to compare
    assert _fingerprint(model_a, body_a) != _fingerprint(model_b, body_b)


@PROPERTY
@given(pair=_bodies, key=_text, value=_json)
def test_one_more_metadata_entry_changes_the_fingerprint(
    pair: tuple[type[BaseModel], dict[str, Any]], key: str, value: Any
) -> None:
    model, body = pair
    metadata = body.get("metadata", {})
    if key in metadata:
        return
    changed = {**body, "metadata": {**metadata, key: value}}
    assert _fingerprint(model, body) != _fingerprint(model, changed)


@PROPERTY
@given(pair=_bodies, operations=st.lists(_text, min_size=2, max_size=2, unique=True))
def test_operation_and_scope_are_part_of_the_fingerprint(
    pair: tuple[type[BaseModel], dict[str, Any]], operations: list[str]
) -> None:
    model, body = pair
    validated = model.model_validate_json(json.dumps(body))
    first, second = operations
    assert fingerprint(first, "scope", validated) != fingerprint(second, "scope", validated)
    assert fingerprint("create", first, validated) != fingerprint("create", second, validated)
