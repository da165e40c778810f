"""The Python client against a fake service (httpx.MockTransport): requests, errors, refresh."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from chat_store.client import (
    UNSET,
    AsyncChatStoreClient,
    Call,
    ChatStoreClient,
    ChatStoreError,
    ConflictError,
    ForbiddenError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    ServerError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
    ValidationError,
    models,
)
from chat_store.client._chat import chat_body
from chat_store.client._core import no_content
from chat_store.client._follow import Follower
from chat_store.client.errors import parse_retry_after
from chat_store.client.models import StreamDelta, StreamDone, StreamReset

Handler = Callable[[httpx.Request], httpx.Response]
NOW = "2026-11-26T12:00:00.123456Z"


def problem(status: int, code: str, detail: str = "it went wrong", **extra: Any) -> httpx.Response:
    payload = {
        "type": f"urn:chat-store:problem:{code}",
        "title": code,
        "status": status,
        "detail": detail,
        "instance": "/x",
        "code": code,
        **extra,
    }
    return httpx.Response(
        status,
        content=json.dumps(payload).encode(),
        headers={"Content-Type": "application/problem+json", "X-Request-ID": "req-1"},
    )


def session_json(**fields: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "object": "session",
        "title": None,
        "is_favorite": False,
        "status": "active",
        "metadata": {},
        "workspace": None,
        "message_count": 0,
        "total_tokens": 0,
        "last_message_at": None,
        "created_at": NOW,
        "updated_at": NOW,
        "ended_at": None,
        **fields,
    }


def user_json() -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "object": "user",
        "email": "ada@example.com",
        "display_name": None,
        "created_at": NOW,
        "updated_at": NOW,
    }


def tokens_json(n: int) -> dict[str, Any]:
    return {
        "access_token": f"access-{n}",
        "refresh_token": f"refresh-{n}",
        "token_type": "bearer",
        "expires_in": 900,
    }


def sync_client(handler: Handler, **kwargs: Any) -> ChatStoreClient:
    return ChatStoreClient("http://store", transport=httpx.MockTransport(handler), **kwargs)


def async_client(handler: Handler, **kwargs: Any) -> AsyncChatStoreClient:
    return AsyncChatStoreClient("http://store", transport=httpx.MockTransport(handler), **kwargs)


# --- errors


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (401, "unauthorized", UnauthorizedError),
        (403, "registration_closed", ForbiddenError),
        (404, "session_not_found", NotFoundError),
        (405, "method_not_allowed", MethodNotAllowedError),
        (409, "email_taken", ConflictError),
        (413, "payload_too_large", PayloadTooLargeError),
        (415, "unsupported_media_type", UnsupportedMediaTypeError),
        (422, "validation_error", ValidationError),
        (429, "rate_limited", RateLimitedError),
        (500, "internal_error", ServerError),
        (501, "generation_not_configured", ServerError),
    ],
)
def test_error_answers_raise_the_class_of_their_status(
    status: int, code: str, cls: type[ChatStoreError]
) -> None:
    with (
        sync_client(lambda request: problem(status, code, "nope")) as client,
        pytest.raises(cls) as caught,
    ):
        client.get_session(uuid.uuid4())
    error = caught.value
    assert (error.status, error.code, error.detail) == (status, code, "nope")
    assert error.problem["type"] == f"urn:chat-store:problem:{code}"
    assert error.request_id == "req-1"
    assert f"{status} {code}" in str(error)


def test_validation_error_lists_the_fields_at_fault() -> None:
    errors = [{"loc": ["body", "title"], "msg": "too long", "type": "value_error"}]
    with (
        sync_client(lambda request: problem(422, "validation_error", errors=errors)) as client,
        pytest.raises(ValidationError) as caught,
    ):
        client.create_session(title="x" * 300)
    assert caught.value.errors == errors


def test_extra_problem_members_are_kept() -> None:
    with (
        sync_client(lambda request: problem(409, "seq_conflict", last_seq=7)) as client,
        pytest.raises(ConflictError) as caught,
    ):
        client._request("POST", "/api/v1/sessions/x/messages", json={})
    assert caught.value.problem["last_seq"] == 7


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [(429, "rate_limited", RateLimitedError), (503, "generation_busy", ServerError)],
)
def test_an_answer_with_retry_after_carries_it(
    status: int, code: str, cls: type[ChatStoreError]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        response = problem(status, code)
        response.headers["Retry-After"] = "12"
        return response

    with sync_client(handler) as client, pytest.raises(cls) as caught:
        client.list_sessions()
    assert caught.value.retry_after == 12.0


def test_retry_after_as_http_date() -> None:
    now = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Thu, 26 Nov 2026 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Thu, 26 Nov 2026 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_an_answer_that_is_not_problem_json_still_raises() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>Bad gateway</html>")

    with sync_client(handler) as client, pytest.raises(ServerError) as caught:
        client.me()
    assert (caught.value.status, caught.value.code, caught.value.detail) == (
        502,
        "http_error",
        "Bad Gateway",
    )
    assert caught.value.problem == {}


def test_a_success_that_does_not_parse_is_an_invalid_response() -> None:
    with (
        sync_client(lambda request: httpx.Response(200, json={"id": "?"})) as client,
        pytest.raises(ChatStoreError) as caught,
    ):
        client.me()
    assert caught.value.code == "invalid_response"


async def test_async_client_raises_the_same_errors() -> None:
    async with async_client(lambda request: problem(404, "session_not_found")) as client:
        with pytest.raises(NotFoundError) as caught:
            await client.get_session(uuid.uuid4())
    assert caught.value.code == "session_not_found"


# --- requests


class Recorder:
    """A fake service that answers from a function and remembers every request."""

    def __init__(self, answer: Handler) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)

    def body(self, index: int = -1) -> Any:
        content = self.requests[index].content
        return json.loads(content) if content else None


def test_api_key_is_sent_as_x_api_key() -> None:
    fake = Recorder(lambda request: httpx.Response(200, json=user_json()))
    with sync_client(fake, api_key="csk_secret") as client:
        client.me()
    assert fake.requests[0].headers["X-API-Key"] == "csk_secret"
    assert "Authorization" not in fake.requests[0].headers


def test_login_sends_the_password_form_and_keeps_the_tokens() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/auth/token":
            return httpx.Response(200, json=tokens_json(1))
        return httpx.Response(200, json=user_json())

    fake = Recorder(answer)
    with sync_client(fake, api_key="csk_secret") as client:
        tokens = client.login("ada@example.com", "pw")
        client.me()
    login, me = fake.requests
    assert login.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert login.content == b"username=ada%40example.com&password=pw"
    assert "Authorization" not in login.headers and "X-API-Key" not in login.headers
    assert tokens.access_token == "access-1" and client.refresh_token == "refresh-1"
    assert me.headers["Authorization"] == "Bearer access-1"  # the token wins over the key
    assert "X-API-Key" not in me.headers


def test_register_does_not_send_credentials() -> None:
    fake = Recorder(lambda request: httpx.Response(201, json=user_json()))
    with sync_client(fake, api_key="csk_secret") as client:
        client.register("ada@example.com", "long password", display_name="Ada")
    assert fake.body() == {
        "email": "ada@example.com",
        "password": "long password",
        "display_name": "Ada",
    }
    assert "X-API-Key" not in fake.requests[0].headers


def test_create_session_body_and_idempotency_key() -> None:
    session_id = uuid.uuid4()
    fake = Recorder(lambda request: httpx.Response(201, json=session_json(id=str(session_id))))
    with sync_client(fake, api_key="csk_k") as client:
        created = client.create_session(
            title="Fix it",
            workspace={"repo": "github.com/acme/api", "branch": "main"},
            id=session_id,
            idempotency_key="retry-1",
        )
        client.create_session()
    assert created.id == session_id
    assert fake.requests[0].headers["Idempotency-Key"] == "retry-1"
    assert fake.body(0) == {
        "id": str(session_id),
        "title": "Fix it",
        "workspace": {"repo": "github.com/acme/api", "branch": "main"},
    }
    assert fake.body(1) == {}
    assert "Idempotency-Key" not in fake.requests[1].headers


def test_update_session_sends_only_the_fields_given() -> None:
    fake = Recorder(lambda request: httpx.Response(200, json=session_json()))
    with sync_client(fake, api_key="csk_k") as client:
        client.update_session("abc", title=None, status="ended")
        client.update_session("abc", is_favorite=True, title=UNSET)
        client.update_session("abc", workspace=models.Workspace(repo="r"))
    assert fake.requests[0].method == "PATCH"
    assert fake.requests[0].url.path == "/api/v1/sessions/abc"
    assert fake.body(0) == {"title": None, "status": "ended"}
    assert fake.body(1) == {"is_favorite": True}
    assert fake.body(2) == {"workspace": {"repo": "r"}}


def test_rename_and_favorite_use_the_alias_routes() -> None:
    fake = Recorder(lambda request: httpx.Response(200, json=session_json()))
    with sync_client(fake, api_key="csk_k") as client:
        client.rename_session("abc", "New title")
        client.set_favorite("abc", True)
        client.set_favorite("abc")
    rename, set_true, toggle = fake.requests
    assert (rename.method, rename.url.path, fake.body(0)) == (
        "PUT",
        "/api/v1/sessions/abc",
        {"title": "New title"},
    )
    assert (set_true.method, set_true.url.path) == ("PATCH", "/api/v1/sessions/abc/favorite")
    assert fake.body(1) == {"is_favorite": True}
    assert toggle.content == b""  # no body: toggle


def test_ids_are_one_path_segment() -> None:
    fake = Recorder(lambda request: problem(404, "session_not_found"))
    with sync_client(fake, api_key="csk_k") as client, pytest.raises(NotFoundError):
        client.get_session("../users/me")
    assert fake.requests[0].url.raw_path == b"/api/v1/sessions/..%2Fusers%2Fme"


def test_list_filters_become_query_parameters() -> None:
    fake = Recorder(
        lambda request: httpx.Response(
            200,
            json={
                "object": "list",
                "data": [],
                "first_id": None,
                "last_id": None,
                "has_more": False,
            },
        )
    )
    after = uuid.uuid4()
    with sync_client(fake, api_key="csk_k") as client:
        page = client.list_sessions(
            limit=5,
            after=after,
            favorite=True,
            status="active",
            q="bill",
            updated_after=datetime(2026, 1, 2, tzinfo=UTC),
        )
    assert page.data == [] and page.has_more is False
    assert dict(fake.requests[0].url.params) == {
        "limit": "5",
        "after": str(after),
        "favorite": "true",
        "status": "active",
        "q": "bill",
        "updated_after": "2026-01-02T00:00:00+00:00",
    }


def test_search_sends_the_query_and_filters_and_reads_the_hits() -> None:
    hit = {
        "object": "search_result",
        "session": {"id": str(uuid.uuid4()), "title": "CI"},
        "message": {"id": str(uuid.uuid4()), "seq": 3, "role": "user", "created_at": NOW},
        "snippet": "…why does test_billing fail",
        "highlights": [[10, 22]],
        "rank": 0.25,
    }
    fake = Recorder(
        lambda request: httpx.Response(
            200, json={"object": "list", "data": [hit], "has_more": True, "next_cursor": "c2"}
        )
    )
    session_id = uuid.uuid4()
    with sync_client(fake, api_key="csk_k") as client:
        page = client.search(
            'test_billing -"flaky"',
            limit=5,
            cursor="c1",
            session_id=session_id,
            role="user",
            favorite=False,
            after=date(2026, 11, 1),
            before=datetime(2026, 12, 1, tzinfo=UTC),
        )
    assert dict(fake.requests[0].url.params) == {
        "q": 'test_billing -"flaky"',
        "limit": "5",
        "cursor": "c1",
        "session_id": str(session_id),
        "role": "user",
        "favorite": "false",
        "after": "2026-11-01",
        "before": "2026-12-01T00:00:00+00:00",
    }
    assert fake.requests[0].url.path == "/api/v1/search"
    assert page.next_cursor == "c2" and page.has_more
    [result] = page.data
    assert result.message is not None and result.message.seq == 3
    assert result.matches == ["test_billing"]


def pages_of(items: list[dict[str, Any]], size: int) -> Handler:
    """A fake list route that pages `items` by `after`, like the service."""

    def answer(request: httpx.Request) -> httpx.Response:
        after = request.url.params.get("after")
        limit = int(request.url.params["limit"])
        ids = [item["id"] for item in items]
        start = ids.index(after) + 1 if after else 0
        data = items[start : start + min(limit, size)]
        return httpx.Response(
            200,
            json={
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": start + len(data) < len(items),
            },
        )

    return answer


def test_iter_sessions_walks_every_page() -> None:
    items = [session_json(title=f"s{i}") for i in range(5)]
    fake = Recorder(pages_of(items, size=2))
    with sync_client(fake, api_key="csk_k") as client:
        walked = client.iter_sessions(favorite=True, page_size=2)
        assert fake.requests == []  # lazy: nothing is fetched before the first item is asked for
        titles = [item.title for item in walked]
    assert titles == ["s0", "s1", "s2", "s3", "s4"]
    assert [request.url.params.get("after") for request in fake.requests] == [
        None,
        items[1]["id"],
        items[3]["id"],
    ]
    assert all(request.url.params["favorite"] == "true" for request in fake.requests)


async def test_async_iter_sessions_walks_every_page() -> None:
    items = [session_json(title=f"s{i}") for i in range(3)]
    fake = Recorder(pages_of(items, size=2))
    async with async_client(fake, api_key="csk_k") as client:
        titles = [item.title async for item in client.iter_sessions(page_size=2)]
    assert titles == ["s0", "s1", "s2"]
    assert len(fake.requests) == 2


def test_iter_sessions_follows_the_next_cursor_where_the_list_gives_one() -> None:
    items = [session_json(title=f"s{i}") for i in range(3)]
    by_after = pages_of(items, size=2)

    def with_cursor(request: httpx.Request) -> httpx.Response:
        # The same pages, each with a cursor that names the place it ends.
        cursor = request.url.params.get("cursor")
        params = dict(request.url.params)
        if cursor is not None:
            params["after"] = cursor.removeprefix("place-")
        answer = by_after(httpx.Request("GET", request.url.copy_with(params=params)))
        page = answer.json()
        page["next_cursor"] = f"place-{page['last_id']}" if page["has_more"] else None
        return httpx.Response(200, json=page)

    fake = Recorder(with_cursor)
    with sync_client(fake, api_key="csk_k") as client:
        titles = [item.title for item in client.iter_sessions(page_size=2)]
    assert titles == ["s0", "s1", "s2"]
    assert [dict(request.url.params) for request in fake.requests] == [
        {"limit": "2"},
        {"limit": "2", "cursor": f"place-{items[1]['id']}"},
    ]


def test_ready_reads_the_report_on_503() -> None:
    report = {"status": "unavailable", "database": "migrations_pending", "cache": "ok"}
    with sync_client(lambda request: httpx.Response(503, json=report)) as client:
        readiness = client.ready()
    assert readiness.ready is False and readiness.database == "migrations_pending"


def test_ready_raises_when_503_is_not_a_report() -> None:
    with (
        sync_client(lambda request: httpx.Response(503, text="upstream down")) as client,
        pytest.raises(ServerError),
    ):
        client.ready()


def test_request_is_the_general_way_in() -> None:
    fake = Recorder(lambda request: httpx.Response(200, json={"ok": True}))
    with sync_client(fake, api_key="csk_k") as client:
        response = client._request(
            "POST",
            "/api/v1/anything",
            json={"a": 1},
            params={"flag": True, "skip": None},
            headers={"Idempotency-Key": "k"},
        )
    assert response.json() == {"ok": True}
    sent = fake.requests[0]
    assert (sent.url.path, dict(sent.url.params)) == ("/api/v1/anything", {"flag": "true"})
    assert sent.headers["Idempotency-Key"] == "k" and sent.headers["X-API-Key"] == "csk_k"


def test_stream_hands_over_the_unread_answer_or_raises() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("missing"):
            return problem(404, "message_not_found")
        return httpx.Response(200, content=b"event: delta\ndata: {}\n\n")

    with sync_client(answer, api_key="csk_k") as client:
        ok = Call("GET", "/api/v1/stream", parse=no_content)
        with client._stream(ok) as response:
            assert list(response.iter_lines()) == ["event: delta", "data: {}", ""]
        missing = Call("GET", "/api/v1/missing", parse=no_content)
        with pytest.raises(NotFoundError), client._stream(missing):
            pass


# --- the access token refreshes itself once


class TokenService:
    """Accepts only the newest access token; hands out a new pair per refresh."""

    def __init__(self, *, refresh_works: bool = True) -> None:
        self.current = 1
        self.refresh_works = refresh_works
        self.refreshes = 0
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/api/v1/auth/refresh":
            self.refreshes += 1
            token = json.loads(request.content)["refresh_token"]
            if not self.refresh_works or token != f"refresh-{self.current}":
                return problem(401, "unauthorized", "Invalid refresh token")
            self.current += 1
            return httpx.Response(200, json=tokens_json(self.current))
        if request.headers.get("Authorization") != f"Bearer access-{self.current}":
            return problem(401, "unauthorized", "Token expired")
        return httpx.Response(200, json=user_json())


def test_a_401_refreshes_the_tokens_and_retries_once() -> None:
    service = TokenService()
    service.current = 2  # the client's access-1 has expired
    with sync_client(service, access_token="access-1", refresh_token="refresh-2") as client:
        client.me()
        assert (client.access_token, client.refresh_token) == ("access-3", "refresh-3")
    assert [request.url.path for request in service.requests] == [
        "/api/v1/users/me",
        "/api/v1/auth/refresh",
        "/api/v1/users/me",
    ]


def test_a_refused_refresh_forgets_the_tokens_and_raises() -> None:
    service = TokenService(refresh_works=False)
    service.current = 2
    with (
        sync_client(service, access_token="access-1", refresh_token="refresh-1") as client,
        pytest.raises(UnauthorizedError) as caught,
    ):
        client.me()
        assert client.access_token is None and client.refresh_token is None
    assert caught.value.detail == "Invalid refresh token"
    assert service.refreshes == 1


def test_no_refresh_without_a_refresh_token_or_with_an_api_key() -> None:
    service = TokenService()
    service.current = 2
    with sync_client(service, access_token="access-1") as client, pytest.raises(UnauthorizedError):
        client.me()
    with (
        sync_client(service, api_key="csk_k", refresh_token="refresh-2") as client,
        pytest.raises(UnauthorizedError),
    ):
        client.me()
    assert service.refreshes == 0


def test_a_second_401_after_refreshing_is_raised() -> None:
    def always_401(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/auth/refresh":
            return httpx.Response(200, json=tokens_json(9))
        return problem(401, "unauthorized")

    fake = Recorder(always_401)
    with (
        sync_client(fake, access_token="a", refresh_token="r") as client,
        pytest.raises(UnauthorizedError),
    ):
        client.me()
    assert len(fake.requests) == 3  # request, refresh, one retry: never a loop


async def test_concurrent_401s_refresh_only_once() -> None:
    # Refresh tokens are single use: a second refresh with the same token would revoke the login.
    service = TokenService()
    service.current = 2
    async with async_client(service, access_token="access-1", refresh_token="refresh-2") as client:
        await asyncio.gather(*(client.me() for _ in range(5)))
        assert client.access_token == "access-3"
    assert service.refreshes == 1


def test_logout_and_delete_me_forget_the_tokens() -> None:
    fake = Recorder(lambda request: httpx.Response(204))
    with sync_client(fake, access_token="a", refresh_token="r") as client:
        client.logout()
        assert client.access_token is None and client.refresh_token is None
        assert fake.body() == {"refresh_token": "r"}
        client.set_tokens(models.TokenPair(access_token="a2", refresh_token="r2", expires_in=1))
        client.delete_me()
        assert client.access_token is None
    with sync_client(fake) as client, pytest.raises(ValueError, match="no refresh token"):
        client.refresh()


# --- the client's models follow the server's read schemas


def _field_names(model: type[BaseModel]) -> set[str]:
    return set(model.model_fields)


def test_client_models_have_the_fields_of_the_server_schemas() -> None:
    from chat_store.api import health
    from chat_store.schemas import api_keys, chat, chat_sessions, common, messages, search, users

    pairs: list[tuple[type[BaseModel], type[BaseModel]]] = [
        (models.User, users.UserRead),
        (models.TokenPair, users.TokenPair),
        (models.ApiKey, api_keys.ApiKeyRead),
        (models.ApiKeyCreated, api_keys.ApiKeyCreated),
        (models.ChatSession, chat_sessions.ChatSessionRead),
        (models.Workspace, chat_sessions.Workspace),
        # The client's one page model reads every list; the session list's is the widest.
        (models.Page, chat_sessions.ChatSessionPage),
        (models.Deleted, common.Deleted),
        (models.Health, health.Health),
        (models.Readiness, health.Readiness),
        (models.ClaimResult, users.ClaimResult),
        (models.Message, messages.MessageRead),
        (models.MessageWithLength, messages.MessageWithLength),
        (models.ResumePoint, messages.ResumePoint),
        (models.ContextWindow, messages.ContextWindow),
        (models.ChatTurn, chat.ChatTurn),
        (models.SearchSession, search.SearchSession),
        (models.SearchMessage, search.SearchMessage),
        (models.SearchResult, search.SearchResult),
        (models.SearchPage, search.SearchPage),
    ]
    for client_model, server_schema in pairs:
        assert _field_names(client_model) == _field_names(server_schema), client_model
    assert _field_names(common.Page) | {"next_cursor"} == _field_names(models.Page)


def test_sse_parser_reads_events_ids_comments_and_multiline_data() -> None:
    from chat_store.client._follow import ServerSentEvent, parse_events

    lines = [
        ": ping",
        "id: 5",
        "event: delta",
        'data: {"delta":"Hello","offset":5}',
        "",
        "",
        "event: done",
        "data: line one",
        "data: line two",
        "",
    ]
    assert list(parse_events(lines)) == [
        ServerSentEvent("delta", '{"delta":"Hello","offset":5}', "5"),
        ServerSentEvent("done", "line one\nline two", "5"),
    ]


def test_sse_lines_end_at_cr_lf_and_crlf_only_across_chunks() -> None:
    from chat_store.client._follow import sse_lines

    chunks = ["id: 1\r", "\ndata: a\u2028b\u2029c\x85d\n", "\nda", "ta: e\rdata: f\r\n", "\r\nx"]
    assert list(sse_lines(chunks)) == [
        "id: 1",
        "data: a\u2028b\u2029c\x85d",  # one line: JSON may hold these as they are
        "",
        "data: e",
        "data: f",
        "",
        "x",
    ]


async def test_sse_lines_async_splits_as_the_sync_one() -> None:
    from chat_store.client._follow import sse_lines, sse_lines_async

    chunks = ["a\r", "\nb\u2028\n", "\r", "c"]

    async def arriving() -> Any:
        for chunk in chunks:
            yield chunk

    assert [line async for line in sse_lines_async(arriving())] == list(sse_lines(chunks))


def test_a_chat_body_holds_the_turns_tool_fields_given() -> None:
    tools = [{"type": "function", "function": {"name": "read_file"}}]
    choice = {"type": "function", "function": {"name": "read_file"}}

    given = chat_body(
        "Why?", stream=False, tools=tools, tool_choice=choice, parallel_tool_calls=False
    )
    left_out = chat_body(None, stream=True, tools=tools, idempotency_key="k")

    assert given == {
        "content": "Why?",
        "tools": tools,
        "tool_choice": choice,
        "parallel_tool_calls": False,
        "stream": False,
    }
    assert left_out == {"tools": tools, "stream": True}


def test_a_turn_waited_for_outwaits_the_servers_time_limit() -> None:
    """The service answers a turn it has not finished with 202 at REQUEST_TIMEOUT_SECONDS (30
    by default, the client's own timeout): send_chat waits 30 s more, other calls do not."""
    timeouts: dict[str, Any] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        timeouts[request.url.path] = request.extensions["timeout"]
        if request.url.path.endswith("/chat"):
            return httpx.Response(500)
        return httpx.Response(200, json=session_json())

    with sync_client(handler, api_key="csk_k", timeout=20.0) as client:
        with pytest.raises(ServerError):
            client.send_chat(uuid.uuid4(), "Why?")
        client.get_session(uuid.uuid4())

    [chat] = [value for path, value in timeouts.items() if path.endswith("/chat")]
    [other] = [value for path, value in timeouts.items() if not path.endswith("/chat")]
    assert chat["read"] == 50.0 and chat["connect"] == 20.0
    assert other["read"] == 20.0


def test_a_follower_waits_as_long_as_the_service_asked_before_reconnecting() -> None:
    follower: Follower[object] = Follower({"retry_delay": 0.5})
    busy = ServerError(503, "service_unavailable", "starting")
    busy.retry_after = 3.0

    assert follower.delay_after(busy) == 3.0
    busy.retry_after = 3600.0  # a proxy's: a minute at most
    assert follower.delay_after(busy) == 60.0
    assert follower.delay_after(ServerError(503, "service_unavailable", "starting")) == 1.5
    with pytest.raises(ValidationError):
        follower.delay_after(ValidationError(422, "validation_error", "no"))


def test_a_reconnect_across_a_shortened_text_reads_again_from_0_as_a_reset() -> None:
    """The connection drops at offset 9; meanwhile the writer replaced the text with a shorter
    one, so offset 9 is refused (409 offset_mismatch): the follower reads from 0, and what it
    reads first stands in place of the text so far."""
    asked: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("Last-Event-ID") or request.url.params.get("offset"))
        if len(asked) == 1:  # ends without `done`: a dropped connection
            body = 'id: 9\nevent: delta\ndata: {"delta": "Hello wor", "offset": 9}\n\n'
        elif len(asked) == 2:
            return problem(409, "offset_mismatch", "offset 9 is beyond the text", length=2)
        else:
            body = (
                'id: 2\nevent: delta\ndata: {"delta": "Hi", "offset": 2}\n\n'
                'id: 2\nevent: done\ndata: {"status": "complete", "error_message": null,'
                ' "length": 2}\n\n'
            )
        return httpx.Response(200, text=body, headers={"Content-Type": "text/event-stream"})

    with sync_client(handler) as client:
        items = list(client.follow(uuid.uuid4(), uuid.uuid4(), retry_delay=0))

    assert items == [
        StreamDelta(delta="Hello wor", offset=9),
        StreamReset(text="Hi", offset=2),
        StreamDone(status="complete", error_message=None, length=2),
    ]
    assert [offset in (None, "0") for offset in asked] == [True, False, True]
