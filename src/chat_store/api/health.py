from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from chat_store import __version__
from chat_store.api.deps import State
from chat_store.services import health as health_service

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str


class Readiness(BaseModel):
    status: Literal["ok", "unavailable"]
    database: Literal["ok", "unavailable", "migrations_pending"]
    cache: Literal["ok", "degraded"]


@router.get("/health")
async def health() -> Health:
    """Liveness: the process is up."""
    return Health(version=__version__)


@router.get(
    "/health/ready",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Database down or migrations pending."}},
)
async def readiness(state: State) -> JSONResponse:
    """Readiness: 200 when the database answers at the migration head (cache down is degraded)."""
    report = await health_service.readiness(state.engine, state.cache)
    body = Readiness(
        status="ok" if report.database == "ok" else "unavailable",
        database=report.database,
        cache=report.cache,
    )
    return JSONResponse(body.model_dump(), status_code=200 if body.status == "ok" else 503)
