"""The database layer: the engine and sessions for both dialects, and how a statement runs.

Crud says what to run; `fetch_one` decides how: the statement written for the dialect, in the
session's transaction, or, for a write that stands alone on Postgres, on the driver in autocommit
(no BEGIN and no COMMIT round trip). Either way a failure is raised as SQLAlchemy raises it, so
the API answers it one way.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar, cast

import asyncpg
from sqlalchemy import URL, Connection, Engine, event
from sqlalchemy.engine.interfaces import DBAPIConnection, Dialect, ExceptionContext
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry, NullPool, Pool
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.selectable import Select
from sqlalchemy.util import greenlet_spawn

from chat_store.settings import Settings

Row = TypeVar("Row")
T = TypeVar("T")


def create_engine(settings: Settings, url: str | None = None) -> AsyncEngine:
    url = url or settings.sqlalchemy_url
    kwargs: dict[str, Any] = {"echo": settings.db_echo}
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        # One connection: SQLite has a single writer, and queueing in the pool is cheaper and
        # more predictable than "database is locked" retries between several connections.
        kwargs.update(pool_size=1, max_overflow=0, pool_timeout=60)
        engine = create_async_engine(url, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
        _add_sqlite_readers(engine, settings.sqlite_read_connections)
        return engine
    engine = _postgres_engine(
        url, settings, pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow
    )
    _add_custom_planned(engine, settings)
    return engine


def _postgres_engine(
    url: str | URL, settings: Settings, *, pool_size: int, max_overflow: int, **options: Any
) -> AsyncEngine:
    """An engine on Postgres with the pool settings (none with DB_NULL_POOL) and the
    connection error handling every one of them needs."""
    kwargs: dict[str, Any] = {
        "echo": settings.db_echo,
        "connect_args": dict(settings.sqlalchemy_connect_args),
        **options,
    }
    if settings.db_null_pool:
        kwargs["poolclass"] = NullPool
    else:
        kwargs.update(
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=settings.db_pool_timeout,
            pool_pre_ping=settings.db_pool_pre_ping,
        )
    engine = create_async_engine(url, **kwargs)
    event.listen(engine.sync_engine, "do_connect", _postgres_connect)
    event.listen(engine.sync_engine, "handle_error", _postgres_error)
    return engine


# The driver's errors that say the connection is gone or out of step, not that the database
# refused a statement: the connection cannot be used again, and the request may be retried.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    # "connection is closed", "another operation is in progress", and the rest of the family.
    asyncpg.InterfaceError,
    # The protocol out of step after the server went away mid-exchange ("cannot switch to
    # state 12"). Not an InterfaceError, and SQLAlchemy's adapter passes it on unwrapped.
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.AdminShutdownError,  # 57P01: pg_terminate_backend, a fast shutdown
    asyncpg.CrashShutdownError,  # 57P02
    asyncpg.CannotConnectNowError,  # 57P03: starting up or shutting down
    OSError,  # the socket: reset, broken pipe, refused, unknown host, timed out
)


def _error_chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what it wraps: SQLAlchemy's wrapper, the adapter's error, the driver's, its
    cause (a DBAPIError's `orig`, any other's `__cause__`)."""
    current: BaseException | None = exc
    for _ in range(4):
        if current is None:
            return
        yield current
        current = current.orig if isinstance(current, DBAPIError) else current.__cause__


def is_connection_error(exc: BaseException) -> bool:
    """Whether `exc` says the database connection is lost or unusable: one of the driver's
    connection errors, raised as it is or wrapped by SQLAlchemy (a DBAPIError whose `orig` is
    the adapter's error class, caused by the driver's), or a DBAPIError SQLAlchemy already
    counted as a disconnect."""
    return any(
        isinstance(current, _CONNECTION_ERRORS)
        or (isinstance(current, DBAPIError) and current.connection_invalidated)
        for current in _error_chain(exc)
    )


def is_write_refused(exc: BaseException) -> bool:
    """Whether `exc` is SQLite refusing a write because another connection holds the file's
    write lock or wrote since this transaction's snapshot ("database is locked": SQLITE_BUSY,
    SQLITE_BUSY_SNAPSHOT). A transaction that began DEFERRED and read first meets it at its
    first write, at once; the statement fails and the transaction goes on as it was."""
    for current in _error_chain(exc):
        code = getattr(current, "sqlite_errorcode", None)
        if isinstance(code, int):
            return code & 0xFF == sqlite3.SQLITE_BUSY  # the extended codes keep it in 8 bits
    return False


