"""An export cut by a revocation, as a client of a real server sees it: the body ends without
its last chunk (an error), never as a shorter answer that looks whole."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.backends import Backend
from tests.e2e.conftest import ServerProcess, running_server

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery staple"
# Four reads of 500 messages, 30 MB in all: far more than the sockets between the server and the
# client hold, so the server waits for the client to read on, as it does for a slow download.
MESSAGES = 2000
TEXT = "x" * 15_000


@pytest.fixture(scope="module")
async def export_server(e2e_backend: Backend) -> AsyncIterator[ServerProcess]:
    async with running_server(
        e2e_backend, RATE_LIMIT_ENABLED="false", STREAM_CREDENTIAL_CHECK_SECONDS="0"
    ) as started:
        yield started


async def test_an_export_whose_key_is_revoked_is_cut(export_server: ServerProcess) -> None:
    async with export_server.client() as owner:
        email = f"e2e-export-{secrets.token_hex(4)}@example.com"
        await owner.register(email, PASSWORD)
        await owner.login(email, PASSWORD)
        key = await owner.create_api_key("export")
        session = await owner.create_session()
        for start in range(0, MESSAGES, 100):
            batch = [
                {"role": "user", "content": f"{seq:05d} {TEXT}"}
                for seq in range(start, start + 100)
            ]
            await owner.append_messages(session.id, batch)

        received = bytearray()
        revoked = False
        async with export_server.client(api_key=key.key) as by_key:
            with pytest.raises(httpx.RemoteProtocolError):
                async for chunk in by_key.iter_export(session.id, export_format="jsonl"):
                    received += chunk
                    if not revoked and len(received) > 1_000_000:
                        await owner.revoke_api_key(key.id)
                        await owner.append_messages(
                            session.id, [{"role": "user", "content": "after the revocation"}]
                        )
                        revoked = True

    assert revoked
    text = received.decode()
    assert "after the revocation" not in text
    assert text.count('"type":"message"') < MESSAGES
