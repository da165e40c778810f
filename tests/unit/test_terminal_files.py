"""Files the terminal program writes: an export's --output, the login; a file's error is told
as a file's, not as an unreachable database."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

from chat_store import cli
from chat_store.cli.failures import describe_error
from chat_store.terminal import sessions


def _run(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["chat-store", *args])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    return int(exited.value.code or 0)


@pytest.mark.parametrize(
    ("output", "told"),
    [("no-such-folder/out.md", "there is no folder"), (".", "is a folder")],
)
def test_an_export_output_that_cannot_be_a_file_is_refused_before_the_service_is_asked(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    output: str,
    told: str,
) -> None:
    def no_service() -> None:
        raise AssertionError("the service was asked")

    monkeypatch.setattr(sessions, "open_client", no_service)
    status = _run(monkeypatch, "export", str(uuid.uuid4()), "-o", str(tmp_path / output))

    err = capsys.readouterr().err
    assert status == 2, err
    assert told in err and "database" not in err and ".partial" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_file_error_is_told_as_one() -> None:
    missing = FileNotFoundError(2, "No such file or directory", "/nowhere/login.json")
    assert describe_error(missing) == "No such file or directory: /nowhere/login.json"
    refused = ConnectionRefusedError(111, "Connection refused")
    assert describe_error(refused).startswith("cannot reach the database")


def test_the_serve_banner_shows_no_secret_of_a_database_url() -> None:
    from chat_store.cli.server import _where_stored

    for url in (
        "postgresql://chat@db.internal:5432/chat?password=S3cretPassw0rd",
        "postgresql://chat:S3cretPassw0rd@db.internal:5432/chat",
    ):
        assert _where_stored(url) == "postgresql at db.internal:5432, database chat", url
    # A password with an @, / or ? not escaped is read in part as the host, the database or
    # the query: only the kind is named.
    for url in (
        "postgresql://chat:P@ssW0rd@db.internal:5432/chat",
        "postgresql://chat:P@ss/word@db.internal:5432/chat",
        "postgresql://chat:P@ss?w@db.internal/chat",
        "postgresql://a@b:c@db.internal:5432/chat",
    ):
        assert _where_stored(url) == "postgresql", url