def _postgres_connect(
    dialect: Dialect, _record: ConnectionPoolEntry, cargs: Any, cparams: Any
) -> DBAPIConnection:
    """Open a connection as the dialect does; socket errors (an unknown host, a timeout), which
    the adapter lets through unwrapped, are raised as its OperationalError (SQLAlchemy reports
    that as its own OperationalError)."""
    try:
        return dialect.connect(*cargs, **cparams)
    except OSError as exc:
        dbapi = dialect.loaded_dbapi
        raise dbapi.OperationalError(str(exc) or type(exc).__name__, exc) from exc


def _postgres_error(context: ExceptionContext) -> BaseException | None:
    """A statement, commit or rollback in a session failed: when the connection is lost, it is
    invalidated (closed, never handed out again) even if the adapter did not notice, and a
    driver error the adapter did not wrap is raised as a DBAPIError, as the others are."""
    original = context.original_exception
    if not is_connection_error(original):
        return None
    context.is_disconnect = True
    if isinstance(original, DBAPIError | context.dialect.loaded_dbapi.Error):
        return None  # SQLAlchemy wraps it, and marks the wrapper invalidated
    return DBAPIError(
        context.statement, None, original, hide_parameters=True, connection_invalidated=True
    )


def _sqlite_on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
    # The sqlite3 module's own transaction handling breaks SAVEPOINT; SQLAlchemy's documented
    # recipe turns it off and emits BEGIN itself (see _sqlite_on_begin).
    dbapi_connection.isolation_level = None


# SQLite: how a transaction on the connection that writes begins (an execution option; the
# read sessions set DEFERRED). IMMEDIATE takes the write lock at BEGIN, waiting for it
# (busy_timeout) while another process writes. A DEFERRED transaction takes it at its first
# write, and when it has read before and another process wrote in between, SQLite refuses the
# write at once ("database is locked", SQLITE_BUSY_SNAPSHOT: busy_timeout does not apply), so a
# request that looked its caller up first would fail. One process has one such connection, so
# IMMEDIATE changes nothing within a process.
SQLITE_BEGIN = "chat_store_sqlite_begin"


def _sqlite_on_begin(connection: Connection) -> None:
    mode = connection.get_execution_options().get(SQLITE_BEGIN, "IMMEDIATE")
    connection.exec_driver_sql(f"BEGIN {mode}")


def without_write_lock(engine: AsyncEngine) -> AsyncEngine:
    """`engine` for work that only reads: on SQLite its transactions begin DEFERRED and take
    no write lock (so they neither wait for another process's write nor hold one up); the
    same engine otherwise."""
    return engine.execution_options(**{SQLITE_BEGIN: "DEFERRED"})


def begins_without_write_lock(db: AsyncSession) -> bool:
    """Whether `db` is a SQLite session whose transactions begin DEFERRED (a read's): its first
    write is refused at once, not waited for, when another process holds the write lock or
    wrote since the transaction's first read."""
    bind = db.get_bind()
    return (
        bind.dialect.name == "sqlite"
        and bind.get_execution_options().get(SQLITE_BEGIN) == "DEFERRED"
    )


def runs_in_autocommit(db: AsyncSession) -> bool:
    """Whether each statement of `db` commits by itself (a read's session on Postgres)."""
    return db.get_bind().get_execution_options().get("isolation_level") == "AUTOCOMMIT"


