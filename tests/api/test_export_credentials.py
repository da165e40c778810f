"""An export goes on for as long as its client reads: the credential it was asked with is
checked again between batches (at most every STREAM_CREDENTIAL_CHECK_SECONDS), and a revoked
key, an expired token or a deleted user cuts the answer (its body left without its end), on
both backends.

The ASGI test transport reads a streamed body whole, so the client here is paced by a hook in
the app's `send`: the answer's generator waits while the hook runs (as it waits for a slow
client), and the hook revokes the credential between two batches. What a client of a real
server sees of a cut is in tests/e2e/test_export_credentials.py.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chat_store.models import ChatSession
from chat_store.security import create_access_token
from chat_store.services import archive as archive_service
from chat_store.services import export as export_service
from chat_store.services import principals as principal_service
from chat_store.services.archive import Archiver
from tests.conftest import AppUnderTest, AppWith
from tests.factories import API, Account

KEYS = f"{API}/api-keys"
OnChunk = Callable[[int], Awaitable[None]]


class Paced:
    """The app behind a hook run after each chunk of an answer's body is sent: the body's
    chunks, and whether the app sent its end."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.chunks: list[bytes] = []
        self.ended = False
        self.on_chunk: OnChunk | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def paced_send(message: Message) -> None:
            await send(message)
            if message["type"] != "http.response.body":
                return
            if message.get("body"):
                self.chunks.append(message["body"])
                if self.on_chunk is not None:
                    await self.on_chunk(len(self.chunks))
            if not message.get("more_body", False):
                self.ended = True

        await self.app(scope, receive, paced_send)
        if not self.ended:
            # Cut: a server closes the connection now; the test transport wants an end.
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    @property
    def body(self) -> str:
        return b"".join(self.chunks).decode()


