"""Alembic, driven from code: the migrations ship inside the package (chat_store/migrations)."""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, TextClause, text

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(database_url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if database_url:
        # Alembic's config is ConfigParser-based: a literal % must be doubled.
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def current_revision(database_url: str) -> str | None:
    """The revision the database is at (None before its first migration)."""
    output = io.StringIO()
    config = alembic_config(database_url)
    config.stdout = output
    command.current(config)
    # One line a head: "0009_total_tokens_bigint (head)".
    lines = output.getvalue().split()
    return lines[0] if lines else None


def resolve(revision: str) -> str:
    """A revision as given (an id, its prefix, `head`) as its full id; ValueError if none."""
    script = ScriptDirectory.from_config(alembic_config())
    try:
        found = script.get_revision(revision)
    except Exception as exc:  # alembic's own errors for an unknown or ambiguous id
        raise ValueError(f"no revision {revision!r}") from exc
    if found is None:
        raise ValueError(f"no revision {revision!r}")
    return str(found.revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


@lru_cache(maxsize=1)
def head_revisions() -> frozenset[str]:
    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


def current_revisions(connection: Connection) -> frozenset[str]:
    return frozenset(MigrationContext.configure(connection).get_current_heads())


def walk_in_batches(connection: Connection, statement: TextClause, batch: int, start: str) -> int:
    """For the migrations' backfills: run `statement` with `:after` (first `start`) and `:batch`
    until it returns nothing, each run's value (the last key of its batch) the next `:after`.
    Each run commits by itself when `connection` is in autocommit. Returns how many ran."""
    after, batches = start, 0
    while True:
        last = connection.execute(statement, {"after": after, "batch": batch}).scalar()
        if last is None:
            return batches
        after = str(last)
        batches += 1


def fill_fts5_in_batches(
    connection: Connection, source: str, fts: str, columns: tuple[str, ...], batch: int
) -> int:
    """For the migrations' SQLite backfills: index the rows of the view `source` (its key
    `rid`) into the FTS5 table `fts` in rowid order, `batch` rows per statement. (SQLite has
    one writer: the batches bound each statement's memory, not a lock.) Returns how many ran."""
    # FTS5 tables take no RETURNING: the batch's last rowid is read first.
    upto = text(
        f"SELECT max(rid) FROM (SELECT rid FROM {source} WHERE rid > :after "  # noqa: S608
        "ORDER BY rid LIMIT :batch)"
    )
    names = ", ".join(columns)
    insert = text(
        f"INSERT INTO {fts}(rowid, {names}) "  # noqa: S608
        f"SELECT rid, {names} FROM {source} WHERE rid > :after AND rid <= :upto"
    )
    after, batches = 0, 0
    while True:
        last = connection.execute(upto, {"after": after, "batch": batch}).scalar()
        if last is None:
            return batches
        connection.execute(insert, {"after": after, "upto": last})
        after = last
        batches += 1


# The indexes the migrations build CONCURRENTLY, which a failed build leaves INVALID.
CONCURRENT_INDEXES = (
    "ix_chat_session_search",
    "ix_message_search",
    "ix_message_user_id_created_at",
)


# An index is INVALID while a CREATE INDEX or REINDEX CONCURRENTLY builds it (a REINDEX
# builds `<name>_ccnew` and leaves `<name>` as it is): no index of a table with a build under
# way (pg_stat_progress_create_index) is taken for a failed one, in the two queries below.


def invalid_indexes(connection: Connection, names: tuple[str, ...]) -> list[str]:
    """Postgres: which of `names` (indexes of the current schema) a failed CREATE INDEX
    CONCURRENTLY left INVALID: never used by queries, yet seen by IF NOT EXISTS. None of a table
    with a build under way (INVALID until it ends) is among them."""
    statement = text(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE NOT i.indisvalid AND n.nspname = current_schema() AND c.relname = ANY(:names) "
        "AND NOT EXISTS "
        "(SELECT 1 FROM pg_stat_progress_create_index p WHERE p.relid = i.indrelid) "
        "ORDER BY c.relname"
    )
    return [str(name) for name in connection.execute(statement, {"names": list(names)}).scalars()]


def reindex_leftovers(connection: Connection, names: tuple[str, ...]) -> list[str]:
    """Postgres: the copies of `names` that a failed REINDEX CONCURRENTLY left behind
    (`<name>_ccnew`, `<name>_ccold`, numbered after the first), kept up to date by every write
    and used by no query."""
    statement = text(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE NOT i.indisvalid AND n.nspname = current_schema() "
        "AND c.relname ~ :pattern AND NOT EXISTS "
        "(SELECT 1 FROM pg_stat_progress_create_index p WHERE p.relid = i.indrelid) "
        "ORDER BY c.relname"
    )
    pattern = f"^({'|'.join(names)})_cc(new|old)[0-9]*$"
    return [str(name) for name in connection.execute(statement, {"pattern": pattern}).scalars()]


def drop_if_invalid(connection: Connection, index: str) -> None:
    """Postgres, in autocommit: drop `index` if a failed CREATE INDEX CONCURRENTLY left it
    INVALID, so that the build that follows (IF NOT EXISTS) makes it again."""
    if invalid_indexes(connection, (index,)):
        connection.execute(text(f'DROP INDEX CONCURRENTLY IF EXISTS "{index}"'))