def _sqlite_reader_on_begin(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN")  # read-only connections (query_only) never write


def _sqlite_reader_on_connect(
    dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry
) -> None:
    _sqlite_on_connect(dbapi_connection, record)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only=ON")
    cursor.close()


# SQLite: each writer engine's read-only sessions (see `read_only`), by the writer's pool: the
# engine's variants with other execution options (the read sessions' DEFERRED) share its pool.
# (Engine.dispose() replaces the pool; the engines here are disposed at shutdown only.)
_SQLITE_READERS: weakref.WeakKeyDictionary[Pool, async_sessionmaker[AsyncSession]] = (
    weakref.WeakKeyDictionary()
)


def _add_sqlite_readers(engine: AsyncEngine, connections: int) -> None:
    """A pool of read-only connections to the same file, disposed with `engine`. (An in-memory
    database is one connection's own: it has none.)"""
    database = engine.url.database
    if not database or database == ":memory:" or engine.url.query.get("mode") == "memory":
        return
    readers = create_async_engine(
        engine.url, echo=engine.echo, pool_size=connections, max_overflow=0, pool_timeout=60
    )
    event.listen(readers.sync_engine, "connect", _sqlite_reader_on_connect)
    event.listen(readers.sync_engine, "begin", _sqlite_reader_on_begin)
    # Called inside AsyncEngine.dispose()'s greenlet: the readers' connections close there too.
    event.listen(engine.sync_engine, "engine_disposed", lambda _: readers.sync_engine.dispose())
    _SQLITE_READERS[engine.sync_engine.pool] = create_sessionmaker(readers)


@asynccontextmanager
async def read_only(db: AsyncSession) -> AsyncIterator[AsyncSession]:
    """A session for reads that need not see `db`'s own uncommitted writes and may run beside
    other requests' reads: on SQLite one of the read-only connections (its transaction one
    snapshot of what is committed), so concurrent reads do not queue for the one connection
    that writes; on Postgres `db` itself, whose pool has a connection per request anyway."""
    bind = db.get_bind()
    readers = _SQLITE_READERS.get(bind.pool) if isinstance(bind, Engine) else None
    if readers is None:
        yield db
        return
    async with readers() as session:
        yield session


async def run_to_the_end(work: Awaitable[T]) -> T:
    """Await `work`, a short piece of database work with a session of its own, letting it run
    to its end if the caller is cancelled meanwhile (a live stream or an export whose client
    went away): the caller's CancelledError comes at once, the work ends on its own. Cut inside
    the driver, a statement makes the pool throw its connection away (on SQLite the process's
    one connection that writes) and leaves the connection's close pending."""
    task = asyncio.ensure_future(work)
    _RUNNING_TO_THE_END.add(task)
    task.add_done_callback(_ended)
    return await asyncio.shield(task)


# The work of run_to_the_end under way, held so that it is not collected once its caller left.
_RUNNING_TO_THE_END: set[asyncio.Future[Any]] = set()


def _ended(task: asyncio.Future[Any]) -> None:
    _RUNNING_TO_THE_END.discard(task)
    # Once its caller was cancelled nobody awaits it: its error is not one to report.
    if not task.cancelled():
        task.exception()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def create_read_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for GET requests. On Postgres they run in autocommit: a read needs no
    BEGIN/COMMIT round trips, and each statement sees committed data as it would anyway under
    READ COMMITTED. (SQLite keeps its transactions: its single connection is the lock; they
    begin DEFERRED, taking no write lock, see SQLITE_BEGIN.)
    A GET path must therefore not open a SAVEPOINT; conflicts there use ON CONFLICT instead."""
    if engine.dialect.name != "postgresql":
        return create_snapshot_sessionmaker(engine)
    return create_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"))


def create_snapshot_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for reads that keep a transaction (a live stream's reads of the store, which may
    need one snapshot: read_snapshot): on Postgres the writing engine's own sessions, on SQLite
    the same without its write lock, so that they do not hold up another process's writes."""
    if engine.dialect.name != "postgresql":
        return create_sessionmaker(without_write_lock(engine))
    return create_sessionmaker(engine)


async def add_row(db: AsyncSession, row: Row) -> Row:
    """Insert a new ORM row now: flushed, so its defaults are set and a constraint it breaks
    raises here, at the statement that broke it."""
    db.add(row)
    await db.flush()
    return row


async def read_snapshot(db: AsyncSession) -> None:
    """Make every statement of `db` read one snapshot of the database; call it before the first.

    On Postgres each statement of a READ COMMITTED transaction (or of an autocommit session)
    sees what committed before it started, so a version read by one statement and the rows read
    by the next may disagree; a REPEATABLE READ, READ ONLY transaction sees one point in time
    (BEGIN ISOLATION LEVEL ... is the same one round trip as BEGIN). SQLite's transaction is a
    snapshot already (WAL, and its one connection)."""
    if db.get_bind().dialect.name == "postgresql":
        await db.connection(
            execution_options={"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
        )


# Postgres: sessions on connections that plan every statement for its values (see
# `planned_for_its_values`), by the pool of the engine they serve: that engine's variants with
# other execution options (the read sessions' autocommit) share its pool.
_CUSTOM_PLANNED: weakref.WeakKeyDictionary[Pool, async_sessionmaker[AsyncSession]] = (
    weakref.WeakKeyDictionary()
)


def _add_custom_planned(engine: AsyncEngine, settings: Settings) -> None:
    """A pool of autocommit connections to the same database, each set up once when opened to
    plan every statement for its values and without JIT, disposed with `engine`."""
    planned = _postgres_engine(
        engine.url,
        settings,
        pool_size=settings.db_search_pool_size,
        max_overflow=0,
        isolation_level="AUTOCOMMIT",
    )
    event.listen(planned.sync_engine, "connect", _postgres_planned_on_connect)
    event.listen(engine.sync_engine, "engine_disposed", lambda _: planned.sync_engine.dispose())
    _CUSTOM_PLANNED[engine.sync_engine.pool] = create_sessionmaker(planned)


def _postgres_planned_on_connect(
    dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry
) -> None:
    # Statements (not startup parameters, which a pooler such as PgBouncer may refuse).
    cursor = dbapi_connection.cursor()
    cursor.execute("SET plan_cache_mode = force_custom_plan")
    # A search runs for milliseconds; compiling it (when a branch that does not run is costed
    # high) takes 20 ms or more.
    cursor.execute("SET jit = off")
    cursor.close()


@asynccontextmanager
async def planned_for_its_values(db: AsyncSession) -> AsyncIterator[AsyncSession]:
    """A session whose statements Postgres plans for the values they are given.

    The driver prepares every statement, and after five executions Postgres may reuse one plan
    made without the values. That suits a statement whose best plan does not depend on them;
    a search's does: which of its filters are selective (a session, a role, dates) and so which
    index serves them depends on the values. (Whether a common word is read newest first or
    from the GIN index, the statement decides itself: crud/search/postgres.py.)

    On Postgres the session is one of the engine's search connections (`DB_SEARCH_POOL_SIZE`),
    set up so once when opened: a search costs its one round trip, where a `SET` and a `RESET`
    around it on the request's connection cost two more. Its statements run in autocommit, so
    they see what is committed, not `db`'s own pending writes: for reads only. Elsewhere
    (SQLite, or an engine not made by create_engine, which has no search pool) it is `db`
    itself."""
    bind = db.get_bind()
    planned = _CUSTOM_PLANNED.get(bind.pool) if isinstance(bind, Engine) else None
    if planned is None:
        yield db
        return
    async with planned() as session:
        yield session


_REQUIRED = object()
_ENGINE_LOG = logging.getLogger("sqlalchemy.engine.Engine")


class DriverStatement:
    """A Core statement compiled once for asyncpg: the SQL SQLAlchemy sends, with the bind and
    result processors of its types, for the driver's connection to run.

    SQLAlchemy's work around one statement (the session's transaction, the execution context,
    the result object, each step through a greenlet) costs more CPU than the driver's own: in a
    one-statement append about 0.5 ms of the 0.75 ms the statement takes in the session
    (docs/benchmarks.md). Only statements whose SQL is the same on every execution: no
    "expanding" IN, nothing rendered per execution.
    """

    __slots__ = ("_binds", "_results", "sql")

    def __init__(self, statement: Statement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        if compiled.positiontup is None or "POSTCOMPILE" in compiled.string:
            raise ValueError("the statement's SQL is not the same on every execution")
        self.sql = compiled.string
        self._binds = tuple(
            (
                name,
                _REQUIRED if bind.required else bind.effective_value,
                bind.type.dialect_impl(dialect).bind_processor(dialect),
            )
            for name in compiled.positiontup
            for bind in (compiled.binds[name],)
        )
        self._results = tuple(
            (str(key), column.type.dialect_impl(dialect).result_processor(dialect, None))
            for key, column in statement.exported_columns.items()
        )

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        arguments = []
        for name, default, processor in self._binds:
            value = params[name] if default is _REQUIRED else params.get(name, default)
            arguments.append(value if processor is None else processor(value))
        return arguments

    def row(self, record: Sequence[Any]) -> dict[str, Any]:
        return {
            key: value if processor is None else processor(value)
            for (key, processor), value in zip(self._results, record, strict=True)
        }


@functools.lru_cache(maxsize=32)
def _driver_statement(statement: Statement, dialect: Dialect) -> DriverStatement:
    return DriverStatement(statement, dialect)


# A statement that returns rows: a SELECT, or an INSERT/UPDATE/DELETE with RETURNING.
Statement: TypeAlias = Select[Any] | UpdateBase

# Several statements run in the session that do what one statement does where the dialect
# can (their first row by column key, or None).
Steps: TypeAlias = Callable[[AsyncSession, dict[str, Any]], Awaitable[Mapping[str, Any] | None]]


@dataclass(frozen=True, slots=True)
class ByDialect:
    """One operation written for each dialect: SQLite has no data-modifying WITH, and its own
    ON CONFLICT. Its forms take the same parameters and give the same row."""

    postgresql: Statement
    sqlite: Statement | Steps


async def fetch_one(
    db: AsyncSession,
    statement: Statement | ByDialect,
    params: dict[str, Any],
    *,
    standalone: bool = False,
) -> Mapping[str, Any] | None:
    """Run `statement` (its form for the session's dialect) and return its first row by column
    key, or None.

    `standalone`: the write may be committed by itself, at once: nothing the request does after
    it has to be undone with it or to see the database under its locks. On Postgres, when
    nothing has run in this session yet, it then runs on a pooled connection's driver in
    autocommit (see `_fetch_on_driver`); the session stays as it was. Otherwise, and always on
    SQLite (its one connection is the write lock), it runs in the session's transaction."""
    dialect = db.get_bind().dialect.name
    if isinstance(statement, ByDialect):
        chosen = statement.postgresql if dialect == "postgresql" else statement.sqlite
        if not isinstance(chosen, (Select, UpdateBase)):
            return await chosen(db, params)
        statement = chosen
    if standalone and dialect == "postgresql" and not db.in_transaction():
        return await _fetch_on_driver(db, statement, params)
    row = (await db.execute(statement, params)).first()
    return None if row is None else cast(Mapping[str, Any], row._mapping)


async def _fetch_on_driver(
    db: AsyncSession, statement: Statement, params: Mapping[str, Any]
) -> dict[str, Any] | None:
    """Run one statement on a pooled connection of the session's engine, through the driver
    itself, which runs it in autocommit: it commits by itself, with no BEGIN and no COMMIT round
    trip, and its row locks end with it. Returns its first row by column key, or None. The
    connection is back in the pool before this returns; the session is left as it was (its
    after-commit hooks run as usual when it commits). Failures are reported as SQLAlchemy
    reports them (DBAPIError), so the API answers them the same way (a lost connection: 503)."""
    engine = db.bind
    assert isinstance(engine, AsyncEngine)
    dialect = engine.dialect
    try:
        pooled = await engine.raw_connection()
    except dialect.loaded_dbapi.Error as exc:  # could not connect, e.g. too many clients
        raise DBAPIError.instance(
            None, None, exc, dialect.loaded_dbapi.Error, hide_parameters=True, dialect=dialect
        ) from exc
    driver: asyncpg.Connection = pooled.driver_connection
    try:
        # Compiled once the pool has connected: the dialect knows the server then.
        driver_statement = _driver_statement(statement, dialect)
        arguments = driver_statement.arguments(params)
    except BaseException:
        await greenlet_spawn(pooled.close)
        raise
    if engine.echo:  # DB_ECHO: logged where SQLAlchemy logs the statements it runs
        _ENGINE_LOG.info("%s [on the driver, autocommit]", driver_statement.sql)
    try:
        record = await driver.fetchrow(driver_statement.sql, *arguments)
    except Exception as exc:
        if is_connection_error(exc) or driver.is_closed():
            # The connection was lost (a restart, a terminated backend): as SQLAlchemy does on
            # a disconnect, every connection the pool opened before now is replaced, not only
            # this one.
            engine.sync_engine.pool._invalidate(pooled, exc)
            raise _statement_error(driver_statement.sql, exc, invalidated=True) from exc
        if isinstance(exc, asyncpg.PostgresError):
            # The database refused the statement; the connection is as good as before.
            await greenlet_spawn(pooled.close)
            raise _statement_error(driver_statement.sql, exc) from exc
        pooled.invalidate()  # a fault of ours mid-exchange: the connection is not trusted
        raise
    except BaseException:
        # Cancelled (a 504, a dropped client), possibly mid-statement: not used again.
        pooled.invalidate()
        raise
    await greenlet_spawn(pooled.close)
    return None if record is None else driver_statement.row(record)


def _statement_error(sql: str, exc: Exception, *, invalidated: bool = False) -> DBAPIError:
    """A driver error as SQLAlchemy would raise it; the parameters stay out of its message."""
    kind = (
        IntegrityError if isinstance(exc, asyncpg.IntegrityConstraintViolationError) else DBAPIError
    )
    return kind(sql, None, exc, hide_parameters=True, connection_invalidated=invalidated)
