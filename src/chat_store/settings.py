"""Every knob of the service, read from the environment (and `.env`), validated at start.

Names are flat environment variables (DATABASE_URL, RATE_LIMIT_AUTH, ...) because that is what the
HTTP contract and operators use; the groups below are sections of one class.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url

# Secrets that appear in examples and tutorials: refused in production.
_WEAK_SECRETS = {"", "change-me", "changeme", "secret", "dev", "development", "test"}
_MIN_SECRET_CHARS = 32


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # --- application
    app_env: Literal["development", "production", "test"] = "development"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    data_dir: Path = Path("data")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_json: bool | None = None  # default: JSON in production, text elsewhere
    # Comma-separated (or a JSON list); NoDecode keeps pydantic-settings from parsing it as JSON.
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    root_path: str = ""

    # --- database
    database_url: str | None = None  # None: SQLite file in DATA_DIR
    # A steady pool: 30 kept open and none opened beyond them. Overflow connections are opened
    # and closed again under load, and opening one costs more than a request
    # (docs/benchmarks.md).
    db_pool_size: int = Field(default=30, ge=1)
    db_max_overflow: int = Field(default=0, ge=0)
    db_pool_timeout: float = Field(default=10.0, gt=0)
    db_null_pool: bool = False  # serverless: open a connection per checkout
    # Ping each connection before use (a round trip per request); off, a connection broken by a
    # database restart fails one request with 503 and is replaced.
    db_pool_pre_ping: bool = False
    db_echo: bool = False
    # Postgres: connections each process keeps for searches, which plan every statement for
    # its values (db.planned_for_its_values); opened as needed, then kept.
    db_search_pool_size: int = Field(default=8, ge=1)
    # SQLite: read-only connections beside the one writer, for reads that may run side by side
    # (search): WAL lets readers run while the writer writes.
    sqlite_read_connections: int = Field(default=4, ge=1)

    # --- redis
    redis_url: str | None = None  # None: in-process cache
    redis_prefix: str = "cs:"

    # --- auth
    jwt_secret: SecretStr | None = None
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    access_token_minutes: int = Field(default=15, ge=1)
    refresh_token_days: int = Field(default=30, ge=1)
    bcrypt_rounds: int = Field(default=12, ge=4, le=31)
    allow_registration: bool = True
    allow_guests: bool = False
    # How long a verified API key (or a JWT's user) is trusted without a database read, on the
    # in-process cache; with Redis an upper bound (and how long revocation markers are kept).
    # 0 turns the cache off (every request reads the database).
    principal_cache_seconds: int = Field(default=60, ge=0)
    # With Redis: how long a verified credential is trusted after the database read that
    # verified it, in Redis and in each process's copy (a hot key costs no Redis round trip).
    # Revocations are announced to every process at once; this bounds the delay whatever Redis
    # does (a lost announcement or marker). 0: every request reads the database.
    principal_local_cache_seconds: float = Field(default=5.0, ge=0)

    # --- limits
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    max_message_bytes: int = Field(default=1024 * 1024, ge=1)
    max_metadata_bytes: int = Field(default=16 * 1024, ge=2)
    # Levels of objects and arrays in a JSON field (metadata, context). At most 128: the
    # response serializer refuses values nested about 250 deep, and a row stored deeper than
    # it can write could never be read back.
    max_json_depth: int = Field(default=32, ge=1, le=128)
    # The title column holds 400 characters (beyond it Postgres refuses the write; SQLite not).
    max_title_chars: int = Field(default=200, ge=1, le=400)
    max_batch_messages: int = Field(default=100, ge=1)
    # Unexpired API keys one user may hold (each is a credential to keep track of and revoke).
    max_api_keys_per_user: int = Field(default=20, ge=1)
    idempotency_ttl_hours: int = Field(default=24, ge=24)

    # --- rate limits (limits syntax: "20/minute", "1000/hour", "10/15minutes")
    rate_limit_enabled: bool = True
    rate_limit_auth: str = "20/minute"  # per client IP, on /auth routes
    rate_limit_write: str = "1200/minute"  # per principal: POST, PATCH, PUT, DELETE
    rate_limit_read: str = "1200/minute"  # per principal: GET
    login_failures_per_account: str = "10/15minutes"  # failed logins per email, any IP
    guest_create_rate_limit: str = "30/hour"  # new guests (user rows) per client IP
    rate_limit_fail_open: bool = True  # when Redis is unreachable: allow (True) or refuse
    # Peers whose X-Forwarded-For is believed (IPs or CIDRs, comma-separated).
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # --- streams
    stream_keepalive_seconds: float = Field(default=15.0, gt=0)
    stream_poll_seconds: float = Field(default=5.0, gt=0)
    # How long an open stream trusts its credential before it reads it from the database again
    # (at its next re-read of the store); 0: at every re-read. A revoked key or a deleted user
    # ends a stream at most this plus STREAM_POLL_SECONDS after the revocation.
    stream_credential_check_seconds: float = Field(default=5.0, ge=0)
    stale_stream_seconds: int = Field(default=300, ge=1)

    # --- generation (the service calls an OpenAI-compatible model; off while LLM_BASE_URL is unset)
    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None  # never logged; sent as the provider's bearer token
    llm_model: str | None = None  # the default model; required with LLM_BASE_URL
    # Models a turn may ask for besides LLM_MODEL (comma-separated or a JSON list).
    llm_models: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Connecting, the first token and each gap between tokens: a longer wait fails the answer.
    llm_timeout_seconds: float = Field(default=60.0, gt=0)
    # One provider call from its request to its last chunk: a longer answer fails (its text kept,
    # to be continued), so a provider that never ends cannot hold a generation's place for good.
    llm_max_generation_seconds: float = Field(default=1800.0, gt=0)
    # Retries of a refused or failed provider request before any token came (429, 5xx, network).
    llm_max_retries: int = Field(default=2, ge=0, le=10)
    # Tokens of prompt the service sends: system prompt, history and the user's turn.
    llm_context_tokens: int = Field(default=8192, ge=1)
    llm_max_output_tokens: int | None = Field(default=None, ge=1)  # a turn's default limit
    # The request field that carries a turn's output limit: OpenAI's newer models take only
    # max_completion_tokens; Ollama, vLLM and llama.cpp's server read max_tokens.
    llm_max_tokens_parameter: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    llm_stream_usage: bool = True  # ask for usage in the stream (stream_options.include_usage)
    llm_max_concurrent: int = Field(default=32, ge=1)  # live generations per process
    generation_concurrency_per_user: int = Field(default=4, ge=1)
    # A live generation's lease in the database, renewed by its process every third of it; a
    # generation whose lease ran out (its process died) is taken over by another process.
    generation_lease_seconds: float = Field(default=30.0, ge=0.5)
    generation_sweep_seconds: float = Field(default=10.0, gt=0)  # how often leases are checked
    generation_flush_seconds: float = Field(default=0.04, ge=0)  # deltas coalesced this long
    # Runs of one answer that did not hand it over at shutdown (a process that died counts).
    generation_max_attempts: int = Field(default=3, ge=1)
    # --- search
    # The text search configuration of the search index (Postgres: `simple`, `english`,
    # `german`, ...; SQLite: `english` adds stemming, anything else searches as `simple`).
    # Read when the index is built (docs/operations.md: changing it).
    search_language: str = Field(default="simple", pattern=r"^[a-z_][a-z0-9_]*$", max_length=63)
    # A query that matches more of the caller's messages than this ranks the newest this many
    # of them (and every title): ranking costs per match (docs/api.md, Search).
    search_ranked_matches: int = Field(default=500, ge=1)

    # --- retention
    retention_days: int | None = Field(default=None, ge=1)  # None: keep sessions forever

    # --- archive, import
    archive_after_days: int | None = Field(default=None, ge=1)  # None: never archive
    # Where archived sessions go: a file:// folder or s3://bucket/prefix (credentials and endpoint
    # from the usual AWS_* variables). None: DATA_DIR (objects go to DATA_DIR/chat_archives/...).
    archive_url: str | None = None
    max_import_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    max_import_messages: int = Field(default=100_000, ge=1)

    # --- operations
    request_timeout_seconds: float = Field(default=30.0, gt=0)  # 504 after this (not streams)
    hsts_enabled: bool = False  # send Strict-Transport-Security (only when served over HTTPS)
    metrics_enabled: bool = True
    metrics_token: SecretStr | None = None
    # Swagger UI (/docs), ReDoc (/redoc) and the OpenAPI document (/openapi.json).
    docs_enabled: bool = True

    @field_validator(
        "database_url",
        "redis_url",
        "log_json",
        "jwt_secret",
        "metrics_token",
        "retention_days",
        "llm_base_url",
        "llm_api_key",
        "llm_model",
        "llm_max_output_tokens",
        "archive_after_days",
        "archive_url",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `DATABASE_URL=` in an env file means "not set", as it does for a shell.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level_in_any_case(cls, value: object) -> object:
        # `LOG_LEVEL=debug` is the same level; an unknown name is refused at start, not later by
        # the logging module with a traceback.
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator(
        "rate_limit_auth",
        "rate_limit_write",
        "rate_limit_read",
        "login_failures_per_account",
        "guest_create_rate_limit",
    )
    @classmethod
    def _valid_limit(cls, value: str) -> str:
        from limits import parse

        if any(separator in value for separator in ",;|"):
            raise ValueError("give one limit, like 20/minute (several are not combined)")
        try:
            parse(value)
        except ValueError as exc:
            raise ValueError(f"not a rate limit ({exc}); write it like 20/minute") from None
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item, strict=False)
        return value

    @field_validator("cors_origins", "trusted_proxies", "llm_models", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            if value.strip().startswith("["):
                return json.loads(value)
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @model_validator(mode="after")
    def _check_generation(self) -> Settings:
        if self.llm_base_url is not None and not self.llm_model:
            raise ValueError("LLM_MODEL must name the default model when LLM_BASE_URL is set")
        return self

    @model_validator(mode="after")
    def _check_secrets(self) -> Settings:
        if self.app_env != "production":
            return self
        secret = self.jwt_secret.get_secret_value() if self.jwt_secret else ""
        if secret.lower() in _WEAK_SECRETS or len(secret) < _MIN_SECRET_CHARS:
            raise ValueError(
                "JWT_SECRET must be set to a random value of at least "
                f"{_MIN_SECRET_CHARS} characters when APP_ENV=production "
                "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        return self

    @property
    def is_production(self) -> bool:
        return self.app_env == "production"

    @property
    def use_json_logs(self) -> bool:
        return self.is_production if self.log_json is None else self.log_json

    @property
    def generation_enabled(self) -> bool:
        return self.llm_base_url is not None

    @property
    def allowed_models(self) -> list[str]:
        """The models a turn may ask for: LLM_MODEL first, then LLM_MODELS."""
        default = [self.llm_model] if self.llm_model else []
        return default + [model for model in self.llm_models if model not in default]

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url is None:
            return f"sqlite+aiosqlite:///{(self.data_dir / 'chat-store.db').as_posix()}"
        return normalize_database_url(self.database_url)[0]

    @property
    def sqlalchemy_connect_args(self) -> dict[str, object]:
        if self.database_url is None:
            return {}
        return normalize_database_url(self.database_url)[1]

    @property
    def archive_location(self) -> str:
        """ARCHIVE_URL, or DATA_DIR as a file:// URL."""
        if self.archive_url is not None:
            return self.archive_url
        return self.data_dir.resolve().as_uri()

    def jwt_secret_value(self) -> str:
        """The signing secret: configured, or (outside production) one kept in DATA_DIR."""
        if self.jwt_secret is not None and self.jwt_secret.get_secret_value():
            return self.jwt_secret.get_secret_value()
        return _development_secret(self.data_dir)


