"""Fixtures of the fuzz tests: an app on the test backend (guests allowed, so that the
X-Client-ID way in is fuzzed too) with a model provider (the test provider, a process of its
own, so that chat turns and continues reach the generation code) and, per test, a fuzzer with
its world of rows."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from fastapi import FastAPI

from tests.backends import Backend
from tests.conftest import client_for, running_app
from tests.fuzz.harness import PROVIDER_SCRIPTS, Fuzzer
from tests.fuzz.world import EndEventStreams
from tests.support.chat import chat_settings
from tests.support.llm_server import LlmServer, llm_server_process


@pytest.fixture(scope="session")
def llm() -> Iterator[LlmServer]:
    with llm_server_process() as server:
        yield server


@pytest.fixture(scope="module")
async def fuzz_app(backend: Backend, llm: LlmServer) -> AsyncIterator[FastAPI]:
    for model, behaviours in PROVIDER_SCRIPTS.items():
        await llm.script(model, *behaviours)
    # The default time limit of a request, not the chat tests' shorter one: what is fuzzed
    # besides the turns keeps its usual limit on a loaded machine.
    settings = chat_settings(backend, llm, allow_guests=True, request_timeout_seconds=30.0)
    async with running_app(settings) as started:
        yield started


@pytest.fixture
async def fuzzer(fuzz_app: FastAPI, app: FastAPI) -> AsyncIterator[Fuzzer]:
    """A fuzzer of its own per test (`app` is asked for so that each test's rows are deleted)."""
    async with client_for(EndEventStreams(fuzz_app)) as client:  # type: ignore[arg-type]
        yield Fuzzer(client, fuzz_app.state.resources, fuzz_app.state.generation)