@asynccontextmanager
async def paced_client(custom: AppUnderTest) -> AsyncIterator[tuple[httpx.AsyncClient, Paced]]:
    paced = Paced(custom.app)
    # An exception of the app reaches the test: a cut is not one.
    transport = httpx.ASGITransport(app=paced, raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client, paced


@pytest.fixture
def tiny_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several reads make up each answer: two messages, two sessions at a time."""
    monkeypatch.setattr(export_service, "MESSAGE_BATCH", 2)
    monkeypatch.setattr(export_service, "SESSION_BATCH", 2)


@pytest.fixture
def still_valid_calls(monkeypatch: pytest.MonkeyPatch) -> list[uuid.UUID]:
    """The user ids whose credential an export checked in the database, in order."""
    calls: list[uuid.UUID] = []
    still_valid = principal_service.still_valid

    async def counted(db: Any, principal: principal_service.Principal) -> bool:
        calls.append(principal.user_id)
        return await still_valid(db, principal)

    monkeypatch.setattr(principal_service, "still_valid", counted)
    return calls


async def revoke(custom: AppUnderTest, account: Account, key: dict[str, Any]) -> None:
    revoked = await custom.client.delete(f"{KEYS}/{key['id']}", headers=account.headers)
    assert revoked.status_code == 204, revoked.text


def export_url(session_id: str, export_format: str) -> str:
    return f"{API}/sessions/{session_id}/export?format={export_format}"


@pytest.mark.parametrize("export_format", ["json", "jsonl", "markdown"])
async def test_a_key_revoked_mid_export_cuts_the_session_export(
    app_with: AppWith, tiny_batches: None, export_format: str
) -> None:
    async with app_with(stream_credential_check_seconds=0) as custom:
        factory = custom.factory
        account = await factory.account()
        key = await factory.api_key(account)
        sid = (await factory.chat_session(account))["id"]
        await factory.messages(account, sid, 6)

        async with paced_client(custom) as (client, paced):

            async def revoke_after_the_first_batch(chunk: int) -> None:
                if chunk == 2:  # the header, then m1 and m2
                    await revoke(custom, account, key)
                    await factory.message(account, sid, content="written after the revocation")

            paced.on_chunk = revoke_after_the_first_batch
            cut = await client.get(
                export_url(sid, export_format), headers={"X-API-Key": key["key"]}
            )

    assert cut.status_code == 200
    assert not paced.ended  # cut: the body has no end, not a shorter whole one
    assert len(paced.chunks) == 2
    assert "m2" in paced.body and "m3" not in paced.body
    assert "after the revocation" not in paced.body
    if export_format == "json":
        assert not paced.body.rstrip().endswith("]}")


async def test_a_key_revoked_mid_export_cuts_the_account_export(
    app_with: AppWith, tiny_batches: None
) -> None:
    async with app_with(stream_credential_check_seconds=0) as custom:
        factory = custom.factory
        account = await factory.account()
        key = await factory.api_key(account)
        sessions = [(await factory.chat_session(account, title=f"s{i}"))["id"] for i in range(5)]
        for sid in sessions:
            await factory.messages(account, sid, 3)

        async with paced_client(custom) as (client, paced):

            async def revoke_in_the_second_session(chunk: int) -> None:
                # The account line; s0's line and its two batches; s1's line.
                if chunk == 5:
                    await revoke(custom, account, key)
                    await factory.chat_session(account, title="made after the revocation")

            paced.on_chunk = revoke_in_the_second_session
            cut = await client.get(f"{API}/users/me/export", headers={"X-API-Key": key["key"]})

    assert cut.status_code == 200
    assert not paced.ended
    lines = [json.loads(line) for line in paced.body.splitlines()]
    assert [line["session"]["id"] for line in lines if line["type"] == "session"] == sessions[:2]
    # s1's line went out before the revocation; its messages would be read after it.
    assert [line["session_id"] for line in lines if line["type"] == "message"] == [sessions[0]] * 3


async def test_an_access_token_that_expires_mid_export_cuts_it(
    app_with: AppWith, tiny_batches: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with app_with(stream_credential_check_seconds=0) as custom:
        factory = custom.factory
        account = await factory.account()
        settings = custom.state.settings
        token, _ = create_access_token(
            uuid.UUID(account.user_id),
            settings.jwt_secret_value(),
            settings.jwt_algorithm,
            timedelta(hours=1),
        )
        sid = (await factory.chat_session(account))["id"]
        await factory.messages(account, sid, 6)

        class TwoHoursLater(datetime):
            @classmethod
            def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
                return datetime.now(tz) + timedelta(hours=2)

        async with paced_client(custom) as (client, paced):

            async def expire_after_the_first_batch(chunk: int) -> None:
                if chunk == 2:
                    monkeypatch.setattr(principal_service, "datetime", TwoHoursLater)

            paced.on_chunk = expire_after_the_first_batch
            cut = await client.get(
                export_url(sid, "jsonl"), headers={"Authorization": f"Bearer {token}"}
            )

    assert cut.status_code == 200
    assert not paced.ended
    assert "m2" in paced.body and "m3" not in paced.body


async def test_a_key_revoked_mid_export_cuts_an_archived_sessions_export(
    app_with: AppWith, tiny_batches: None
) -> None:
    """An archived session's messages are read from its object before the answer starts; they
    are sent batch by batch all the same, and the credential checked between them."""
    async with app_with(stream_credential_check_seconds=0) as custom:
        factory, state = custom.factory, custom.state
        account = await factory.account()
        key = await factory.api_key(account)
        sid = (await factory.chat_session(account))["id"]
        await factory.messages(account, sid, 6)
        async with state.sessionmaker() as db, db.begin():
            await db.execute(
                update(ChatSession)
                .where(ChatSession.id == uuid.UUID(sid))
                .values(last_activity_at=datetime.now(UTC) - timedelta(days=100))
            )
        report = await archive_service.archive_idle_sessions(
            Archiver(state.sessionmaker, state.archive), timedelta(days=90), dry_run=False
        )
        assert report.sessions == 1

        async with paced_client(custom) as (client, paced):

            async def revoke_after_the_first_batch(chunk: int) -> None:
                if chunk == 2:
                    await revoke(custom, account, key)

            paced.on_chunk = revoke_after_the_first_batch
            cut = await client.get(export_url(sid, "jsonl"), headers={"X-API-Key": key["key"]})

    assert cut.status_code == 200
    assert not paced.ended
    assert "m2" in paced.body and "m3" not in paced.body


async def test_the_credential_is_checked_at_most_every_interval(
    app_with: AppWith, tiny_batches: None, still_valid_calls: list[uuid.UUID]
) -> None:
    """With the default interval a quick export is not checked again (its request has just
    authenticated the caller); with 0, once per read. A key revoked within the interval is
    refused by the next request, while the export it started runs to its end."""
    async with app_with(stream_credential_check_seconds=60) as custom:
        factory = custom.factory
        account = await factory.account()
        key = await factory.api_key(account)
        sid = (await factory.chat_session(account))["id"]
        await factory.messages(account, sid, 6)
        by_key = {"X-API-Key": key["key"]}

        async with paced_client(custom) as (client, paced):

            async def revoke_after_the_first_batch(chunk: int) -> None:
                if chunk == 2:
                    await revoke(custom, account, key)

            paced.on_chunk = revoke_after_the_first_batch
            whole = await client.get(export_url(sid, "json"), headers=by_key)

        assert whole.status_code == 200 and paced.ended
        assert [m["content"] for m in whole.json()["messages"]] == [f"m{i}" for i in range(1, 7)]
        assert still_valid_calls == []
        assert (await custom.client.get(export_url(sid, "json"), headers=by_key)).status_code == 401

    async with app_with(stream_credential_check_seconds=0) as custom:
        factory = custom.factory
        account = await factory.account()
        sid = (await factory.chat_session(account))["id"]
        await factory.messages(account, sid, 6)
        still_valid_calls.clear()
        exported = await custom.client.get(export_url(sid, "jsonl"), headers=account.headers)
        assert exported.status_code == 200
        # Three batches of two, and the read that finds no more.
        assert still_valid_calls == [uuid.UUID(account.user_id)] * 4


async def test_a_guest_without_a_row_exports_its_empty_account(
    app_with: AppWith, still_valid_calls: list[uuid.UUID]
) -> None:
    """A guest that has written nothing has no row: there is no credential in the database to
    check again, and its (empty) export is whole."""
    async with (
        app_with(allow_guests=True, stream_credential_check_seconds=0) as custom,
        paced_client(custom) as (client, paced),
    ):
        exported = await client.get(
            f"{API}/users/me/export", headers={"X-Client-ID": str(uuid.uuid4())}
        )

    assert exported.status_code == 200, exported.text
    assert paced.ended
    assert [json.loads(line)["type"] for line in exported.text.splitlines()] == ["account"]
    assert still_valid_calls == []
