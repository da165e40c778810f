"""The OpenAPI document and the self-hosted Swagger UI and ReDoc pages."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.factories import API, Factory

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
PUBLIC_OPERATIONS = {"register_user", "login_for_tokens", "refresh_tokens", "logout"}


async def openapi(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def api_operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        if path.startswith(API)
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


async def test_openapi_declares_both_ways_in(client: httpx.AsyncClient) -> None:
    schemes = (await openapi(client))["components"]["securitySchemes"]

    by_type = {scheme["type"]: scheme for scheme in schemes.values()}
    assert set(by_type) == {"oauth2", "apiKey"}
    assert by_type["oauth2"]["flows"]["password"]["tokenUrl"] == f"{API}/auth/token"
    assert (by_type["apiKey"]["in"], by_type["apiKey"]["name"]) == ("header", "X-API-Key")


async def test_every_api_operation_is_named_and_secured(client: httpx.AsyncClient) -> None:
    document = await openapi(client)
    schemes = set(document["components"]["securitySchemes"])
    operations = api_operations(document)
    assert len(operations) >= 15

    operation_ids = []
    for method, path, operation in operations:
        where = f"{method.upper()} {path}"
        assert operation.get("summary", "").strip(), where
        assert operation.get("description", "").strip(), f"{where} has no docstring"
        assert re.fullmatch(r"[a-z][a-z0-9_]*", operation.get("operationId", "")), where
        operation_ids.append(operation["operationId"])
        if operation["operationId"] in PUBLIC_OPERATIONS:
            assert "security" not in operation, where
        else:
            offered = {name for requirement in operation["security"] for name in requirement}
            assert offered == schemes, where
            assert "401" in operation["responses"], where
    assert len(operation_ids) == len(set(operation_ids)), "operationIds must be unique"
    assert set(operation_ids) >= PUBLIC_OPERATIONS


async def test_error_answers_are_documented_as_problem_json(client: httpx.AsyncClient) -> None:
    document = await openapi(client)

    for method, path, operation in api_operations(document):
        for status, answer in operation["responses"].items():
            if status.startswith(("4", "5")) and status != "422":
                assert "application/problem+json" in answer["content"], (method, path, status)


MEDIA_TYPE = re.compile(r"[a-z]+/[a-z0-9.+-]+")


async def test_every_content_key_is_a_media_type(client: httpx.AsyncClient) -> None:
    # OpenAPI keys a body's content by media type ("application/json", not "json"): a client
    # generator or a checker reads the key as the Content-Type to send or to expect.
    document = await openapi(client)

    for method, path, operation in api_operations(document):
        bodies = [("request", operation.get("requestBody", {}))]
        bodies += [(status, answer) for status, answer in operation["responses"].items()]
        for where, body in bodies:
            for key in body.get("content", {}):
                assert MEDIA_TYPE.fullmatch(key), (method, path, where, key)


@pytest.mark.parametrize(
    ("url", "export_format"),
    [
        ("/sessions/{session_id}/export", "json"),
        ("/sessions/{session_id}/export", "jsonl"),
        ("/sessions/{session_id}/export", "markdown"),
        ("/users/me/export", None),
    ],
)
async def test_exports_are_sent_as_the_document_declares(
    client: httpx.AsyncClient, factory: Factory, url: str, export_format: str | None
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    await factory.message(account, session["id"])
    declared = (await openapi(client))["paths"][API + url]["get"]["responses"]["200"]["content"]

    response = await client.get(
        API + url.format(session_id=session["id"]),
        params={"format": export_format} if export_format else None,
        headers=account.headers,
    )

    assert response.status_code == 200, response.text
    sent = response.headers["content-type"].split(";")[0]
    assert sent in declared, (sent, sorted(declared))
    if sent == "application/json":
        assert declared[sent]["schema"]["type"] == "object"
        assert isinstance(response.json(), dict)


def asset_urls(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_their_assets_from_the_app(
    client: httpx.AsyncClient, page: str
) -> None:
    response = await client.get(page)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    urls = asset_urls(html)
    assert any(url.endswith(".js") for url in urls), urls
    for url in urls:
        assert url.startswith("/static/docs/"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert asset.content, url
    assert "/openapi.json" in html
    for remote in ("http://", "https://", "//cdn", "cdn.jsdelivr", "unpkg.com", "fonts.googleapis"):
        assert remote not in html, remote


async def test_swagger_ui_oauth2_redirect_page(client: httpx.AsyncClient) -> None:
    docs = (await client.get("/docs")).text
    redirect = re.search(r"oauth2RedirectUrl: window\.location\.origin \+ '([^']+)'", docs)
    assert redirect is not None

    response = await client.get(redirect.group(1))

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
