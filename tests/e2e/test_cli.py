"""The `chat-store` admin commands, run as an operator runs them (the console script in a
subprocess, in a folder of its own): a failure is one line on stderr with a non-zero status,
never a traceback, and never echoes a password or a database URL."""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from chat_store import migrate
from chat_store.settings import Settings
from tests.backends import BACKEND, Backend, _pg_admin, _pg_url, provision
from tests.e2e.conftest import running_server

pytestmark = pytest.mark.e2e

EXECUTABLE = Path(sys.executable).with_name("chat-store")
# A password in a database URL, which no message may repeat.
URL_PASSWORD = "hunter2-" + secrets.token_hex(4)


def run_cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    # Settings the developer's shell may hold are dropped; cwd is a folder with no .env file.
    settings_names = {name.upper() for name in Settings.model_fields}
    environment = {k: v for k, v in os.environ.items() if k.upper() not in settings_names}
    environment.update({"BCRYPT_ROUNDS": "4", **env})
    return subprocess.run(
        [str(EXECUTABLE), *args],
        cwd=cwd,
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], *says: str, hidden: tuple[str, ...] = ()
) -> str:
    """Exit status 1, nothing on stdout, one line on stderr that says `says` and none of
    `hidden`; returns the line."""
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert result.stdout == "", output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("error: "), output
    assert "Traceback" not in output
    for text in says:
        assert text in lines[0], output
    for text in hidden:
        assert text not in output, output
    return lines[0]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """An empty working folder, outside the project."""
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture(scope="module")
async def migrated() -> AsyncIterator[Backend]:
    """A migrated database of the run's backend, with one user (admin@example.com)."""
    async with provision("cli") as backend:
        created = run_cli(
            "users",
            "create",
            "--email",
            "admin@example.com",
            "--password",
            "long enough password",
            cwd=backend.data_dir,
            DATABASE_URL=backend.database_url,
        )
        assert created.returncode == 0, created.stderr
        yield backend


def test_a_short_password_is_one_line_that_does_not_repeat_it(
    migrated: Backend, folder: Path
) -> None:
    result = run_cli(
        "users", "create", "--email", "new@example.com", "--password", "Sh0rt!",
        cwd=folder, DATABASE_URL=migrated.database_url,
    )  # fmt: skip
    assert_one_line_error(result, "--password", "at least 8 characters", hidden=("Sh0rt!",))


def test_an_invalid_email_is_one_line(migrated: Backend, folder: Path) -> None:
    result = run_cli(
        "users", "create", "--email", "not-an-email", "--password", "s3cret-enough-pw",
        cwd=folder, DATABASE_URL=migrated.database_url,
    )  # fmt: skip
    assert_one_line_error(result, "--email", hidden=("s3cret-enough-pw",))


def test_what_the_service_refuses_is_one_line(migrated: Backend, folder: Path) -> None:
    url = migrated.database_url
    taken = run_cli(
        "users", "create", "--email", "Admin@Example.com", "--password", "s3cret-enough-pw",
        cwd=folder, DATABASE_URL=url,
    )  # fmt: skip
    assert_one_line_error(taken, "already registered", hidden=("s3cret-enough-pw",))
    nobody = run_cli(
        "api-keys", "create", "--email", "nobody@example.com", cwd=folder, DATABASE_URL=url
    )
    assert_one_line_error(nobody, "nobody@example.com")
    long_name = run_cli(
        "api-keys", "create", "--email", "admin@example.com", "--name", "n" * 300,
        cwd=folder, DATABASE_URL=url,
    )  # fmt: skip
    assert_one_line_error(long_name, "--name")


def test_the_commands_work_on_a_migrated_database(migrated: Backend, folder: Path) -> None:
    url = migrated.database_url
    key = run_cli(
        "api-keys", "create", "--email", "admin@example.com", cwd=folder, DATABASE_URL=url
    )
    assert key.returncode == 0, key.stderr
    assert key.stdout.startswith("csk_")
    purged = run_cli("purge", "--older-than", "90d", "--dry-run", cwd=folder, DATABASE_URL=url)
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout.startswith("would delete 0 sessions")


ADMIN_COMMANDS = {
    "users create": ["users", "create", "--email", "a@example.com", "--password", "s3cret-pw-1"],
    "api-keys create": ["api-keys", "create", "--email", "a@example.com"],
    "purge": ["purge", "--older-than", "90d"],
}


