"""Application factory: settings, lifespan resources, middleware, routers, error handlers."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import fastapi_standalone_docs
from fastapi import Depends, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.encoders import jsonable_encoder
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.staticfiles import StaticFiles
from sqlalchemy.ext.asyncio import AsyncEngine

from chat_store import __version__, search_index
from chat_store.api import (
    api_keys,
    archive,
    auth,
    chat,
    chat_sessions,
    export,
    health,
    imports,
    messages,
    ratelimits,
    search,
    streams,
    users,
)
from chat_store.api import metrics as metrics_api
from chat_store.api.deps import SECURITY_SCHEMES, get_principal
from chat_store.api.errors import install_error_handlers
from chat_store.api.middleware import (
    BodySizeLimitMiddleware,
    RequestContextMiddleware,
    RequestTimeoutMiddleware,
)
from chat_store.api.responses import add_problem_schema, document_problems
from chat_store.cache import Cache, create_cache
from chat_store.cache.bus import Bus, create_bus
from chat_store.cache.near import NearCache
from chat_store.db import (
    create_engine,
    create_read_sessionmaker,
    create_sessionmaker,
    create_snapshot_sessionmaker,
)
from chat_store.logging_setup import configure_logging
from chat_store.metrics import Metrics
from chat_store.ratelimit import RateLimiter
from chat_store.services import generation, hooks, maintenance
from chat_store.services.archive import Archiver, finish_deleting, restore_for_access
from chat_store.settings import Settings, get_settings
from chat_store.state import AppState
from chat_store.storage import ArchiveStore

logger = logging.getLogger(__name__)

_STARTUP_CHECK_SECONDS = 2.0  # the search language's check at start, before it gives up
_DELETIONS_SHUTDOWN_SECONDS = 5.0  # archive objects still being deleted at shutdown
_AFTER_COMMIT_SHUTDOWN_SECONDS = 2.0  # after-commit work of requests cancelled at shutdown

# Swagger UI and ReDoc assets served by the app itself: the docs work offline and behind
# networks that block CDNs.
_DOCS_ASSETS = Path(fastapi_standalone_docs.__file__).parent / "static"

# The login is the OAuth2 password flow with no client: Swagger UI's client_id, client_secret
# and "client credentials location" rows of the Authorize dialog stay hidden (they are sent
# empty either way, which the token route ignores).
_SWAGGER_STYLE = b"""<style>
.auth-container .wrapper:has(label[for="client_id_password"]),
.auth-container .wrapper:has(label[for="client_secret_password"]),
.auth-container .wrapper:has(label[for="password_type"]) { display: none; }
</style>
"""

DESCRIPTION = """
Stores the conversations of LLM chat clients: users, chat sessions and messages, including
assistant answers streamed in delta by delta.

**Authorize**: use the OAuth2 password form (email + password), or paste an API key
(`csk_...`) into the `X-API-Key` field. Errors are `application/problem+json` (RFC 9457)
with a stable `code`.
"""


OPENAPI_TAGS = [
    {"name": "health", "description": "Liveness, readiness and Prometheus metrics."},
    {"name": "auth", "description": "Register, log in (OAuth2 password), refresh, log out."},
    {"name": "users", "description": "The signed-in user."},
    {"name": "api-keys", "description": "Keys for scripts and CLI assistants (`X-API-Key`)."},
    {"name": "sessions", "description": "Chat sessions: create, list, rename, delete."},
    {
        "name": "messages",
        "description": "A session's messages, and answers appended to it delta by delta.",
    },
    {"name": "streams", "description": "Follow an answer or a session's changes live (SSE)."},
    {
        "name": "chat",
        "description": "Turns the service answers itself with a model: the answer is streamed "
        "into the store and finished even when the client is gone.",
    },
    {
        "name": "export",
        "description": "Take conversations out (chat-store/1, streamed) and bring them in "
        "(chat-store/1, ChatGPT, plain messages).",
    },
    {"name": "search", "description": "Full-text search of the caller's messages and titles."},
]


def _operation_id(route: APIRoute) -> str:
    return route.name


def create_served_app() -> FastAPI:
    """The app `chat-store serve` runs: start-up's objects frozen out of the collector."""
    return create_app(freeze_after_start=True)


