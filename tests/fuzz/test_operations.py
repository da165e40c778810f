"""Every operation of the OpenAPI document, fuzzed with schemathesis (see harness.py for the
checks): generated requests, most with real credentials and pointed at rows that exist."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz.harness import (
    AUTH_CHOICES,
    FUZZ_SETTINGS,
    OPERATIONS,
    Fuzzer,
    aim,
    auth_headers,
    operation_cases,
    to_request,
)

EXAMPLES_PER_OPERATION = 30

# Failures of this test whose fixes are under way, by operation; each is strict, so the test
# fails once the fix lands, and the mark goes.
KNOWN_FAILURES: dict[tuple[str, str], str] = {}


def _operations() -> list[Any]:
    params = []
    for method, path in OPERATIONS:
        reason = KNOWN_FAILURES.get((method, path))
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(method, path, id=f"{method} {path}", marks=marks))
    return params


@pytest.mark.parametrize(("method", "path"), _operations())
@settings(FUZZ_SETTINGS, max_examples=EXAMPLES_PER_OPERATION)
@given(data=st.data())
async def test_operation(method: str, path: str, fuzzer: Fuzzer, data: st.DataObject) -> None:
    world = await fuzzer.world()
    case = data.draw(operation_cases(method, path), label="case")
    aim(case, world, data)
    choice = data.draw(st.sampled_from(AUTH_CHOICES), label="auth")
    request = to_request(
        case, auth_headers(choice, world), keep_generated_auth=choice == "generated"
    )
    await fuzzer.exchange(method, path, case, request)
