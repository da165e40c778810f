"""Which database errors say the connection is lost (db.is_connection_error): in every form
they reach the app, raised by the driver or wrapped by SQLAlchemy and its asyncpg adapter."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError

from chat_store.db import is_connection_error

OUT_OF_STEP = "cannot switch to state 12; another operation (2) is in progress"
SQL = "INSERT INTO message ..."


def adapted(driver_error: Exception) -> DBAPIError:
    """As SQLAlchemy raises a driver error its adapter translates: the adapter's class, caused
    by the driver's, inside SQLAlchemy's own."""
    adapter_class = (
        AsyncAdapt_asyncpg_dbapi.InterfaceError
        if isinstance(driver_error, asyncpg.InterfaceError)
        else AsyncAdapt_asyncpg_dbapi.Error
    )
    adapter_error = adapter_class(str(driver_error), driver_error)
    adapter_error.__cause__ = driver_error
    wrapper = InterfaceError if isinstance(driver_error, asyncpg.InterfaceError) else DBAPIError
    return wrapper(SQL, None, adapter_error)


LOST = [
    asyncpg.InternalClientError(OUT_OF_STEP),
    asyncpg.exceptions.ProtocolError("unexpected message"),
    asyncpg.InterfaceError("connection is closed"),
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.CannotConnectNowError("the database system is shutting down"),
    ConnectionResetError(104, "Connection reset by peer"),
    BrokenPipeError(32, "Broken pipe"),
    TimeoutError(),
]
REFUSED = [
    asyncpg.DivisionByZeroError("division by zero"),
    asyncpg.UniqueViolationError("duplicate key value violates unique constraint"),
    asyncpg.DeadlockDetectedError("deadlock detected"),
    asyncpg.QueryCanceledError("canceling statement due to statement timeout"),
]


@pytest.mark.parametrize("error", LOST, ids=lambda error: type(error).__name__)
def test_a_lost_connection_is_recognised_raw_and_wrapped(error: Exception) -> None:
    assert is_connection_error(error)
    assert is_connection_error(adapted(error))
    # As the driver path and the engine's error hook raise one the adapter did not wrap.
    assert is_connection_error(DBAPIError(SQL, None, error, hide_parameters=True))


@pytest.mark.parametrize("error", REFUSED, ids=lambda error: type(error).__name__)
def test_a_refused_statement_is_not_a_lost_connection(error: Exception) -> None:
    assert not is_connection_error(error)
    assert not is_connection_error(adapted(error))


def test_a_wrapper_sqlalchemy_marked_invalidated_is_a_lost_connection() -> None:
    error = DBAPIError(SQL, None, Exception("server closed the connection unexpectedly"))
    assert not is_connection_error(error)
    error.connection_invalidated = True
    assert is_connection_error(error)


def test_other_errors_are_not_connection_errors() -> None:
    assert not is_connection_error(ValueError("bad"))
    assert not is_connection_error(IntegrityError(SQL, None, Exception("duplicate key")))
    caused = RuntimeError("wrapped twice")
    caused.__cause__ = KeyError("x")
    assert not is_connection_error(caused)
