"""Values that generators from the document seldom reach, aimed at the fields that take them
(see harness.py for the checks every answer goes through): access tokens signed with the
service's own key but with claims out of shape, JSON nested deeper than the serializers go,
numbers beyond 64 bits, and the first and last instants RFC 3339 can write. Whatever is stored
must stay readable: after each request the caller's lists and reads are asked for again."""

from __future__ import annotations

import time
import uuid
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from jose import jwt

from tests.fuzz.harness import (
    FUZZ_SETTINGS,
    SECURED_OPERATIONS,
    Fuzzer,
    aim,
    auth_headers,
    operation_cases,
    to_request,
)
from tests.fuzz.world import World

EXAMPLES = 40

# Claims of an access token signed with the service's key, one of them out of shape: what a
# holder of the signing key's output (a token of its own, edited and signed again where the
# key leaked, or a token minted by a buggy issuer) could send. Never a 5xx.
FORGED_CLAIMS: list[dict[str, Any]] = [
    {"exp": "9999999999"},
    {"exp": 10**20},
    {"exp": 2**63},
    {"exp": 1e300},
    {"exp": -1},
    {"exp": None},
    {"iat": "yesterday"},
    {"sub": "not-a-uuid"},
    {"sub": 12345},
    {"type": "refresh"},
]


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


HOSTILE_JSON: list[Any] = [
    *({"x": _nested(depth)} for depth in (32, 64, 128, 300, 800)),
    {"n": 2**70},
    {"n": -(2**64)},
    {"f": 1e308},
    {"f": 5e-324},
    {"s": "🙂" * 64, "🙂": "astral keys"},
]
# The fields of each operation's body that take any JSON object ("messages" items for a batch).
JSON_FIELDS = {
    ("POST", "/api/v1/sessions"): ("metadata",),
    ("PATCH", "/api/v1/sessions/{session_id}"): ("metadata",),
    ("POST", "/api/v1/sessions/{session_id}/messages"): ("metadata", "context"),
    ("POST", "/api/v1/sessions/{session_id}/messages/batch"): ("metadata", "context"),
    ("PATCH", "/api/v1/sessions/{session_id}/messages/{message_id}"): ("metadata",),
}

# The first and last instants RFC 3339 can write, some with offsets that move them out of
# the range of a datetime once turned to UTC.
EXTREME_TIMES = [
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00-14:00",
    "9999-12-31T23:59:59.999999Z",
    "9999-12-31T23:59:59-14:00",
    "9999-12-31T23:59:59+14:00",
]
TIME_FIELDS = {
    ("GET", "/api/v1/sessions"): "updated_after",  # a query parameter
    ("POST", "/api/v1/api-keys"): "expires_at",  # a body field
}


def _forged_token(world: World, secret: str, changes: dict[str, Any], algorithm: str) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": world.account.user_id,
        "type": "access",
        "iat": now,
        "exp": now + 600,
    }
    claims.update(changes)
    return str(jwt.encode(claims, secret, algorithm=algorithm))


@settings(FUZZ_SETTINGS, max_examples=EXAMPLES)
@given(data=st.data())
async def test_forged_access_tokens(fuzzer: Fuzzer, data: st.DataObject) -> None:
    method, path = data.draw(st.sampled_from(SECURED_OPERATIONS), label="operation")
    world = await fuzzer.world()
    case = data.draw(operation_cases(method, path), label="case")
    aim(case, world, data)
    changes = data.draw(st.sampled_from(FORGED_CLAIMS), label="claims")
    algorithm = data.draw(st.sampled_from(["HS256", "HS256", "HS512"]), label="alg")
    token = _forged_token(world, fuzzer.state.settings.jwt_secret_value(), changes, algorithm)
    request = to_request(case, {"Authorization": f"Bearer {token}"}, keep_generated_auth=False)
    await fuzzer.exchange(method, path, case, request)


@settings(FUZZ_SETTINGS, max_examples=EXAMPLES)
@given(data=st.data())
async def test_hostile_json_values(fuzzer: Fuzzer, data: st.DataObject) -> None:
    method, path = data.draw(st.sampled_from(sorted(JSON_FIELDS)), label="operation")
    world = await fuzzer.world()
    case = data.draw(operation_cases(method, path), label="case")
    aim(case, world, data)
    if not isinstance(case.body, dict):
        case.body = {}
    items = case.body.get("messages")
    targets = items if isinstance(items, list) and items else [case.body]
    for target in targets:
        if isinstance(target, dict):
            field = data.draw(st.sampled_from(JSON_FIELDS[(method, path)]), label="field")
            target[field] = data.draw(st.sampled_from(HOSTILE_JSON), label="value")
    choice = data.draw(st.sampled_from(["bearer", "api_key"]), label="auth")
    request = to_request(case, auth_headers(choice, world), keep_generated_auth=False)
    await fuzzer.exchange(method, path, case, request)
    await fuzzer.assert_readable()


@settings(FUZZ_SETTINGS, max_examples=EXAMPLES // 2)
@given(data=st.data())
async def test_extreme_times(fuzzer: Fuzzer, data: st.DataObject) -> None:
    method, path = data.draw(st.sampled_from(sorted(TIME_FIELDS)), label="operation")
    world = await fuzzer.world()
    case = data.draw(operation_cases(method, path), label="case")
    aim(case, world, data)
    value = data.draw(st.sampled_from(EXTREME_TIMES), label="time")
    field = TIME_FIELDS[(method, path)]
    if method == "GET":
        case.query = {**(case.query or {}), field: value}
    else:
        case.body = {**(case.body if isinstance(case.body, dict) else {}), field: value}
    request = to_request(case, auth_headers("bearer", world), keep_generated_auth=False)
    await fuzzer.exchange(method, path, case, request)
    await fuzzer.assert_readable()


@settings(FUZZ_SETTINGS, max_examples=EXAMPLES)
@given(data=st.data())
async def test_new_guest_client_ids(fuzzer: Fuzzer, data: st.DataObject) -> None:
    """Each request from a client id never seen before: a refused one leaves no guest behind."""
    method, path = data.draw(st.sampled_from(SECURED_OPERATIONS), label="operation")
    world = await fuzzer.world()
    case = data.draw(operation_cases(method, path), label="case")
    aim(case, world, data)
    client_id = str(uuid.UUID(int=data.draw(st.integers(0, 2**128 - 1), label="client id")))
    request = to_request(case, {"X-Client-ID": client_id}, keep_generated_auth=False)
    await fuzzer.exchange(method, path, case, request)
