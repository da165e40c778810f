"""The OpenAPI document and the self-hosted Swagger UI and ReDoc pages."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.factories import API

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
