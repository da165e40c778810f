"""A real server process, driven only through the project's Python client."""

from __future__ import annotations

import itertools
import secrets
import signal
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from chat_store.client import (
    AsyncChatStoreClient,
    ConflictError,
    NotFoundError,
    RateLimitedError,
    UnauthorizedError,
    ValidationError,
)
from tests.backends import Backend
from tests.e2e.conftest import ServerProcess, running_server

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery staple"
_counter = itertools.count(1)


def new_email() -> str:
    return f"e2e-{next(_counter)}-{secrets.token_hex(3)}@example.com"


async def new_account(server: ServerProcess) -> tuple[AsyncChatStoreClient, str]:
    """A registered, logged-in client (close it with aclose)."""
    client = server.client()
    email = new_email()
    await client.register(email, PASSWORD)
    await client.login(email, PASSWORD)
    return client, email


async def test_account_sessions_api_keys_and_tokens(server: ServerProcess) -> None:
    email = new_email()
    async with server.client() as client:
        assert (await client.health()).status == "ok"

        # register -> login
        user = await client.register(email.upper(), PASSWORD, display_name="Ada")
        assert user.email == email  # stored case-folded
        tokens = await client.login(email, PASSWORD)
        assert tokens.token_type == "bearer" and tokens.expires_in > 0
        assert client.access_token == tokens.access_token
        assert (await client.me()).id == user.id

        # create sessions; a retried create with the same Idempotency-Key is not a second write
        key = str(uuid.uuid4())
        first = await client.create_session(
            title="Fix flaky test in billing",
            workspace={"repo": "github.com/acme/api", "branch": "main"},
            metadata={"client": "cli/1.4"},
            idempotency_key=key,
        )
        retried = await client.create_session(
            title="Fix flaky test in billing",
            workspace={"repo": "github.com/acme/api", "branch": "main"},
            metadata={"client": "cli/1.4"},
            idempotency_key=key,
        )
        assert retried == first
        with pytest.raises(ConflictError) as reused:
            await client.create_session(title="Something else", idempotency_key=key)
        assert reused.value.code == "idempotency_key_reused"
        assert first.workspace is not None and first.workspace.repo == "github.com/acme/api"
        assert first.metadata == {"client": "cli/1.4"} and first.status == "active"
        second = await client.create_session()
        third = await client.create_session(title="Billing refactor")
        assert second.title is None

        # list: newest activity first, keyset pages, and every page walked
        page = await client.list_sessions(limit=2)
        assert [s.id for s in page.data] == [third.id, second.id] and page.has_more
        rest = await client.list_sessions(limit=2, after=page.last_id)
        assert [s.id for s in rest.data] == [first.id] and not rest.has_more
        walked = [s.id async for s in client.iter_sessions(page_size=1)]
        assert walked == [third.id, second.id, first.id]
        oldest_first = [s.id async for s in client.iter_sessions(order="asc", page_size=2)]
        assert oldest_first == [first.id, second.id, third.id]

        # rename (PUT alias), then favourite (set, filter, toggle)
        renamed = await client.rename_session(second.id, "Named later")
        assert renamed.title == "Named later"
        assert (await client.get_session(second.id)).title == "Named later"
        assert (await client.set_favorite(first.id, True)).is_favorite
        favourites = await client.list_sessions(favorite=True)
        assert [s.id for s in favourites.data] == [first.id]
        assert not (await client.set_favorite(first.id)).is_favorite
        assert (await client.set_favorite(first.id)).is_favorite

        # the other filters, and a general PATCH
        found = await client.list_sessions(q="BILLING")
        assert [s.id for s in found.data] == [third.id, first.id]
        in_repo = await client.list_sessions(repo="github.com/acme/api")
        assert [s.id for s in in_repo.data] == [first.id]
        ended = await client.update_session(third.id, status="ended", metadata={"done": True})
        assert ended.status == "ended" and ended.ended_at is not None
        assert ended.metadata == {"done": True} and ended.title == "Billing refactor"
        assert [s.id for s in (await client.list_sessions(status="ended")).data] == [third.id]
        since = ended.updated_at - timedelta(microseconds=1)
        recent = await client.list_sessions(updated_after=since)
        assert [s.id for s in recent.data] == [third.id]

        # an API key works on its own, until it is revoked
        created = await client.create_api_key("laptop cli")
        assert created.key.startswith("csk_") and created.key.startswith(created.prefix)
        async with server.client(api_key=created.key) as with_key:
            assert (await with_key.me()).id == user.id
            listed = [s.id async for s in with_key.iter_sessions()]
            assert listed == [third.id, second.id, first.id]
            keys = (await client.list_api_keys()).data
            assert [k.id for k in keys] == [created.id]
            assert keys[0].last_used_at is not None
            assert "key" not in keys[0].model_dump()
            await client.revoke_api_key(created.id)
            with pytest.raises(UnauthorizedError) as refused:
                await with_key.me()
            assert refused.value.code == "unauthorized"
        assert (await client.list_api_keys()).data == []

        # refresh: a new pair, and the old refresh token is spent
        old_refresh = client.refresh_token
        refreshed = await client.refresh()
        assert refreshed.refresh_token != old_refresh
        assert client.refresh_token == refreshed.refresh_token
        assert (await client.me()).id == user.id

        # an access token the server refuses is refreshed once, by the client itself
        client.access_token = "not-a-valid-token"
        assert (await client.me()).id == user.id
        assert client.access_token != "not-a-valid-token"

        # logout revokes the refresh token
        last_refresh = client.refresh_token
        assert last_refresh is not None
        await client.logout()
        assert client.access_token is None and client.refresh_token is None
        with pytest.raises(UnauthorizedError):
            await client.refresh(last_refresh)

        # delete me: the account, its sessions and its tokens are gone; the email is free again
        await client.login(email, PASSWORD)
        await client.delete_me()
        assert client.access_token is None
        with pytest.raises(UnauthorizedError):
            await client.login(email, PASSWORD)
        again = await client.register(email, PASSWORD)
        assert again.id != user.id
        await client.login(email, PASSWORD)
        assert (await client.list_sessions()).data == []
        await client.delete_me()


