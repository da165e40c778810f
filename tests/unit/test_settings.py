"""Settings: secrets refused in production, DATABASE_URL normalised, the development secret."""

from __future__ import annotations

import multiprocessing
import re
import secrets
import stat
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from chat_store import settings as settings_module
from chat_store.settings import Settings

STRONG_SECRET = secrets.token_urlsafe(48)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test passes counts, not whatever the shell running the tests exports."""
    for name in ("APP_ENV", "JWT_SECRET", "DATABASE_URL", "DATA_DIR", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)


def build(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "secret",
    [None, "", "change-me", "CHANGEME", "secret", "dev", "x" * 31, secrets.token_hex(15)],
    ids=["unset", "empty", "change-me", "CHANGEME", "secret", "dev", "31-chars", "30-hex"],
)
def test_production_refuses_a_missing_weak_or_short_secret(secret: str | None) -> None:
    with pytest.raises(ValidationError) as refused:
        build(app_env="production", jwt_secret=secret)

    message = str(refused.value)
    assert "JWT_SECRET" in message
    assert "at least 32 characters" in message
    assert "APP_ENV=production" in message


def test_production_reads_the_same_rule_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("JWT_SECRET", "changeme")

    with pytest.raises(ValidationError, match="JWT_SECRET"):
        build()

    monkeypatch.setenv("JWT_SECRET", STRONG_SECRET)
    settings = build()
    assert settings.is_production
    assert settings.jwt_secret_value() == STRONG_SECRET


def test_production_accepts_a_strong_secret(tmp_path: Path) -> None:
    settings = build(app_env="production", jwt_secret=STRONG_SECRET, data_dir=tmp_path)

    assert settings.is_production
    assert settings.use_json_logs
    assert settings.jwt_secret_value() == STRONG_SECRET
    assert not (tmp_path / ".jwt-secret").exists()
    assert STRONG_SECRET not in repr(settings)


@pytest.mark.parametrize("env", ["development", "test"])
def test_outside_production_no_secret_is_needed(env: str, tmp_path: Path) -> None:
    settings = build(app_env=env, data_dir=tmp_path)

    assert not settings.is_production
    assert len(settings.jwt_secret_value()) >= 32


def test_hosted_postgres_urls_become_asyncpg_with_ssl_as_a_connect_argument() -> None:
    settings = build(database_url="postgresql://u:p@h/db?sslmode=require&channel_binding=require")

    assert settings.sqlalchemy_url == "postgresql+asyncpg://u:p@h/db"
    assert settings.sqlalchemy_connect_args == {"ssl": "require"}
    assert "sslmode" not in settings.sqlalchemy_url
    assert "channel_binding" not in settings.sqlalchemy_url


@pytest.mark.parametrize(
    ("url", "expected_url", "expected_args"),
    [
        ("postgres://u:p@h:6543/db", "postgresql+asyncpg://u:p@h:6543/db", {}),
        ("postgresql://u:p@h/db?sslmode=disable", "postgresql+asyncpg://u:p@h/db", {"ssl": False}),
        (
            "postgresql://u:p@h/db?sslmode=verify-full",
            "postgresql+asyncpg://u:p@h/db",
            {"ssl": "verify-full"},
        ),
        (
            "postgresql+asyncpg://u:p%40ss@h/db?channel_binding=prefer",
            "postgresql+asyncpg://u:p%40ss@h/db",
            {},
        ),
        ("sqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db", {}),
    ],
    ids=["postgres-scheme", "sslmode-disable", "verify-full", "password-escaped", "sqlite"],
)
def test_database_url_forms(url: str, expected_url: str, expected_args: dict[str, object]) -> None:
    settings = build(database_url=url)

    assert settings.sqlalchemy_url == expected_url
    assert settings.sqlalchemy_connect_args == expected_args


def test_without_a_database_url_the_database_is_sqlite_in_data_dir(tmp_path: Path) -> None:
    settings = build(data_dir=tmp_path)

    assert settings.sqlalchemy_url == f"sqlite+aiosqlite:///{tmp_path.as_posix()}/chat-store.db"
    assert settings.sqlalchemy_connect_args == {}


def test_the_development_secret_is_generated_once_and_kept(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"  # created on demand
    secret_file = data_dir / ".jwt-secret"

    first = build(data_dir=data_dir).jwt_secret_value()

    assert len(first) >= 32
    assert secret_file.read_text() == first
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    # The same settings, new settings, a restart (the file read again): the same secret.
    assert build(data_dir=data_dir).jwt_secret_value() == first
    settings_module._KEPT_SECRETS.clear()
    assert build(data_dir=data_dir).jwt_secret_value() == first
    # Another data directory is another deployment: another secret.
    assert build(data_dir=tmp_path / "other").jwt_secret_value() != first


def _secret_of_a_process(data_dir: Path, start: Any, out: Any) -> None:
    start.wait()
    out.put(build(data_dir=data_dir).jwt_secret_value())


def test_processes_that_start_together_keep_one_secret(tmp_path: Path) -> None:
    """`--workers 4` on a fresh DATA_DIR: each worker read the file, found none and wrote its
    own, so a token one worker signed could be refused by another. The first one written is
    every process's now."""
    context = multiprocessing.get_context("fork")
    start, out = context.Barrier(8), context.Queue()
    workers = [
        context.Process(target=_secret_of_a_process, args=(tmp_path, start, out)) for _ in range(8)
    ]
    for worker in workers:
        worker.start()
    kept = {out.get(timeout=30) for _ in workers}
    for worker in workers:
        worker.join(timeout=30)

    assert len(kept) == 1
    secret_file = tmp_path / ".jwt-secret"
    assert {secret_file.read_text()} == kept
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert [path.name for path in tmp_path.iterdir()] == [".jwt-secret"]  # no leftovers


def test_a_configured_secret_wins_over_the_kept_one(tmp_path: Path) -> None:
    kept = build(data_dir=tmp_path).jwt_secret_value()

    assert build(data_dir=tmp_path, jwt_secret=STRONG_SECRET).jwt_secret_value() == STRONG_SECRET
    assert build(data_dir=tmp_path).jwt_secret_value() == kept


def test_a_kept_secret_that_is_too_short_is_replaced(tmp_path: Path) -> None:
    (tmp_path / ".jwt-secret").write_text("short")

    secret = build(data_dir=tmp_path).jwt_secret_value()

    assert len(secret) >= 32
    assert (tmp_path / ".jwt-secret").read_text() == secret


def test_env_example_lists_every_setting() -> None:
    """.env.example is where an operator finds every setting: a new one must be added there."""
    text = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, re.M))
    names = {(field.alias or name).upper() for name, field in Settings.model_fields.items()}
    assert names - listed == set()


def test_log_level_is_one_of_the_logging_levels_in_any_case() -> None:
    assert build(log_level="debug").log_level == "DEBUG"
    assert build(log_level=" Warning ").log_level == "WARNING"
    with pytest.raises(ValidationError, match="log_level"):
        build(log_level="verbose")


def test_a_title_limit_beyond_what_the_column_holds_is_refused() -> None:
    """The title column holds 400 characters: a larger limit would let Postgres refuse (500)
    what SQLite stores."""
    assert build(max_title_chars=400).max_title_chars == 400
    with pytest.raises(ValidationError, match="max_title_chars"):
        build(max_title_chars=401)
