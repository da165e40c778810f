"""The search index's language: which one a database's index was built in, and building it again
in another (`chat-store reindex`).

The index is built by the migrations in SEARCH_LANGUAGE, and a database keeps that language
until it is built again. The objects are those of the migrations that made them (0003_search,
0007_search_owned, 0008_search_parts), built again by those migrations' own code, so that a
rebuilt index is exactly one a new database would have.

- Postgres: the functions that hold the text search configuration are replaced in one
  transaction (new and changed texts are indexed in the new language from then on), then every
  final message's vector and every title's are computed again in batches, each committed by
  itself: the tables stay readable and writable, and until the last batch a search finds what
  is not yet rebuilt by its old words. Run again after an interruption.
- SQLite: the FTS5 tables are made again with the new tokenizer and filled, in one transaction
  (writes wait for it; nothing changes if it fails).
"""

# ruff: noqa: S608  (the SQL is put together from the migrations' constants only)

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from alembic import op
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from chat_store import migrate

BATCH = 5000
_STEMMED_ON_SQLITE = "english"  # FTS5's Porter stemmer; any other name searches as `simple`


class UnknownLanguage(ValueError):
    """A language the database has no text search configuration of."""


@dataclass(frozen=True)
class Rebuilt:
    language: str
    messages: int  # rows indexed again (Postgres: final messages; SQLite: rows of the index)
    titles: int


def effective_language(dialect: str, language: str) -> str:
    """The language an index built with SEARCH_LANGUAGE=`language` searches in: SQLite stems
    English only, and searches every other language as `simple`."""
    if dialect == "sqlite":
        return language if language == _STEMMED_ON_SQLITE else "simple"
    return language


def built_language(connection: Connection) -> str | None:
    """The language the database's index was built in; None before the search's migration."""
    if connection.dialect.name == "postgresql":
        defined = connection.execute(
            text("SELECT 1 FROM pg_proc WHERE proname = 'chat_store_search_language'")
        ).scalar()
        if defined is None:
            return None
        return str(connection.execute(text("SELECT chat_store_search_language()")).scalar_one())
    definition = connection.execute(
        text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'message_fts_0'")
    ).scalar()
    if definition is None:
        return None
    return _STEMMED_ON_SQLITE if "porter" in str(definition) else "simple"


def rebuild(connection: Connection, language: str, batch: int = BATCH) -> Rebuilt:
    """Build the search index again in `language`. `connection` must hold no transaction."""
    if connection.dialect.name == "postgresql":
        return _rebuild_postgres(connection, language, batch)
    return _rebuild_sqlite(connection, language, batch)


def _revision(revision: str) -> ModuleType:
    script = ScriptDirectory.from_config(migrate.alembic_config())
    found = script.get_revision(revision)
    assert found is not None, revision
    return found.module


def _rebuild_postgres(connection: Connection, language: str, batch: int) -> Rebuilt:
    search = _revision("0003_search")
    known = connection.execute(
        text("SELECT 1 FROM pg_ts_config WHERE cfgname = :name"), {"name": language}
    ).scalar()
    connection.commit()
    if known is None:
        raise UnknownLanguage(
            f"this Postgres server has no text search configuration {language!r} "
            "(SELECT cfgname FROM pg_ts_config lists those it has)"
        )
    with connection.begin(), Operations.context(MigrationContext.configure(connection)):
        for statement in search._postgres_functions(language):
            op.execute(statement)
    owned = _revision("0007_search_owned")
    messages = _walk(
        connection,
        f"""
        WITH batch AS (
            SELECT id FROM message WHERE id > :after ORDER BY id LIMIT :batch
        ), indexed AS (
            UPDATE message SET search_vector = {owned._message_vector("message", owned=True)}
            FROM batch
            WHERE message.id = batch.id AND message.status NOT IN ('pending', 'in_progress')
            RETURNING message.id
        )
        SELECT (SELECT id FROM batch ORDER BY id DESC LIMIT 1), (SELECT count(*) FROM indexed)
        """,
        batch,
    )
    # The title's vector is a stored generated column: computed again when its row is written.
    titles = _walk(
        connection,
        """
        WITH batch AS (
            SELECT id FROM chat_session WHERE id > :after ORDER BY id LIMIT :batch
        ), indexed AS (
            UPDATE chat_session SET title = chat_session.title
            FROM batch
            WHERE chat_session.id = batch.id AND chat_session.title IS NOT NULL
            RETURNING chat_session.id
        )
        SELECT (SELECT id FROM batch ORDER BY id DESC LIMIT 1), (SELECT count(*) FROM indexed)
        """,
        batch,
    )
    return Rebuilt(language, messages, titles)


def _walk(connection: Connection, sql: str, batch: int) -> int:
    """Run `sql` over the table in primary key order, `batch` rows a run, each run committed by
    itself; returns the rows it changed."""
    statement = text(sql)
    after, changed = "00000000-0000-0000-0000-000000000000", 0
    while True:
        last, count = connection.execute(statement, {"after": after, "batch": batch}).one()
        connection.commit()
        if last is None:
            return changed
        after, changed = str(last), changed + int(count)


def _rebuild_sqlite(connection: Connection, language: str, batch: int) -> Rebuilt:
    search = _revision("0003_search")
    parts = _revision("0008_search_parts")
    tokenize = search._sql_literal(search._tokenizer(language))
    titles = search._FTS_INDEXES[1]
    with connection.begin(), Operations.context(MigrationContext.configure(connection)):
        for part in parts.PARTS:
            parts._drop(part)
            parts._create(part, tokenize)
            parts._backfill(connection, part, batch)
        for trigger in ("update", "delete", "insert"):
            op.execute(f"DROP TRIGGER IF EXISTS {titles.fts}_{trigger}")
        op.execute(f"DROP TABLE IF EXISTS {titles.fts}")
        op.execute(f"DROP VIEW IF EXISTS {titles.source}")
        search._fts_index(titles, tokenize)
        search.backfill_sqlite(connection, titles.source, titles.fts, titles.column, batch)
        messages = sum(_count(connection, parts.names(part)[0]) for part in parts.PARTS)
        title_rows = _count(connection, titles.fts)
    return Rebuilt(effective_language("sqlite", language), messages, title_rows)


def _count(connection: Connection, table: str) -> int:
    return int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