async def test_refresh_token_reuse_revokes_the_login(server: ServerProcess) -> None:
    client, _ = await new_account(server)
    async with client:
        spent = client.refresh_token
        assert spent is not None
        current = await client.refresh()
        with pytest.raises(UnauthorizedError) as reused:
            await client.refresh(spent)
        assert "reused" in reused.value.detail
        # the whole family is revoked, the newest token included
        with pytest.raises(UnauthorizedError):
            await client.refresh(current.refresh_token)
        await client.delete_me()


async def test_sessions_of_others_are_not_found(server: ServerProcess) -> None:
    owner, _ = await new_account(server)
    other, _ = await new_account(server)
    async with owner, other:
        mine = await owner.create_session(title="private")
        for attempt in (
            other.get_session(mine.id),
            other.rename_session(mine.id, "taken over"),
            other.set_favorite(mine.id, True),
            other.update_session(mine.id, title="x"),
            other.delete_session(mine.id),
        ):
            with pytest.raises(NotFoundError) as missing:
                await attempt
            assert missing.value.code == "session_not_found"
        assert (await other.list_sessions()).data == []
        # a taken id is taken for everyone
        with pytest.raises(ConflictError) as taken:
            await other.create_session(id=mine.id)
        assert taken.value.code == "session_exists"
        deleted = await owner.delete_session(mine.id)
        assert (deleted.id, deleted.object, deleted.deleted) == (mine.id, "session.deleted", True)
        with pytest.raises(NotFoundError):
            await owner.get_session(mine.id)
        await owner.delete_me()
        await other.delete_me()


