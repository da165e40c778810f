"""Fixtures of the fuzz tests: an app on the test backend (guests allowed, so that the
X-Client-ID way in is fuzzed too) and, per test, a fuzzer with its world of rows."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI

from tests.backends import Backend
from tests.conftest import client_for, make_settings, running_app
from tests.fuzz.harness import Fuzzer
from tests.fuzz.world import EndEventStreams


@pytest.fixture(scope="module")
async def fuzz_app(backend: Backend) -> AsyncIterator[FastAPI]:
    async with running_app(make_settings(backend, allow_guests=True)) as started:
        yield started


@pytest.fixture
async def fuzzer(fuzz_app: FastAPI, app: FastAPI) -> AsyncIterator[Fuzzer]:
    """A fuzzer of its own per test (`app` is asked for so that each test's rows are deleted)."""
    async with client_for(EndEventStreams(fuzz_app)) as client:  # type: ignore[arg-type]
        yield Fuzzer(client, fuzz_app.state.resources)