def normalize_database_url(url: str) -> tuple[str, dict[str, object]]:
    """Accept the `postgresql://...?sslmode=require` form hosted providers hand out.

    asyncpg takes neither `sslmode` nor `channel_binding` as URL options, so they become its
    `ssl` connect argument (asyncpg negotiates channel binding by itself).
    """
    parsed = make_url(url)
    connect_args: dict[str, object] = {}
    if parsed.drivername in {"postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"}:
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    if parsed.drivername == "postgresql+asyncpg":
        sslmode = parsed.query.get("sslmode")
        if isinstance(sslmode, str):
            connect_args["ssl"] = False if sslmode == "disable" else sslmode
        parsed = parsed.difference_update_query(["sslmode", "channel_binding"])
    return parsed.render_as_string(hide_password=False), connect_args


# The kept secrets this process read or made, by file: read once, not at every token.
_KEPT_SECRETS: dict[Path, str] = {}


def _development_secret(data_dir: Path) -> str:
    """A random secret generated once and kept, so tokens survive a restart in development."""
    path = (data_dir / ".jwt-secret").absolute()
    kept = _KEPT_SECRETS.get(path)
    if kept is None:
        kept = _KEPT_SECRETS[path] = _read_or_make_secret(path)
    return kept


def _read_or_make_secret(path: Path) -> str:
    """The secret in `path`; when there is none, a new one put there whole and never over
    another's: processes that start together (`--workers`) all take the first one written, and
    none reads a file half-written or open to others (the file is made 0600 before it holds it)."""
    existing = _read_secret(path)
    if existing is not None:
        return existing
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=".jwt-secret.")  # 0600
    written = Path(name)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(48))
        try:
            os.link(written, path)  # fails, rather than replacing, when the file is there
        except OSError:
            # There already (FileExistsError), or a file system without hard links: put in
            # place unless a usable one is there (one cut, or too short, is replaced).
            if _read_secret(path) is None:
                os.replace(written, path)
    finally:
        written.unlink(missing_ok=True)
    made = _read_secret(path)
    if made is None:
        raise RuntimeError(f"{path} holds no secret of {_MIN_SECRET_CHARS} characters or more")
    return made


def _read_secret(path: Path) -> str | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return text if len(text) >= _MIN_SECRET_CHARS else None


@lru_cache
def get_settings() -> Settings:
    return Settings()