def create_app(settings: Settings | None = None, *, freeze_after_start: bool = False) -> FastAPI:
    """The app. `freeze_after_start`: once started, what start-up built (modules, routes, the
    schema models, pools: about 200,000 objects, which live as long as the process) is moved
    out of the garbage collector's sight (gc.freeze), so that each full collection walks only
    what requests made. Unfrozen, one took 240-450 ms here, a pause of the whole event loop a
    few times a minute under load. Off for apps that tests start and stop in one process."""
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.use_json_logs)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings)
        cache = create_cache(settings.redis_url, settings.redis_prefix)
        bus = create_bus(settings.redis_url, settings.redis_prefix)
        principal_cache = await _principal_cache(settings, cache, bus)
        limiter = RateLimiter(
            settings.redis_url, settings.redis_prefix, fail_open=settings.rate_limit_fail_open
        )
        sessionmaker = create_sessionmaker(engine)
        archive_store = ArchiveStore(settings.archive_location)
        app.state.resources = AppState(
            settings=settings,
            engine=engine,
            sessionmaker=sessionmaker,
            read_sessionmaker=create_read_sessionmaker(engine),
            snapshot_sessionmaker=create_snapshot_sessionmaker(engine),
            cache=cache,
            principal_cache=principal_cache,
            bus=bus,
            limiter=limiter,
            archive=archive_store,
            restore_archived=restore_for_access,
        )
        logger.info(
            "chat-store %s started (database=%s, cache=%s)",
            __version__,
            engine.dialect.name,
            cache.backend,
        )
        _warn_about_open_endpoints(settings)
        await _warn_about_search_language(engine, settings)
        if freeze_after_start:
            gc.collect()
            gc.freeze()
        housekeeping = asyncio.create_task(
            maintenance.run_forever(
                sessionmaker,
                settings.retention_days,
                archiver=Archiver(sessionmaker, archive_store),
                archive_after_days=settings.archive_after_days,
            )
        )
        # The service's own chat turns (None without a provider): started after the bus, stopped
        # before it, so a generation's last writes and hand-over still reach the store and bus.
        runner = generation.create_runner(app.state.resources, metrics.generation)
        app.state.generation = runner
        if runner is not None:
            await runner.start()
        try:
            yield
        finally:
            housekeeping.cancel()
            if runner is not None:
                await runner.close()
            # What cancelled requests committed still reaches the bus and the cache (their
            # revocations, stop requests, events): before those close.
            await hooks.finish(within=_AFTER_COMMIT_SHUTDOWN_SECONDS)
            await limiter.close()
            if principal_cache is not cache:
                await principal_cache.close()
            await bus.close()
            await cache.close()
            # Archive objects still being deleted after their requests: a few seconds, then
            # left listed for the next housekeeping run.
            await finish_deleting(within=_DELETIONS_SHUTDOWN_SECONDS)
            await engine.dispose()

    app = FastAPI(
        title="chat-store",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.docs_enabled else None,
        generate_unique_id_function=_operation_id,
        swagger_ui_parameters={"persistAuthorization": True},
        openapi_tags=OPENAPI_TAGS,
    )
    # ROOT_PATH, for every ASGI server and the tests' transport alike: FastAPI sets it on each
    # request's scope from this attribute (its constructor's parameter is deprecated in favour
    # of a server option, which only `chat-store serve` would pass).
    app.root_path = settings.root_path
    install_error_handlers(app)
    app.add_middleware(RequestTimeoutMiddleware, seconds=settings.request_timeout_seconds)
    app.add_middleware(
        BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes, larger=_larger_bodies(settings)
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=[
                "X-Request-ID",
                "Retry-After",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
            ],
        )
    metrics = Metrics()
    app.state.metrics = metrics
    metrics.watch(lambda: getattr(app.state, "resources", None))
    app.add_middleware(RequestContextMiddleware, metrics=metrics, hsts=settings.hsts_enabled)

    # Routers carry the full /api/v1 prefix themselves, so a route's path is its whole
    # template (the metrics label).
    # With limits off, the limit dependencies are left out altogether (nothing to solve).
    limited = settings.rate_limit_enabled
    by_ip = [Depends(ratelimits.limit_by_client_ip)] if limited else []
    by_principal = [Depends(ratelimits.limit_by_principal)] if limited else []
    # A request is matched against the routes in this order: the busiest first. (No two
    # routers share a path; the documents keep the order of OPENAPI_TAGS.)
    for module in (
        messages,
        chat_sessions,
        streams,
        chat,
        users,
        api_keys,
        export,
        imports,
        archive,
        search,
    ):
        app.include_router(module.router, dependencies=by_principal)
    app.include_router(auth.router, dependencies=by_ip)
    app.include_router(health.router)
    app.include_router(metrics_api.router)
    if settings.docs_enabled:
        _install_docs(app)
    _finish_openapi(app, settings)
    return app


def _larger_bodies(settings: Settings) -> dict[str, int]:
    """Paths (ends of) whose bodies may be larger than MAX_BODY_BYTES: an import carries a
    whole conversation."""
    return {"/sessions/import": settings.max_import_bytes}


def _warn_about_open_endpoints(settings: Settings) -> None:
    """In production, say at start what anyone who reaches the port can read: an operator who
    meant to close it learns it from the log rather than from a scan."""
    if not settings.is_production:
        return
    if settings.metrics_enabled and settings.metrics_token is None:
        logger.warning(
            "/metrics is open to anyone who reaches the port: set METRICS_TOKEN, "
            "METRICS_ENABLED=false, or keep /metrics off the public address at the proxy"
        )
    if settings.docs_enabled:
        logger.warning(
            "/docs, /redoc and /openapi.json are served (the whole API described): "
            "set DOCS_ENABLED=false to turn them off"
        )


