"""End-to-end helpers: the real `chat-store serve` in a subprocess, on a provisioned backend.

    async with running_server(backend) as server:
        async with server.client() as client:
            ...

`start_server(backend, **env)` returns a ready `ServerProcess`; several may run at once on one
backend (they share its database and Redis prefix). Extra keyword arguments are environment
variables for that server (`ACCESS_TOKEN_MINUTES="1"`). When a test fails, the log of every server
that was running during it is added to its report.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Generator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from chat_store.client import AsyncChatStoreClient, ChatStoreClient, ChatStoreError
from chat_store.settings import Settings
from tests.backends import Backend, provision
from tests.support.chat import MODELS
from tests.support.llm_server import LlmServer

# One signing secret per test run, never written anywhere.
JWT_SECRET = "e2e-" + secrets.token_urlsafe(40)
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 20.0
_LOG_TAIL_CHARS = 20_000
_PORT_ATTEMPTS = 3

# Servers started, so a failing test can show what they logged; closed ones are dropped once
# the test that closed them has been reported.
_SERVERS: list[ServerProcess] = []


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _server_env(backend: Backend, overrides: dict[str, str]) -> dict[str, str]:
    # Settings the developer's shell may hold are dropped, so the server sees only the backend.
    settings_names = {name.upper() for name in Settings.model_fields}
    env = {key: value for key, value in os.environ.items() if key.upper() not in settings_names}
    env.update(
        APP_ENV="test",
        DATABASE_URL=backend.database_url,
        REDIS_PREFIX=backend.redis_prefix,
        DATA_DIR=str(backend.data_dir),
        JWT_SECRET=JWT_SECRET,
        BCRYPT_ROUNDS="4",
        LOG_LEVEL="INFO",
        # Every request of a run comes from 127.0.0.1: the per-IP auth limit is not under test
        # here (a test that wants it passes RATE_LIMIT_AUTH itself).
        RATE_LIMIT_AUTH="10000/minute",
    )
    if backend.redis_url is not None:
        env["REDIS_URL"] = backend.redis_url
    env.update(overrides)
    return env


@dataclass
class ServerProcess:
    """A running `chat-store serve`; its stdout and stderr go to `log_path`."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    closed: bool = field(default=False, init=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def client(self, **kwargs: Any) -> AsyncChatStoreClient:
        return AsyncChatStoreClient(self.base_url, **kwargs)

    def sync_client(self, **kwargs: Any) -> ChatStoreClient:
        return ChatStoreClient(self.base_url, **kwargs)

    def log(self) -> str:
        """What the server wrote to stdout and stderr so far (the tail, if long)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return text[-_LOG_TAIL_CHARS:]

    def send_signal(self, signum: int) -> None:
        if self.running:
            self.process.send_signal(signum)

    def terminate(self) -> None:
        """SIGTERM: what an orchestrator sends to stop a container."""
        self.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int:
        """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
        self.terminate()
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def close(self) -> None:
        """Stop the process (its log is still reported if the current test fails)."""
        if not self.closed:
            self.stop()
            self.closed = True

    async def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Wait until this process listens on its port and /health/ready answers 200.

        The bind is read from the process's own log, so a server of someone else's that happens
        to answer on the same port is never mistaken for this one.
        """
        deadline = time.monotonic() + timeout
        bound = f"Uvicorn running on {self.base_url}"
        async with self.client(timeout=2.0) as client:
            while True:
                if not self.running:
                    log = self.log()
                    raise ServerExited(
                        f"chat-store serve exited with {self.returncode} before it was ready:\n"
                        f"{log}",
                        log,
                    )
                try:
                    if bound in self.log() and (await client.ready()).ready:
                        return
                except (httpx.TransportError, ChatStoreError):
                    pass  # not listening yet
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"chat-store serve was not ready after {timeout:.0f} s:\n{self.log()}"
                    )
                await asyncio.sleep(0.1)


class ServerExited(RuntimeError):
    def __init__(self, message: str, log: str) -> None:
        super().__init__(message)
        self.log = log


async def start_server(
    backend: Backend, *, migrate: bool = True, port: int | None = None, **env: str
) -> ServerProcess:
    """Start `chat-store serve` on `backend` and return once /health/ready answers 200.

    A free port is picked unless one is given. Another process may take it between the pick and
    the bind; then a new port is tried.
    """
    for attempt in range(_PORT_ATTEMPTS):
        server = _spawn(backend, port or _free_port(), migrate=migrate, env=env)
        try:
            await server.wait_ready()
        except ServerExited as exc:
            server.close()
            if (
                port is None
                and "address already in use" in exc.log
                and attempt + 1 < _PORT_ATTEMPTS
            ):
                continue
            raise
        except BaseException:
            server.close()
            raise
        return server
    raise AssertionError("unreachable")


def _spawn(backend: Backend, port: int, *, migrate: bool, env: dict[str, str]) -> ServerProcess:
    executable = Path(sys.executable).with_name("chat-store")
    log_path = backend.data_dir / f"server-{port}.log"
    command = [str(executable), "serve", "--host", "127.0.0.1", "--port", str(port)]
    command.append("--migrate" if migrate else "--no-migrate")
    with log_path.open("wb") as log:
        # cwd is the backend's folder, so no .env file of the checkout is read.
        process = subprocess.Popen(
            command,
            cwd=backend.data_dir,
            env=_server_env(backend, env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(process=process, port=port, log_path=log_path)
    _SERVERS.append(server)
    return server


@asynccontextmanager
async def running_server(backend: Backend, **kwargs: Any) -> AsyncIterator[ServerProcess]:
    server = await start_server(backend, **kwargs)
    try:
        yield server
    finally:
        server.close()


# Streaming tests make far more requests per minute than the default limits allow, and poll
# the store often so that a lost publish is noticed quickly.
NO_LIMITS = {"RATE_LIMIT_ENABLED": "false", "STREAM_POLL_SECONDS": "1"}


def llm_env(llm: LlmServer, **overrides: str) -> dict[str, str]:
    """A server's environment for chat turns with the test provider."""
    env = {
        **NO_LIMITS,
        "LLM_BASE_URL": llm.base_url,
        "LLM_MODEL": "test",
        "LLM_MODELS": ",".join(MODELS),
        "LLM_MAX_RETRIES": "0",
        "LLM_TIMEOUT_SECONDS": "5",
        "GENERATION_FLUSH_SECONDS": "0.02",
    }
    env.update(overrides)
    return env


@pytest.fixture(scope="module")
async def e2e_backend() -> AsyncIterator[Backend]:
    async with provision("e2e") as backend:
        yield backend


@pytest.fixture(scope="module")
async def server(e2e_backend: Backend) -> AsyncIterator[ServerProcess]:
    """One server for a module's tests (each test uses its own accounts)."""
    async with running_server(e2e_backend) as started:
        yield started


@pytest.fixture(scope="module")
async def stream_server(e2e_backend: Backend) -> AsyncIterator[ServerProcess]:
    async with running_server(e2e_backend, **NO_LIMITS) as started:
        yield started


@pytest.fixture(scope="module")
async def chat_server(e2e_backend: Backend, llm: LlmServer) -> AsyncIterator[ServerProcess]:
    async with running_server(e2e_backend, **llm_env(llm)) as started:
        yield started


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for server in _SERVERS:
            report.sections.append(
                (f"chat-store server on port {server.port} (pid {server.pid})", server.log())
            )
    if report.when == "teardown":
        _SERVERS[:] = [server for server in _SERVERS if not server.closed]
    return report
