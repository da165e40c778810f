"""The direct path: the busiest routes answer well-formed requests without FastAPI's
per-request dependency solving.

FastAPI solves a route's dependency tree through its general machinery (exit stacks, caches
keyed by scopes, threadpool checks) and validates the returned model once more on every
request: about a third of an append's CPU (docs/benchmarks.md). A route whose endpoint is
marked `@direct` is served, when the request is well formed, by a lean solver of the same
declaration: the endpoint's signature and its dependencies' are the route's only statement of
its inputs.

1. Read: the path, query and header parameters and the JSON body are validated by the fields
   FastAPI built from those signatures, with FastAPI's own functions. Anything they refuse, a
   body that is not `application/json` or does not parse, is handed to FastAPI's handler before
   anything has run: every error answer, its order (authentication before validation) and its
   wording stay FastAPI's.
2. Solve: the dependencies run in the order FastAPI runs them, each once per request; the
   request's session (get_db) is a RequestSession around the whole request, as the dependency
   opens it.
3. Answer: the endpoint's value is serialised by the route's response field, as FastAPI does,
   but not validated again (it is an instance of the response model), with the status code and
   headers the endpoint set on its Response parameter.

With dependency overrides set (tests, an embedding app) FastAPI serves every request, so that
the overrides apply as documented.
"""

from __future__ import annotations

import copy
import inspect
import json
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from fastapi import Request, Response, params
from fastapi import routing as fastapi_routing
from fastapi._compat import ModelField
from fastapi._compat.shared import field_annotation_is_sequence
from fastapi.datastructures import DefaultPlaceholder
from fastapi.dependencies import utils as fastapi_utils
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import request_params_to_args
from fastapi.routing import APIRoute
from fastapi.utils import is_body_allowed_for_status_code
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import ClientDisconnect

from chat_store.api.deps import RequestSession, get_db

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])

_DIRECT_ATTRIBUTE = "__chat_store_direct__"


def direct(endpoint: Endpoint) -> Endpoint:
    """Mark an endpoint as served by the direct path when the request is well formed. Put it
    below the route decorator: the route is built when that decorator runs."""
    setattr(endpoint, _DIRECT_ATTRIBUTE, True)
    return endpoint


class DirectRoute(APIRoute):
    """An APIRoute that serves its `@direct` endpoint's well-formed requests itself."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        fastapi_handler = super().get_route_handler()
        if not getattr(self.endpoint, _DIRECT_ATTRIBUTE, False):
            return fastapi_handler
        plan = _Plan.of(_as_included(self))

        async def serve(request: Request) -> Response:
            if not request.app.dependency_overrides:
                read = await plan.read(request)
                if read is not None:
                    return await plan.answer(request, read)
            return await fastapi_handler(request)

        return serve


def _as_included(route: APIRoute) -> APIRoute:
    """The route as the router including it has it (its dependencies added): FastAPI builds a
    handler for each inclusion of a route, and APIRoute.get_route_handler reads which one from
    this context variable, as done here."""
    context = fastapi_routing._effective_route_context_var.get()
    if context is not None and context.original_route is route:
        return cast(APIRoute, context)
    return route


_SOURCES: dict[str, Callable[[Request], Mapping[str, Any]]] = {
    "path": lambda request: request.path_params,
    "query": lambda request: request.query_params,
    "header": lambda request: request.headers,
    "cookie": lambda request: request.cookies,
}


@dataclass(frozen=True, slots=True)
class _Param:
    """One parameter, read as FastAPI's request_params_to_args reads a single value under one
    name (what it works out from the field on every request is worked out once, here)."""

    field: ModelField
    source: Callable[[Request], Mapping[str, Any]]
    key: str
    loc: tuple[str, str]

    def read(self, request: Request, values: dict[str, Any]) -> bool:
        value = self.source(request).get(self.key)
        info = self.field.field_info
        if value is None:
            if info.is_required():
                return False
            value = copy.deepcopy(self.field.default)
            if not info.validate_default:
                values[self.field.name] = value
                return True
        validated, errors = self.field.validate(value, values, loc=self.loc)
        values[self.field.name] = validated
        return not errors


@dataclass(frozen=True, slots=True)
class _Params:
    """Parameters read another way (a model of them, several names, a list): read by
    FastAPI's own function."""

    fields: list[ModelField]
    source: Callable[[Request], Mapping[str, Any]]

    def read(self, request: Request, values: dict[str, Any]) -> bool:
        found, errors = request_params_to_args(self.fields, self.source(request))
        values.update(found)
        return not errors