@pytest.mark.parametrize("args", ADMIN_COMMANDS.values(), ids=ADMIN_COMMANDS.keys())
def test_with_no_database_yet_a_command_says_to_migrate_and_creates_nothing(
    folder: Path, args: list[str]
) -> None:
    """Run in a folder that holds no database (the embedded default, DATA_DIR=data): no empty
    database file is left behind for the next command to trip on."""
    result = run_cli(*args, cwd=folder)
    line = assert_one_line_error(result, "chat-store migrate", hidden=("s3cret-pw-1",))
    assert str(folder / "data" / "chat-store.db") in line
    assert list(folder.iterdir()) == []


@pytest.fixture
async def unmigrated(tmp_path: Path) -> AsyncIterator[str]:
    """A database of the run's backend that exists but was never migrated."""
    if BACKEND == "sqlite":
        path = tmp_path / "empty.db"
        path.touch()
        yield f"sqlite:///{path}"
        return
    name = f"chat_store_cli_{secrets.token_hex(4)}"
    await _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield _pg_url(name)
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_on_a_database_that_was_never_migrated_a_command_says_to_migrate(
    unmigrated: str, folder: Path
) -> None:
    result = run_cli(*ADMIN_COMMANDS["users create"], cwd=folder, DATABASE_URL=unmigrated)
    assert_one_line_error(result, "chat-store migrate", hidden=("s3cret-pw-1",))
    # Once migrated, the same command works.
    assert run_cli("migrate", cwd=folder, DATABASE_URL=unmigrated).returncode == 0
    created = run_cli(*ADMIN_COMMANDS["users create"], cwd=folder, DATABASE_URL=unmigrated)
    assert created.returncode == 0, created.stderr


UNREACHABLE = f"postgresql://admin:{URL_PASSWORD}@127.0.0.1:1/chat_store"


@pytest.mark.parametrize(
    "args",
    [["migrate"], ADMIN_COMMANDS["users create"], ["serve"]],
    ids=["migrate", "users create", "serve"],
)
def test_an_unreachable_database_is_one_line(folder: Path, args: list[str]) -> None:
    result = run_cli(*args, cwd=folder, DATABASE_URL=UNREACHABLE)
    assert_one_line_error(result, "database", hidden=(URL_PASSWORD, "s3cret-pw-1"))


def test_a_malformed_database_url_is_not_repeated(folder: Path) -> None:
    result = run_cli("migrate", cwd=folder, DATABASE_URL=f"admin:{URL_PASSWORD}@db/chat")
    assert_one_line_error(result, "DATABASE_URL", hidden=(URL_PASSWORD,))


def test_an_unknown_revision_is_one_line(migrated: Backend, folder: Path) -> None:
    result = run_cli("migrate", "no-such-revision", cwd=folder, DATABASE_URL=migrated.database_url)
    assert_one_line_error(result, "no-such-revision")


def test_migrate_goes_only_forward_and_says_where_the_database_is(
    migrated: Backend, folder: Path
) -> None:
    """Going back drops what later revisions store (tool calls, the search index); an
    upgrade to a revision behind the database's did nothing and said it had."""
    behind = run_cli("migrate", "0004_archive", cwd=folder, DATABASE_URL=migrated.database_url)
    assert_one_line_error(behind, "past 0004_archive", "only goes forward")
    head = run_cli("migrate", cwd=folder, DATABASE_URL=migrated.database_url)
    assert head.returncode == 0, head.stderr
    said = (head.stdout + head.stderr).split()
    assert said == ["database", "at", "revision", *migrate.head_revisions()]


def test_a_database_migrated_by_a_newer_version_is_named_as_such(folder: Path) -> None:
    assert run_cli("migrate", cwd=folder, DATA_DIR=str(folder)).returncode == 0
    with sqlite3.connect(folder / "chat-store.db") as connection:
        connection.execute("UPDATE alembic_version SET version_num = '0099_newer'")
    for args in (["migrate"], ["serve", "--port", "0"]):
        refused = run_cli(*args, cwd=folder, DATA_DIR=str(folder))
        assert_one_line_error(refused, "revision 0099_newer", "a newer version migrated it")


def test_a_statement_sqlite_refuses_is_not_an_unreachable_database(folder: Path) -> None:
    """SQLite says OperationalError for a schema that is not what a statement expects as for a
    file it cannot open: only the latter is "cannot reach the database"."""
    assert run_cli("migrate", cwd=folder, DATA_DIR=str(folder)).returncode == 0
    with sqlite3.connect(folder / "chat-store.db") as connection:
        connection.execute("ALTER TABLE archive_deletion DROP COLUMN refused_at")
    refused = run_cli("purge", "--older-than", "90d", cwd=folder, DATA_DIR=str(folder))
    line = assert_one_line_error(refused, "database error", "no such column")
    assert "cannot reach" not in line


