"""Error answers as OpenAPI documents them: each operation lists the problems it can answer,
one example per code, built from the error classes themselves so that an example cannot drift
from the answer (api/errors.py renders the same error the same way)."""

from __future__ import annotations

import copy
from typing import Any

from chat_store.api.deps import CLIENT_ID_MAX_LENGTH
from chat_store.api.problems import PROBLEM_CONTENT_TYPE, problem_body
from chat_store.errors import (
    AppError,
    BodyTooLarge,
    RateLimited,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)
from chat_store.schemas.common import Problem

Responses = dict[int | str, dict[str, Any]]
# An error class whose constructor needs no argument, or an error made with telling ones.
ErrorSpec = type[AppError] | AppError

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def _example(error: AppError) -> dict[str, Any]:
    body = problem_body(
        status=error.status,
        code=error.code,
        title=error.title,
        detail=error.detail,
        instance="",  # the operation's path, filled in by document_problems
        **error.extra,
    )
    return {"summary": error.title, "value": body}


def _describe(examples: dict[str, dict[str, Any]]) -> str:
    return "; ".join(f"`{code}`: {example['summary']}" for code, example in examples.items())


def _add(responses: Responses, error: AppError) -> None:
    answer = responses.setdefault(
        error.status,
        {"content": {PROBLEM_CONTENT_TYPE: {"schema": dict(_PROBLEM_REF), "examples": {}}}},
    )
    examples = answer["content"][PROBLEM_CONTENT_TYPE]["examples"]
    examples.setdefault(error.code, _example(error))
    answer["description"] = _describe(examples)


def problems(*errors: ErrorSpec) -> Responses:
    """The error answers of an operation, for a route's `responses`: one per status, with an
    example per code. 401, 413, 422 and 429 are added where they apply (document_problems)."""
    responses: Responses = {}
    for error in errors:
        _add(responses, error if isinstance(error, AppError) else error())
    return responses


def _merge(operation: dict[str, Any], added: Responses) -> None:
    answers = operation.setdefault("responses", {})
    for status, answer in added.items():
        key = str(status)
        existing = answers.get(key)
        if existing is None or PROBLEM_CONTENT_TYPE not in existing.get("content", {}):
            # FastAPI's own 422 (HTTPValidationError, application/json) is not what is sent.
            answers[key] = copy.deepcopy(answer)
            continue
        examples = existing["content"][PROBLEM_CONTENT_TYPE]["examples"]
        for code, example in answer["content"][PROBLEM_CONTENT_TYPE]["examples"].items():
            examples.setdefault(code, copy.deepcopy(example))
        existing["description"] = _describe(examples)


# What pydantic says of a query, path or header value it cannot take, by the value's JSON type.
_PARSING = {
    "integer": (
        "int_parsing",
        "Input should be a valid integer, unable to parse string as an integer",
    ),
    "boolean": ("bool_parsing", "Input should be a valid boolean, unable to interpret input"),
    "number": (
        "float_parsing",
        "Input should be a valid number, unable to parse string as a number",
    ),
}


def _refusal(parameter: dict[str, Any]) -> tuple[str, str] | None:
    """What pydantic says of a value of this parameter it cannot take (type, message)."""
    schema = parameter.get("schema", {})
    schema = next((item for item in schema.get("anyOf", []) if item.get("type") != "null"), schema)
    if schema.get("format") == "uuid":
        msg = "Input should be a valid UUID, invalid length: expected length 32 for simple format"
        return "uuid_parsing", msg
    if schema.get("type") in _PARSING:
        return _PARSING[schema["type"]]
    if parameter.get("required"):
        return "missing", "Field required"
    if "maxLength" in schema:
        return "string_too_long", f"String should have at most {schema['maxLength']} characters"
    return None


def _invalid_input(operation: dict[str, Any]) -> ValidationFailed:
    """A 422 as the validation handler answers it, for this operation's input."""
    body = operation.get("requestBody", {}).get("content", {})
    if body and "application/json" not in body:  # a form: its fields are what is checked
        error = ValidationFailed("body: Field required", ["body"], msg="Field required")
        error.extra["errors"][0]["type"] = "missing"
        return error
    if body:
        error = ValidationFailed("The request body is not valid JSON", ["body"])
        error.extra["errors"] = [
            {"loc": ["body"], "msg": "JSON decode error", "type": "json_invalid"}
        ]
        return error
    for parameter in operation.get("parameters", []):
        if (refusal := _refusal(parameter)) is not None:
            kind, msg = refusal
            where, name = parameter["in"], parameter["name"]
            error = ValidationFailed(f"{where}.{name}: {msg}", [where, name], msg=msg)
            error.extra["errors"][0]["type"] = kind
            return error
    # Only the guest header is read (api/deps.get_principal).
    return ValidationFailed(
        f"X-Client-ID is longer than {CLIENT_ID_MAX_LENGTH} characters", ["header", "X-Client-ID"]
    )


def document_problems(
    path: str, operation: dict[str, Any], *, secured: bool, limited: bool, body_limit: int
) -> None:
    """Complete an operation's error answers with those every operation of its kind may give
    (credentials, input, body size, rate limits), and give each example the operation's path.
    The Problem schema itself is added by add_problem_schema."""
    generic: list[AppError] = []
    if secured:
        generic.append(Unauthorized())
    if secured or operation.get("parameters") or "requestBody" in operation:
        generic.append(_invalid_input(operation))
    else:
        operation.get("responses", {}).pop("422", None)
    if "requestBody" in operation:
        generic.append(BodyTooLarge(body_limit))
        if "application/json" in operation["requestBody"].get("content", {}):
            generic.append(UnsupportedMediaType("text/plain"))
    if limited:
        generic.append(RateLimited("Rate limit for requests exceeded; retry in 42 s"))
    _merge(operation, problems(*generic))
    answers = operation["responses"]
    operation["responses"] = {status: answers[status] for status in sorted(answers)}
    for status, answer in operation["responses"].items():
        problem = answer.get("content", {}).get(PROBLEM_CONTENT_TYPE)
        if problem is None or not status.startswith(("4", "5")):
            continue
        for example in problem.get("examples", {}).values():
            example["value"]["instance"] = path


def add_problem_schema(schema: dict[str, Any]) -> None:
    """The Problem schema every error answer refers to; FastAPI's validation error schemas go
    when no answer refers to them any more."""
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    if "#/components/schemas/HTTPValidationError" not in repr(schema["paths"]):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