def _readers(fields: list[ModelField], location: str) -> list[_Param | _Params]:
    source = _SOURCES[location]
    readers: list[_Param | _Params] = []
    others: list[ModelField] = []
    for param in fields:
        aliases = fastapi_utils._get_param_aliases(param)
        if (
            fastapi_utils._get_param_model(param) is None
            and not fastapi_utils._is_json_field(param)
            and not field_annotation_is_sequence(param.field_info.annotation)
            and len(aliases) == 1
        ):
            key = aliases[0][1]
            readers.append(_Param(param, source, key, (location, key)))
        else:
            others.append(param)
    if others:
        readers.append(_Params(others, source))
    return readers


@dataclass(frozen=True, slots=True)
class _Step:
    """One call of the solve: a dependency, or (last) the endpoint."""

    call: Callable[..., Any]  # an async function, or get_db
    dependant: Dependant
    # (parameter name, or None for a dependency run for its effect; the step it takes from)
    arguments: tuple[tuple[str | None, int], ...]
    readers: tuple[_Param | _Params, ...]


@dataclass(frozen=True, slots=True)
class _Plan:
    steps: tuple[_Step, ...]
    # The JSON body: one model, validated whole (not embedded in an object of several).
    body: ModelField | None
    opens_session: bool
    route: APIRoute
    response_type: type[BaseModel] | None = field(default=None)

    @classmethod
    def of(cls, route: APIRoute) -> _Plan:
        """The route's dependency tree as the calls FastAPI makes, in its order, each call
        once (FastAPI's cache). Refused when the route needs what the direct path does not do."""
        if not isinstance(route.response_class, DefaultPlaceholder) or any(
            (
                route.response_model_include,
                route.response_model_exclude,
                route.response_model_exclude_unset,
                route.response_model_exclude_defaults,
                route.response_model_exclude_none,
                not route.response_model_by_alias,
            )
        ):
            raise TypeError(f"{route.path}: the direct path writes the default JSON answer only")
        steps: list[_Step] = []
        seen: dict[Callable[..., Any], int] = {}
        body_fields: list[ModelField] = []

        def add(dependant: Dependant) -> int:
            call = dependant.call
            if call is None or dependant.background_tasks_param_name:
                raise TypeError(f"{route.path}: not a dependency the direct path solves")
            if dependant.security_scopes_param_name or dependant.websocket_param_name:
                raise TypeError(f"{route.path}: not a dependency the direct path solves")
            if dependant.use_cache and call in seen:
                return seen[call]
            arguments = tuple((sub.name, add(sub)) for sub in dependant.dependencies)
            if call is not get_db and not inspect.iscoroutinefunction(call):
                raise TypeError(f"{route.path}: {call!r} is not an async function")
            body_fields.extend(dependant.body_params)
            readers = [
                reader
                for fields, location in (
                    (dependant.path_params, "path"),
                    (dependant.query_params, "query"),
                    (dependant.header_params, "header"),
                    (dependant.cookie_params, "cookie"),
                )
                for reader in _readers(fields, location)
            ]
            steps.append(_Step(call, dependant, arguments, tuple(readers)))
            seen[call] = len(steps) - 1
            return len(steps) - 1

        add(route.dependant)
        if len(body_fields) > 1 or route._embed_body_fields:
            raise TypeError(f"{route.path}: the direct path reads one body model")
        if body_fields and isinstance(body_fields[0].field_info, params.Form):
            raise TypeError(f"{route.path}: the direct path reads JSON bodies")
        response_type = route.response_model
        return cls(
            steps=tuple(steps),
            body=body_fields[0] if body_fields else None,
            opens_session=any(step.call is get_db for step in steps),
            route=route,
            response_type=response_type if isinstance(response_type, type) else None,
        )

    async def read(self, request: Request) -> list[dict[str, Any]] | None:
        """Each step's parameters, validated by the route's own fields; None when anything is
        not well formed (then FastAPI's handler serves the request)."""
        body: Any = None
        if self.body is not None:
            parsed = await _json_body(request)
            if parsed is None:
                return None
            try:
                # As request_body_to_args validates a body of one model.
                body, errors = self.body.validate(parsed, {}, loc=("body",))
            except RecursionError:  # nested beyond what the validators walk: FastAPI says
                return None
            if errors:
                return None
        read: list[dict[str, Any]] = []
        for step in self.steps:
            values: dict[str, Any] = {}
            for reader in step.readers:
                if not reader.read(request, values):
                    return None
            if step.dependant.body_params:
                values[step.dependant.body_params[0].name] = body
            read.append(values)
        return read

    async def answer(self, request: Request, read: list[dict[str, Any]]) -> Response:
        # The Response parameter, as FastAPI gives it: headers and a status to add.
        sub_response = Response()
        del sub_response.headers["content-length"]
        sub_response.status_code = None  # type: ignore[assignment]
        if self.opens_session:
            async with RequestSession(request) as db:
                value = await self._solve(request, read, sub_response, db)
        else:
            value = await self._solve(request, read, sub_response, None)
        response = value if isinstance(value, Response) else self._serialised(value, sub_response)
        response.headers.raw.extend(sub_response.headers.raw)
        return response

    async def _solve(
        self,
        request: Request,
        read: list[dict[str, Any]],
        sub_response: Response,
        db: AsyncSession | None,
    ) -> Any:
        results: list[Any] = []
        for step, values in zip(self.steps, read, strict=True):
            if step.call is get_db:
                results.append(db)
                continue
            for name, index in step.arguments:
                if name is not None:
                    values[name] = results[index]
            dependant = step.dependant
            if dependant.request_param_name:
                values[dependant.request_param_name] = request
            if dependant.http_connection_param_name:
                values[dependant.http_connection_param_name] = request
            if dependant.response_param_name:
                values[dependant.response_param_name] = sub_response
            results.append(await step.call(**values))
        return results[-1]

    def _serialised(self, value: Any, sub_response: Response) -> Response:
        route = self.route
        model_field = route.response_field
        if model_field is None:
            raise TypeError(f"{route.path}: the direct path answers with a response model")
        if self.response_type is None or not isinstance(value, self.response_type):
            value, errors = model_field.validate(value, {}, loc=("response",))
            if errors:
                raise TypeError(f"{route.path}: the endpoint's value is not its response model")
        content = model_field.serialize_json(value)
        status_code = sub_response.status_code or route.status_code or 200
        response = Response(content=content, media_type="application/json", status_code=status_code)
        if not is_body_allowed_for_status_code(response.status_code):
            response.body = b""
        return response


async def _json_body(request: Request) -> Any | None:
    """The body parsed as JSON, as FastAPI parses it; None for anything FastAPI should answer:
    another content type, an empty body, JSON that does not parse, a client gone mid-body."""
    content_type = request.headers.get("content-type", "")
    if content_type.partition(";")[0].strip().lower() != "application/json":
        return None
    try:
        raw = await request.body()  # kept on the request: FastAPI's handler reads it again
    except ClientDisconnect:
        return None  # FastAPI's handler answers it (400) as it would have
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        # Not JSON (JSONDecodeError and UnicodeDecodeError are ValueErrors), or nested beyond
        # the parser: FastAPI says which.
        return None
