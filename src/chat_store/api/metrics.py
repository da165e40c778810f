from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from chat_store.api.deps import State
from chat_store.api.responses import problems
from chat_store.errors import NotFound, Unauthorized
from chat_store.security import constant_time_equals

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text."},
        **problems(
            Unauthorized("Metrics need the bearer token set in METRICS_TOKEN"),
            NotFound("No route for GET /metrics"),
        ),
    },
)
async def metrics(
    request: Request,
    state: State,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    """Prometheus metrics (off with METRICS_ENABLED=false; behind METRICS_TOKEN when set)."""
    settings = state.settings
    if not settings.metrics_enabled:
        raise NotFound(f"No route for GET {request.url.path}")
    if settings.metrics_token is not None:
        expected = f"Bearer {settings.metrics_token.get_secret_value()}"
        if authorization is None or not constant_time_equals(authorization, expected):
            raise Unauthorized("Metrics need the bearer token set in METRICS_TOKEN")
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
