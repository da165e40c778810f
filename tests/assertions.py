"""Assertions the API tests share: problem+json answers and timestamps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

PROBLEM_FIELDS = {"type", "title", "status", "detail", "instance", "code"}


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The answer is an RFC 9457 problem with this status and code; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body.keys() >= PROBLEM_FIELDS, body
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"urn:chat-store:problem:{code}"
    assert body["instance"] == response.request.url.path
    assert body["title"]
    assert body["detail"]
    return body


def assert_validation_error(response: httpx.Response, *loc: str | int) -> dict[str, Any]:
    """A 422 validation_error; with `loc`, one of its errors points there (e.g. "body", "title")."""
    body = assert_problem(response, 422, "validation_error")
    errors = body["errors"]
    assert errors, body
    for error in errors:
        assert set(error) == {"loc", "msg", "type"}, error
    if loc:
        assert any(tuple(error["loc"][: len(loc)]) == loc for error in errors), errors
    return body


def parse_time(value: str) -> datetime:
    """An RFC 3339 UTC timestamp as the API writes them (`...Z`)."""
    assert value.endswith("Z"), value
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() == timedelta(0)
    return parsed


def assert_recent(value: str, within: timedelta = timedelta(seconds=30)) -> datetime:
    parsed = parse_time(value)
    assert abs(datetime.now(UTC) - parsed) < within, value
    return parsed


def metric_sample(metrics: str, name: str) -> float:
    """A sample's value in Prometheus text (`name` with its labels as written), 0 when absent."""
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0