async def _warn_about_search_language(engine: AsyncEngine, settings: Settings) -> None:
    """SEARCH_LANGUAGE is read when the index is built: changed later, it does nothing until
    `chat-store reindex` builds the index again. Said at start, not found out from results."""
    wanted = search_index.effective_language(engine.dialect.name, settings.search_language)
    try:
        async with asyncio.timeout(_STARTUP_CHECK_SECONDS), engine.connect() as connection:
            built = await connection.run_sync(search_index.built_language)
    except Exception as exc:  # the readiness check reports it as long as it lasts
        logger.warning(
            "the database cannot be reached at start (%s): requests that need it answer 503, "
            "and GET /health/ready says so, until it is back",
            type(exc).__name__,
        )
        return
    if built is not None and built != wanted:
        logger.warning(
            "the search index was built in %s, and SEARCH_LANGUAGE is %s: searches go on in %s "
            "until `chat-store reindex` builds the index again",
            built,
            wanted,
            built,
        )


async def _principal_cache(settings: Settings, cache: Cache, bus: Bus) -> Cache:
    """Verified credentials: from Redis through a short in-process copy; the in-process cache
    of the embedded default is local already."""
    if cache.backend != "redis" or not settings.principal_local_cache_seconds:
        return cache
    near = NearCache(cache, bus, settings.principal_local_cache_seconds)
    await near.start()
    return near


def _finish_openapi(app: FastAPI, settings: Settings) -> None:
    """Each route's one-line docstring is its Swagger summary (FastAPI would title-case the
    function name and put the docstring in the description); every operation that needs a
    caller declares both ways in (get_principal reads them itself, see api/deps.py); and every
    operation lists the error answers of its kind besides its own (api/responses.py)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                description = operation.get("description") if isinstance(operation, dict) else None
                if description:
                    operation["summary"] = description.strip().splitlines()[0]
        _complete_operations(app, settings, schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _complete_operations(app: FastAPI, settings: Settings, schema: dict[str, Any]) -> None:
    requirement: list[dict[str, list[str]]] = [
        {scheme.scheme_name: []} for scheme in SECURITY_SCHEMES
    ]
    larger = _larger_bodies(settings)
    secured_any = False
    # Route contexts: the routes as included (include_router keeps them in their router).
    for route in iter_route_contexts(app.routes):
        if not (isinstance(route.original_route, APIRoute) and route.include_in_schema):
            continue
        secured = _depends_on(route.dependant, get_principal)
        limited = any(
            _depends_on(route.dependant, limit)
            for limit in (ratelimits.limit_by_principal, ratelimits.limit_by_client_ip)
        )
        path = route.original_route.path_format
        body_limit = next(
            (size for end, size in larger.items() if path.endswith(end)), settings.max_body_bytes
        )
        path_item = schema["paths"].get(path, {})
        for method in route.methods or ():
            if (operation := path_item.get(method.lower())) is None:
                continue
            if secured:
                operation["security"] = requirement
                secured_any = True
            document_problems(
                path, operation, secured=secured, limited=limited, body_limit=body_limit
            )
    add_problem_schema(schema)
    if secured_any:
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        for scheme in SECURITY_SCHEMES:
            schemes[scheme.scheme_name] = jsonable_encoder(
                scheme.model, by_alias=True, exclude_none=True
            )


def _depends_on(dependant: Dependant, call: Callable[..., Any]) -> bool:
    return any(sub.call is call or _depends_on(sub, call) for sub in dependant.dependencies)


def _install_docs(app: FastAPI) -> None:
    app.mount("/static/docs", StaticFiles(directory=_DOCS_ASSETS), name="docs-assets")
    oauth2_redirect_url = "/docs/oauth2-redirect"
    # The pages are the same on every request: written once.
    root = app.root_path
    assets, openapi_url = f"{root}/static/docs", f"{root}{app.openapi_url}"
    favicon = f"{assets}/fastapi/favicon.png"
    swagger_page = bytes(
        get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{oauth2_redirect_url}",
            swagger_js_url=f"{assets}/swagger/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger/swagger-ui.css",
            swagger_favicon_url=favicon,
            swagger_ui_parameters=app.swagger_ui_parameters,
        ).body
    ).replace(b"</head>", _SWAGGER_STYLE + b"</head>", 1)
    redoc_page = get_redoc_html(
        openapi_url=openapi_url,
        title=f"{app.title} - ReDoc",
        redoc_js_url=f"{assets}/redoc/redoc.standalone.js",
        redoc_favicon_url=favicon,
        with_google_fonts=False,
    ).body

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(swagger_page)

    @app.get(oauth2_redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return HTMLResponse(redoc_page)

    # ReDoc's footer asks for its logo next to the page (window.location.pathname + the name).
    @app.get("/redoc/logo-mini.svg", include_in_schema=False)
    async def redoc_logo() -> FileResponse:
        return FileResponse(_DOCS_ASSETS / "redoc" / "logo-mini.svg", media_type="image/svg+xml")
