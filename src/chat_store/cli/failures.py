"""Every failure of a command as one line on stderr and a non-zero exit status: an operator
typing a command needs to know what to fix, and a traceback can carry what was typed (a
password)."""

from __future__ import annotations

import re
import sys
from typing import NoReturn

from pydantic import ValidationError
from pydantic_settings import SettingsError
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError, SQLAlchemyError

from chat_store.cli.running import CommandFailed
from chat_store.errors import AppError
from chat_store.settings import Settings


def fail(message: str, status: int = 1) -> NoReturn:
    # Plain print, not rich: a message may hold brackets ("[Errno 111]") rich reads as markup.
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    raise SystemExit(status)


def describe_error(exc: BaseException) -> str:
    """One line saying what went wrong, never echoing a value that was typed or configured:
    a validation error's input (a password) or a database URL (its password)."""
    if isinstance(exc, CommandFailed):
        return str(exc)
    if isinstance(exc, AppError):
        return exc.detail
    if isinstance(exc, ValidationError):
        return _validation_errors(exc)
    if isinstance(exc, SettingsError):  # a list setting that is not valid JSON
        return f"settings: {_first_line(exc)}"
    if isinstance(exc, ArgumentError):
        return "DATABASE_URL is not a database URL (write it like postgresql://user:pw@host/db)"
    if isinstance(exc, DBAPIError):
        from chat_store.db import is_connection_error

        lost = is_connection_error(exc) or (
            isinstance(exc, OperationalError) and not _refused_statement(exc)
        )
        return (
            f"{'cannot reach the database' if lost else 'database error'}: {_first_line(exc.orig)}"
        )
    if isinstance(exc, SQLAlchemyError):  # its message may quote a statement's parameters
        return f"database error: {type(exc).__name__}"
    if isinstance(exc, OSError) and exc.filename is not None:  # a file, not a connection
        return f"{exc.strerror or type(exc).__name__}: {exc.filename}"
    if isinstance(exc, OSError):
        return f"cannot reach the database: {_first_line(exc)}"
    from alembic.util import CommandError

    if isinstance(exc, CommandError):
        unknown = _UNKNOWN_REVISION.search(str(exc))
        if unknown is not None:
            return (
                f"the database is at revision {unknown[1]}, which this version of chat-store "
                "does not have: a newer version migrated it. Run that version (or a newer "
                "one), or restore a backup made before it"
            )
        return f"migration failed: {_first_line(exc)}"
    return f"unexpected {type(exc).__name__}: {_first_line(exc)}"


# SQLite reports a statement it refuses (a schema that is not what the statement expects: "no
# such column", "table ... already exists") as an OperationalError, as it does a file it cannot
# open or lock; only the latter is about reaching the database.
_SQLITE_UNREACHABLE = (
    "unable to open database file",
    "database is locked",
    "disk i/o error",
    "attempt to write a readonly database",
    "database or disk is full",
)
_UNKNOWN_REVISION = re.compile(r"Can't locate revision identified by '([^']+)'")


def _refused_statement(exc: DBAPIError) -> bool:
    """Whether a SQLite OperationalError refuses a statement (the schema, the SQL), rather
    than say the file cannot be reached."""
    if "sqlite" not in type(exc.orig).__module__:
        return False
    message = str(exc.orig).lower()
    return not any(message.startswith(reason) for reason in _SQLITE_UNREACHABLE)


def _validation_errors(exc: ValidationError) -> str:
    """`--password: String should have at least 8 characters`; for settings, the variable's
    name. Pydantic's own text quotes each input value, which is left out."""
    settings = exc.title == Settings.__name__
    described = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        name = "_".join(str(part) for part in error["loc"])
        if not name:
            described.append(message)
        elif settings:
            described.append(f"setting {name.upper()}: {message}")
        else:
            described.append(f"--{name.replace('_', '-')}: {message}")
    return "; ".join(described)


def _first_line(exc: BaseException | None) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
