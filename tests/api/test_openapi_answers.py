"""What the OpenAPI document says an operation answers: the error statuses and codes it lists
(each a problem+json example built from the error classes), request examples, and that real
error answers carry a code the document lists for their operation."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from fastapi import FastAPI

from chat_store.api.problems import PROBLEM_CONTENT_TYPE
from chat_store.errors import AppError
from chat_store.schemas.chat import ChatTurnCreate
from chat_store.services.generation import errors as generation_errors
from tests.factories import API, Factory

HTTP_METHODS = {"get", "put", "post", "delete", "patch"}


def error_codes() -> dict[str, set[int]]:
    """Every code an error class answers with, and its statuses."""
    assert generation_errors  # its classes are AppErrors too
    codes: dict[str, set[int]] = {}
    pending: list[type[AppError]] = [AppError]
    while pending:
        cls = pending.pop()
        codes.setdefault(cls.code, set()).add(cls.status)
        pending.extend(cls.__subclasses__())
    return codes


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


def listed_codes(document: dict[str, Any], method: str, path: str) -> dict[str, set[str]]:
    """The codes the document lists for an operation, by status."""
    answers = document["paths"][path][method]["responses"]
    return {
        status: set(answer["content"][PROBLEM_CONTENT_TYPE]["examples"])
        for status, answer in answers.items()
        if status.startswith(("4", "5")) and PROBLEM_CONTENT_TYPE in answer.get("content", {})
    }


def test_the_delta_route_lists_offset_mismatch_and_no_other_routes_conflicts(app: FastAPI) -> None:
    document = app.openapi()

    codes = listed_codes(
        document, "post", f"{API}/sessions/{{session_id}}/messages/{{message_id}}/append"
    )

    assert codes["409"] == {"offset_mismatch", "invalid_transition"}
    assert codes["404"] == {"session_not_found", "message_not_found"}
    assert codes["401"] == {"unauthorized"}
    assert codes["413"] == {"payload_too_large"}
    assert codes["422"] == {"validation_error"}
    # A session create's conflicts, an account's: not the delta route's.
    assert not {"session_exists", "email_taken"} & codes["409"]
    assert listed_codes(document, "post", f"{API}/sessions")["409"] == {
        "session_exists",
        "idempotency_key_reused",
    }
    assert "409" not in listed_codes(document, "get", f"{API}/sessions/{{session_id}}")


def test_every_error_answer_is_problem_json_with_an_example_per_code(app: FastAPI) -> None:
    document = app.openapi()
    known = error_codes()
    problem = document["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail", "code"} <= set(problem["required"])

    for method, path, operation in operations(document):
        if not path.startswith(API) and path != "/metrics":
            continue  # readiness answers its own status document, not a problem
        for status, answer in operation["responses"].items():
            if not status.startswith(("4", "5")):
                continue
            where = (method, path, status)
            assert list(answer["content"]) == [PROBLEM_CONTENT_TYPE], where
            media = answer["content"][PROBLEM_CONTENT_TYPE]
            assert media["schema"] == {"$ref": "#/components/schemas/Problem"}, where
            assert media["examples"], where
            for code, example in media["examples"].items():
                body = example["value"]
                assert code in known, (where, code)
                assert int(status) in known[code], (where, code)
                assert body["code"] == code
                assert body["status"] == int(status)
                assert body["type"] == f"urn:chat-store:problem:{code}"
                assert body["title"] and body["detail"], where
                assert body["instance"] == path
                assert f"`{code}`" in answer["description"], where


def test_generic_answers_follow_the_operation(app: FastAPI) -> None:
    document = app.openapi()

    for method, path, operation in operations(document):
        statuses = set(operation["responses"])
        where = (method, path)
        if operation.get("security"):
            assert "401" in statuses, where
        if "requestBody" in operation:
            assert {"413", "422"} <= statuses, where
            if "application/json" in operation["requestBody"]["content"]:
                assert "415" in statuses, where
    # No caller, no input: nothing to refuse with 401 or 422.
    assert set(document["paths"]["/health"]["get"]["responses"]) == {"200"}
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_every_operation_with_a_body_has_an_example(app: FastAPI) -> None:
    document = app.openapi()
    schemas = document["components"]["schemas"]
    bodies = 0

    for method, path, operation in operations(document):
        if "requestBody" not in operation:
            continue
        bodies += 1
        for media_type, media in operation["requestBody"]["content"].items():
            schema = media["schema"]
            if "$ref" in schema:
                schema = schemas[schema["$ref"].rsplit("/", 1)[-1]]
            properties = schema.get("properties", {}).values()
            has_example = (
                "example" in media
                or "examples" in media
                or "examples" in schema
                or (properties and all("examples" in item for item in properties))
            )
            assert has_example, (method, path, media_type)
    assert bodies >= 15


async def test_swagger_ui_hides_the_unused_client_fields(client: httpx.AsyncClient) -> None:
    page = (await client.get("/docs")).text

    for field in ("client_id_password", "client_secret_password", "password_type"):
        assert f'label[for="{field}"]' in page
    assert "display: none" in page


async def test_the_token_route_takes_swagger_uis_empty_client_credentials(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    # Swagger UI's password flow sends the (hidden, empty) client as Basic credentials.
    await factory.account(email="swagger@example.com", password="correct horse battery")

    response = await client.post(
        f"{API}/auth/token",
        data={"username": "swagger@example.com", "password": "correct horse battery"},
        headers={"Authorization": "Basic Og=="},
    )

    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "bearer"


async def test_redoc_logo_is_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/redoc/logo-mini.svg")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in response.content


async def assert_listed(
    app: FastAPI, method: str, path: str, response: httpx.Response, code: str
) -> None:
    """The answer is problem+json with `code`, and the document lists it for the operation."""
    assert response.headers["content-type"].startswith(PROBLEM_CONTENT_TYPE), response.text
    body = response.json()
    assert body["code"] == code, body
    listed = listed_codes(app.openapi(), method, path)
    assert code in listed.get(str(response.status_code), set()), (listed, body)


async def test_real_errors_carry_a_listed_code(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    answer = await factory.message(account, session["id"], role="assistant", status="pending")
    delta_path = f"{API}/sessions/{{session_id}}/messages/{{message_id}}/append"
    delta_url = f"{API}/sessions/{session['id']}/messages/{answer['id']}/append"

    done = await factory.message(account, session["id"], role="assistant", content="Done.")
    finished = await client.post(
        f"{API}/sessions/{session['id']}/messages/{done['id']}/append",
        json={"delta": " more", "offset": 5},
        headers=account.headers,
    )
    await assert_listed(app, "post", delta_path, finished, "invalid_transition")

    wrong_offset = await client.post(
        delta_url, json={"delta": "Hello", "offset": 7}, headers=account.headers
    )
    await assert_listed(app, "post", delta_path, wrong_offset, "offset_mismatch")
    assert wrong_offset.json()["length"] == 0

    anonymous = await client.post(delta_url, json={"delta": "Hello", "offset": 0})
    await assert_listed(app, "post", delta_path, anonymous, "unauthorized")

    malformed = await client.post(
        delta_url,
        content=b"{not json",
        headers={**account.headers, "Content-Type": "application/json"},
    )
    await assert_listed(app, "post", delta_path, malformed, "validation_error")

    taken = await client.post(
        f"{API}/sessions", json={"id": session["id"]}, headers=account.headers
    )
    await assert_listed(app, "post", f"{API}/sessions", taken, "session_exists")

    missing = await client.get(f"{API}/sessions/{uuid.uuid4()}", headers=account.headers)
    await assert_listed(app, "get", f"{API}/sessions/{{session_id}}", missing, "session_not_found")

    messages_path = f"{API}/sessions/{{session_id}}/messages"
    unanswerable = await client.post(
        f"{API}/sessions/{session['id']}/messages",
        json={"role": "tool", "content": "x", "tool_call_id": "call_zz"},
        headers=account.headers,
    )
    await assert_listed(app, "post", messages_path, unanswerable, "unknown_tool_call")

    as_text = await client.post(
        f"{API}/sessions",
        content=b"{}",
        headers={**account.headers, "Content-Type": "text/plain"},
    )
    await assert_listed(app, "post", f"{API}/sessions", as_text, "unsupported_media_type")

    nothing_open = await client.post(
        f"{API}/sessions/{(await factory.chat_session(account))['id']}/resume",
        headers=account.headers,
    )
    await assert_listed(
        app, "post", f"{API}/sessions/{{session_id}}/resume", nothing_open, "nothing_to_resume"
    )


def test_the_chat_routes_request_examples_are_turns_it_takes(app: FastAPI) -> None:
    document = app.openapi()
    operation = document["paths"][f"{API}/sessions/{{session_id}}/chat"]["post"]
    examples = operation["requestBody"]["content"]["application/json"]["examples"]

    assert {"tools", "tool_choice", "tool_results"} <= examples.keys()
    for name, example in examples.items():
        turn = ChatTurnCreate.model_validate(example["value"])
        assert turn.model_dump(exclude_unset=True) == example["value"], name


def test_the_chat_route_lists_what_a_turn_without_content_is_refused_with(app: FastAPI) -> None:
    document = app.openapi()
    conflicts = document["paths"][f"{API}/sessions/{{session_id}}/chat"]["post"]["responses"]["409"]
    examples = conflicts["content"]["application/problem+json"]["examples"]
    assert {"nothing_to_answer", "tool_results_missing"} <= set(examples)
    assert examples["tool_results_missing"]["value"]["tool_call_ids"] == ["call_b"]
