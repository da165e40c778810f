"""Every failure of a command as one line on stderr and a non-zero exit status: an operator
typing a command needs to know what to fix, and a traceback can carry what was typed (a
password)."""

from __future__ import annotations

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

        lost = is_connection_error(exc) or isinstance(exc, OperationalError)
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
        return f"migration failed: {_first_line(exc)}"
    return f"unexpected {type(exc).__name__}: {_first_line(exc)}"


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