async def test_errors_carry_status_code_and_problem(server: ServerProcess) -> None:
    async with server.client() as anonymous:
        with pytest.raises(UnauthorizedError) as unauthenticated:
            await anonymous.list_sessions()
        assert unauthenticated.value.status == 401
        assert unauthenticated.value.problem["instance"] == "/api/v1/sessions"
        assert unauthenticated.value.request_id

        email = new_email()
        await anonymous.register(email, PASSWORD)
        with pytest.raises(ConflictError) as taken:
            await anonymous.register(email, PASSWORD)
        assert taken.value.code == "email_taken"
        with pytest.raises(UnauthorizedError) as wrong:
            await anonymous.login(email, "not the password")
        assert wrong.value.detail == "Incorrect email or password"

        await anonymous.login(email, PASSWORD)
        with pytest.raises(ValidationError) as too_long:
            await anonymous.create_session(title="x" * 201)
        assert too_long.value.code == "validation_error"
        assert too_long.value.errors[0]["loc"] == ["body", "title"]
        with pytest.raises(ValidationError) as not_an_id:
            await anonymous.get_session("not-a-uuid")
        assert not_an_id.value.errors[0]["loc"] == ["path", "session_id"]
        with pytest.raises(ValidationError):
            await anonymous.create_api_key("old", expires_at=datetime.now(UTC) - timedelta(days=1))
        await anonymous.delete_me()


def test_the_blocking_client(server: ServerProcess) -> None:
    email = new_email()
    with server.sync_client() as client:
        assert client.ready().ready
        client.register(email, PASSWORD)
        client.login(email, PASSWORD)
        created = [client.create_session(title=f"session {n}") for n in range(3)]
        walked = [s.id for s in client.iter_sessions(page_size=2)]
        assert walked == [s.id for s in reversed(created)]
        assert client.rename_session(created[0].id, "renamed").title == "renamed"
        assert client.set_favorite(created[0].id).is_favorite
        key = client.create_api_key("script")
        with server.sync_client(api_key=key.key) as with_key:
            assert with_key.get_session(created[0].id).title == "renamed"
        client.access_token = "expired"
        assert client.delete_session(created[1].id).deleted
        assert [s.id for s in client.iter_sessions()] == [created[2].id, created[0].id]
        client.delete_me()


async def test_two_servers_share_a_backend_and_stop_on_sigterm(e2e_backend: Backend) -> None:
    async with running_server(e2e_backend) as first, running_server(e2e_backend) as second:
        assert first.port != second.port
        async with first.client() as on_first, second.client() as on_second:
            email = new_email()
            await on_first.register(email, PASSWORD)
            await on_second.login(email, PASSWORD)
            created = await on_second.create_session(title="written on the second")
            await on_first.login(email, PASSWORD)
            assert (await on_first.get_session(created.id)).title == "written on the second"

            # uvicorn shuts down gracefully, then re-raises the signal it caught
            second.terminate()
            assert second.wait() == -signal.SIGTERM
            assert "Application shutdown complete" in second.log()
            assert (await on_first.get_session(created.id)).id == created.id
            await on_first.delete_me()


async def test_rate_limited_answers_carry_retry_after(e2e_backend: Backend) -> None:
    async with (
        running_server(e2e_backend, RATE_LIMIT_AUTH="2/minute") as server,
        server.client() as client,
    ):
        await client.register(new_email(), PASSWORD)
        await client.register(new_email(), PASSWORD)
        with pytest.raises(RateLimitedError) as limited:
            await client.register(new_email(), PASSWORD)
    assert (limited.value.status, limited.value.code) == (429, "rate_limited")
    assert limited.value.retry_after is not None and 0 < limited.value.retry_after <= 60


async def test_search_through_the_client(server: ServerProcess) -> None:
    client, _ = await new_account(server)
    async with client:
        session = await client.create_session(title="Flaky billing on CI")
        question = await client.append_message(
            session.id, "user", "Why does test_billing fail? KeyError in src/app/main.py"
        )
        answer = await client.append_message(session.id, "assistant", status="pending")
        await client.append_delta(session.id, answer.id, "Freeze the fixture clock.", 0)
        assert (await client.search("fixture clock")).data == []  # still streaming
        await client.complete_message(session.id, answer.id)

        page = await client.search("main.py or clock", limit=1)
        assert page.has_more and page.next_cursor
        rest = await client.search("main.py or clock", cursor=page.next_cursor)
        found = {hit.message.id for hit in [*page.data, *rest.data] if hit.message}
        assert found == {question.id, answer.id}

        [title] = (await client.search("flaky", role=None)).data
        assert title.message is None and title.matches == ["Flaky"]
        assert (await client.search("test_billing", role="assistant")).data == []
        with pytest.raises(ValidationError):
            await client.search("-only -excluded")
