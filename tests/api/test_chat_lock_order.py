"""The lock order of generated answers: whatever ends a generation (a completion, a failure, a
cancel, a continue's claim) writes its lease row and then its session's row; a deletion that
reaches the lease row (ON DELETE CASCADE) locks it first too, so the two wait for each other
instead of deadlocking (Postgres aborts one of two transactions that deadlock; SQLite has one
writer at a time)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from chat_store.api.deps import AppState
from chat_store.crud import generations as generation_crud
from chat_store.crud.generations import LeaseHolder
from chat_store.models import ChatSession
from chat_store.schemas.messages import MessageUpdate
from chat_store.services import retention
from chat_store.services.context import RequestContext
from chat_store.services.generation import store
from tests.conftest import AppWith
from tests.factories import API, Account, Factory
from tests.support.chat import message_path, new_session

pytestmark = pytest.mark.postgres_only

OWNER = "generating:1:test"
# Long enough for the other transaction to be waiting on its lock (and, in the old order, to
# hold the session's row); shorter than Postgres' deadlock_timeout (1 s).
_WHILE_THE_OTHER_WAITS = 0.2


async def _answer_being_generated(
    state: AppState, factory: Factory, *, status: str = "in_progress", held: bool = True
) -> tuple[Account, str, str]:
    """A session with a question and its answer, which has a lease row: held by OWNER (a live
    generation), or not held (a failed answer, as a continue finds it)."""
    account, session_id = await new_session(factory)
    await factory.message(account, session_id, role="user", content="Why?")
    answer = await factory.message(
        account,
        session_id,
        role="assistant",
        status=status,
        partial_content="The fixture uses ",
        model="test",
    )
    await _lease(state, answer["id"], session_id, account.user_id, held=held)
    return account, session_id, answer["id"]


async def _complete_while(
    state: AppState,
    account: Account,
    session_id: str,
    answer_id: str,
    deleting: Callable[[], Awaitable[Any]],
) -> Any:
    """Complete the answer as its run does (the lease released, then the answer updated, which
    bumps the session's history version, in one transaction), with `deleting` started between
    the two; returns what `deleting` returned."""
    message_id = uuid.UUID(answer_id)
    async with store.transaction(state.sessionmaker) as db:
        assert await generation_crud.release(
            db, message_id, datetime.now(UTC), holder=LeaseHolder(OWNER, 1)
        )
        deletion = asyncio.create_task(deleting())
        await asyncio.sleep(_WHILE_THE_OTHER_WAITS)
        assert not deletion.done()  # it waits for the lease row
        ctx = RequestContext(db, store.owner_principal(uuid.UUID(account.user_id)), state)
        current = await store.get_message(ctx, uuid.UUID(session_id), message_id)
        await store.update(ctx, current, MessageUpdate(status="complete"))
    return await asyncio.wait_for(deletion, timeout=10)


async def test_deleting_a_session_while_its_answer_completes(
    state: AppState, client: httpx.AsyncClient, factory: Factory
) -> None:
    account, session_id, answer_id = await _answer_being_generated(state, factory)

    async def delete_session() -> httpx.Response:
        return await client.delete(f"{API}/sessions/{session_id}", headers=account.headers)

    deleted = await _complete_while(state, account, session_id, answer_id, delete_session)

    assert deleted.status_code == 200, deleted.text
    gone = await client.get(f"{API}/sessions/{session_id}", headers=account.headers)
    assert gone.status_code == 404


async def test_deleting_an_answer_while_it_completes(
    state: AppState, client: httpx.AsyncClient, factory: Factory
) -> None:
    account, session_id, answer_id = await _answer_being_generated(state, factory)

    async def delete_answer() -> httpx.Response:
        return await client.delete(message_path(session_id, answer_id), headers=account.headers)

    deleted = await _complete_while(state, account, session_id, answer_id, delete_answer)

    assert deleted.status_code == 200, deleted.text
    gone = await client.get(message_path(session_id, answer_id), headers=account.headers)
    assert gone.status_code == 404


async def test_deleting_an_account_while_its_answer_completes(
    state: AppState, client: httpx.AsyncClient, factory: Factory
) -> None:
    account, session_id, answer_id = await _answer_being_generated(state, factory)

    async def delete_account() -> httpx.Response:
        return await client.delete(f"{API}/users/me", headers=account.headers)

    deleted = await _complete_while(state, account, session_id, answer_id, delete_account)

    assert deleted.status_code == 204, deleted.text
    async with state.sessionmaker() as db:
        assert await generation_crud.get(db, uuid.UUID(answer_id)) is None


async def test_retention_while_a_continue_claims_an_answer_of_an_idle_session(
    state: AppState, client: httpx.AsyncClient, factory: Factory
) -> None:
    """A continue claims the lease of a failed answer, then locks the session (and makes the
    answer in_progress); retention deletes the session, idle as it was before the claim, in
    between. The session is kept: it has an answer being generated once the continue
    commits."""
    account, session_id, answer_id = await _answer_being_generated(
        state, factory, status="failed", held=False
    )
    async with state.sessionmaker() as db, db.begin():
        await db.execute(
            update(ChatSession)
            .where(ChatSession.id == uuid.UUID(session_id))
            .values(last_activity_at=datetime.now(UTC) - timedelta(days=30))
        )

    async with store.transaction(state.sessionmaker) as db:
        now = datetime.now(UTC)
        claimed = await generation_crud.claim(
            db,
            uuid.UUID(answer_id),
            owner=OWNER,
            lease_until=now + timedelta(seconds=60),
            now=now,
        )
        assert claimed is not None
        purge = asyncio.create_task(
            retention.purge_idle_sessions(state.sessionmaker, timedelta(days=1), dry_run=False)
        )
        await asyncio.sleep(_WHILE_THE_OTHER_WAITS)
        assert not purge.done()  # it waits for the lease row
        ctx = RequestContext(db, store.owner_principal(uuid.UUID(account.user_id)), state)
        await store.lock_session(ctx, uuid.UUID(session_id))
        answer = await store.get_message(ctx, uuid.UUID(session_id), uuid.UUID(answer_id))
        await store.update(ctx, answer, MessageUpdate(status="in_progress"))
    report = await asyncio.wait_for(purge, timeout=10)

    assert report.sessions == 0
    kept = await client.get(message_path(session_id, answer_id), headers=account.headers)
    assert kept.status_code == 200


async def test_claiming_a_guests_sessions_while_its_answer_completes(app_with: AppWith) -> None:
    """The claim moves the guest's sessions, messages and lease rows to the user: it locks the
    lease rows first too."""
    async with app_with(allow_guests=True) as guests_allowed:
        client, state = guests_allowed.client, guests_allowed.state
        guest = {"X-Client-ID": str(uuid.uuid4())}
        created = await client.post(f"{API}/sessions", json={}, headers=guest)
        session_id = created.json()["id"]
        answer = await client.post(
            f"{API}/sessions/{session_id}/messages",
            json={"role": "assistant", "status": "in_progress", "partial_content": "The "},
            headers=guest,
        )
        guest_id = (await client.get(f"{API}/users/me", headers=guest)).json()["id"]
        answer_id = answer.json()["id"]
        await _lease(state, answer_id, session_id, guest_id)
        account = await Factory(client).account()

        async def claim() -> httpx.Response:
            return await client.post(
                f"{API}/auth/claim",
                json={"client_id": guest["X-Client-ID"]},
                headers=account.headers,
            )

        guest_account = Account(guest_id, "", "", "", "")
        claimed = await _complete_while(state, guest_account, session_id, answer_id, claim)

        assert claimed.status_code == 200, claimed.text
        moved = await client.get(message_path(session_id, answer_id), headers=account.headers)
        assert moved.json()["status"] == "complete"


async def _lease(
    state: AppState, answer_id: str, session_id: str, user_id: str, *, held: bool = True
) -> None:
    """The answer's lease row: held by OWNER (a live generation), or not held (a failed
    answer, as a continue finds it)."""
    now = datetime.now(UTC)
    async with state.sessionmaker() as db, db.begin():
        await generation_crud.insert_generation(
            db,
            {
                "message_id": uuid.UUID(answer_id),
                "session_id": uuid.UUID(session_id),
                "user_id": uuid.UUID(user_id),
                "owner": OWNER if held else None,
                "lease_expires_at": now + timedelta(seconds=60) if held else None,
                "attempt": 1,
                "params": {"model": "test"},
                "created_at": now,
                "updated_at": now,
            },
        )