def test_with_json_logs_migrate_says_where_it_is_in_a_json_line(
    migrated: Backend, folder: Path
) -> None:
    """A log collector reads every line of the container: none plain among the JSON ones."""
    result = run_cli(
        "migrate",
        cwd=folder,
        DATABASE_URL=migrated.database_url,
        LOG_JSON="true",
        LOG_LEVEL="WARNING",  # still said: the operator ran the command to know it
    )
    assert result.returncode == 0, result.stderr
    lines = (result.stdout + result.stderr).splitlines()
    assert [json.loads(line)["msg"] for line in lines] == [
        f"database at revision {next(iter(migrate.head_revisions()))}"
    ]


def test_a_sqlite_file_in_no_folder_is_one_line_every_time(folder: Path) -> None:
    """The driver's worker thread printed a traceback after the error, every other run."""
    for _ in range(4):
        result = run_cli("migrate", cwd=folder, DATABASE_URL="sqlite:////nonexistent/dir/x.db")
        assert_one_line_error(result, "no folder /nonexistent/dir")


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"BCRYPT_ROUNDS": "many"}, "BCRYPT_ROUNDS"),
        ({"APP_ENV": "production", "JWT_SECRET": "too-short-secret"}, "JWT_SECRET"),
        ({"METRICS_TOKEN": "x", "RATE_LIMIT_AUTH": "often"}, "RATE_LIMIT_AUTH"),
    ],
    ids=["a number", "a weak secret in production", "a rate limit"],
)
def test_a_bad_setting_is_one_line_naming_it(folder: Path, env: dict[str, str], says: str) -> None:
    for args in (["serve"], ["migrate"], ADMIN_COMMANDS["users create"]):
        result = run_cli(*args, cwd=folder, **env)
        assert_one_line_error(result, says, hidden=("too-short-secret", "s3cret-pw-1"))
    assert list(folder.iterdir()) == []


def test_a_bad_option_is_a_usage_error_without_a_traceback(folder: Path) -> None:
    result = run_cli("purge", "--older-than", "soon", cwd=folder)
    assert result.returncode == 2
    assert "--older-than" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


async def test_serve_does_not_name_the_server_and_warns_about_open_endpoints(
    migrated: Backend,
) -> None:
    """In production, with /metrics open and the docs served (the defaults), the log says so
    at start; no answer carries uvicorn's `server` header."""
    async with running_server(migrated, APP_ENV="production") as server:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            for path in ("/health", "/api/v1/users/me", "/docs"):
                answer = await client.get(path)
                assert "server" not in answer.headers, (path, answer.headers)
        log = server.log()
    assert "/metrics is open to anyone" in log, log
    assert "/docs, /redoc and /openapi.json are served" in log, log


async def test_serve_offers_only_what_the_server_serves(migrated: Backend) -> None:
    """The start banner points at Swagger UI for an account only where there is one and it
    may register; otherwise at the command alone."""
    async with running_server(migrated) as server:
        said = server.log()
    assert "(Swagger UI: http://" in said, said
    assert "create an account in Swagger UI or with `chat-store users create`" in said, said

    closed = {"DOCS_ENABLED": "false", "ALLOW_REGISTRATION": "false"}
    async with running_server(migrated, **closed) as server:
        said = server.log()
    assert "Swagger UI" not in said, said
    assert "create an account with `chat-store users create`" in said, said


def test_serve_on_an_unreachable_database_says_so_at_start(folder: Path) -> None:
    """`--no-migrate` starts without touching the database: the log says it cannot be reached
    (never that the service is ready, nor the URL's password)."""
    settings_names = {name.upper() for name in Settings.model_fields}
    environment = {k: v for k, v in os.environ.items() if k.upper() not in settings_names}
    environment.update({"DATABASE_URL": UNREACHABLE, "RATE_LIMIT_ENABLED": "false"})
    server = subprocess.Popen(
        [str(EXECUTABLE), "serve", "--no-migrate", "--port", "0"],
        cwd=folder,
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    said: list[str] = []
    try:
        assert server.stderr is not None
        for line in server.stderr:
            said.append(line)
            if "Application startup complete" in line:
                break
    finally:
        server.terminate()
        server.wait(timeout=20)
    log = "".join(said)
    assert "the database cannot be reached at start" in log, log
    assert " ready " not in log, log
    assert URL_PASSWORD not in log
