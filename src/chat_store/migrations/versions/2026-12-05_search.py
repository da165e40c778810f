"""search: full-text index of message texts and session titles

Postgres: a `search_vector` tsvector column on message, kept by triggers, GIN indexes on
(user_id, vector) for messages and titles (btree_gin puts the owner in the same index), and SQL
functions that hold the text search configuration (SEARCH_LANGUAGE, `simple` by default), so the
index, the triggers and the queries cannot disagree on it.

SQLite: FTS5 tables over the message and session tables (external content: the text is not
stored twice), with the owner's id as a second column, kept by triggers.

Existing messages are indexed in batches. On Postgres each batch is its own transaction (the
table stays readable and writable while it runs; only adding the column and the trigger take the
table's lock, for a moment) and the indexes are built CONCURRENTLY. docs/operations.md says what
that costs on a large table.

Revision ID: 0003_search
Revises: 0004_archive
"""

# ruff: noqa: S608  (the SQL is put together from this file's constants only)
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import sqlalchemy as sa
from alembic import op

from chat_store.migrate import fill_fts5_in_batches, walk_in_batches

revision: str = "0003_search"
down_revision: str | None = "0004_archive"

BATCH = 5000
# The first this many characters of a text are indexed. A tsvector holds at most 1 MB, which a
# message of 1 MiB of distinct words (hashes, base64) exceeds: to_tsvector would fail, and the
# append with it. A vector of 100,000 characters stays under half of that whatever the text,
# and Postgres does not tell positions apart beyond the 16,383rd word anyway.
INDEXED_CHARS = 100_000
# Texts up to this long are shown whole in search results rather than as an excerpt.
WHOLE_TEXT_CHARS = 200
_OPEN = "('pending', 'in_progress')"


def _language() -> str:
    # SEARCH_LANGUAGE as the service reads it (the setting checks that it is a plain name).
    from chat_store.settings import get_settings

    return get_settings().search_language


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# ASCII punctuation becomes spaces, one for one (chat_store.search_query.PUNCTUATION): these
# ranges are exactly those 32 characters. regexp_replace rather than translate(), which costs
# about 80 µs on a 300-character text against 12 µs, more than to_tsvector itself.
_PUNCTUATION = "'[!-/:-@[-`{-~]'"
# The same, and the two marks of the excerpts.
_PUNCTUATION_AND_MARKS = "U&'[!-/:-@[-`{-~\\E000\\E001]'"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _upgrade_postgres(_language())
    else:
        _upgrade_sqlite(_language())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _downgrade_postgres()
    else:
        _downgrade_sqlite()


# --- Postgres


def _postgres_functions(language: str) -> list[str]:
    config = f"{_sql_literal(language)}::regconfig"
    return [
        # The document as indexed: punctuation split off, so code finds its parts.
        f"""
        CREATE OR REPLACE FUNCTION chat_store_search_vector(doc text) RETURNS tsvector
        LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
        AS $$ SELECT to_tsvector(
            {config}, regexp_replace(left(doc, {INDEXED_CHARS}), {_PUNCTUATION}, ' ', 'g')) $$
        """,
        # The query, already written with quoted terms by the service (search_query.py).
        f"""
        CREATE OR REPLACE FUNCTION chat_store_search_query(query text) RETURNS tsquery
        LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
        AS $$ SELECT websearch_to_tsquery({config}, query) $$
        """,
        # An excerpt of `doc` around the matches, in the original text, matches between
        # U+E000 and U+E001 (those of the text itself become spaces, as on SQLite).
        # ts_headline reads the punctuation-free text (so it finds what the index found); that
        # text has the original's length, so the excerpt is cut from the original at the same
        # place, marks put back in, and an ellipsis added where cut.
        f"""
        CREATE OR REPLACE FUNCTION chat_store_search_snippet(doc text, query tsquery, options text)
        RETURNS text LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
        AS $$
        DECLARE
            plain text := regexp_replace(
                left(doc, {INDEXED_CHARS}), {_PUNCTUATION_AND_MARKS}, ' ', 'g');
            -- A short text is shown whole (ts_headline would still cut it around its cover).
            marked text := ts_headline({config}, plain, query, CASE
                WHEN length(doc) <= {WHOLE_TEXT_CHARS} THEN options || ',HighlightAll=true'
                ELSE options END);
            fragment text := replace(replace(marked, U&'\\E000', ''), U&'\\E001', '');
            start integer := strpos(plain, fragment);
            original text;
            result text := '';
            taken integer := 0;
            part text;
            parts integer := 0;
        BEGIN
            IF start = 0 OR fragment = '' THEN
                RETURN marked;
            END IF;
            original := translate(
                substr(doc, start, length(fragment)), U&'\\E000\\E001', '  ');
            -- The marks come in pairs: the pieces between them alternate outside, inside.
            FOREACH part IN ARRAY regexp_split_to_array(marked, U&'[\\E000\\E001]') LOOP
                IF parts > 0 THEN
                    result := result || CASE WHEN parts % 2 = 1
                        THEN U&'\\E000' ELSE U&'\\E001' END;
                END IF;
                result := result || substr(original, taken + 1, length(part));
                taken := taken + length(part);
                parts := parts + 1;
            END LOOP;
            IF start > 1 THEN
                result := '…' || result;
            END IF;
            IF start + length(fragment) - 1 < length(doc) THEN  -- the whole text's length
                result := result || '…';
            END IF;
            RETURN result;
        END $$
        """,
        f"""
        CREATE OR REPLACE FUNCTION chat_store_search_language() RETURNS text
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT {_sql_literal(language)} $$
        """,
    ]


def _upgrade_postgres(language: str) -> None:
    # btree_gin: the owner's id and the words in one GIN index, so a common word is looked up
    # among one user's messages, not everyone's.
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
    for statement in _postgres_functions(language):
        op.execute(statement)
    op.execute("ALTER TABLE message ADD COLUMN IF NOT EXISTS search_vector tsvector")
    # Searchable once its text is final: complete, failed or cancelled. While an answer streams
    # its text is in message_chunk rows; indexing it there would rewrite the vector per delta.
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION chat_store_message_search() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.status IN {_OPEN} THEN
                NEW.search_vector := NULL;
            ELSE
                NEW.search_vector := chat_store_search_vector(
                    coalesce(NEW.content, NEW.partial_content));
            END IF;
            RETURN NEW;
        END $$
        """
    )
    op.execute("DROP TRIGGER IF EXISTS message_search_insert ON message")
    op.execute(
        f"""
        CREATE TRIGGER message_search_insert BEFORE INSERT ON message
        FOR EACH ROW WHEN (NEW.status NOT IN {_OPEN})
        EXECUTE FUNCTION chat_store_message_search()
        """
    )
    # Only when the text or the status changes: a delta (which sets status and lengths) costs
    # the WHEN test, not a new vector.
    op.execute("DROP TRIGGER IF EXISTS message_search_update ON message")
    op.execute(
        """
        CREATE TRIGGER message_search_update BEFORE UPDATE OF content, partial_content, status
        ON message FOR EACH ROW WHEN (
            OLD.status IS DISTINCT FROM NEW.status
            OR OLD.content IS DISTINCT FROM NEW.content
            OR OLD.partial_content IS DISTINCT FROM NEW.partial_content)
        EXECUTE FUNCTION chat_store_message_search()
        """
    )
    with op.get_context().autocommit_block():
        backfill_postgres(op.get_bind(), BATCH)
        op.execute(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_message_search "
            "ON message USING gin (user_id, search_vector)"
        )
        op.execute(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_chat_session_search "
            "ON chat_session USING gin (user_id, chat_store_search_vector(title))"
        )


def backfill_postgres(connection: sa.Connection, batch: int) -> int:
    """Give every final message without a vector its vector, `batch` rows per statement (each
    committed by itself in autocommit), walking the primary key. Returns how many batches ran."""
    statement = sa.text(
        f"""
        WITH batch AS (
            SELECT id FROM message WHERE id > :after ORDER BY id LIMIT :batch
        ), indexed AS (
            UPDATE message SET search_vector = chat_store_search_vector(
                coalesce(message.content, message.partial_content))
            FROM batch
            WHERE message.id = batch.id AND message.status NOT IN {_OPEN}
                AND message.search_vector IS NULL
        )
        SELECT id FROM batch ORDER BY id DESC LIMIT 1
        """
    )
    return walk_in_batches(connection, statement, batch, "00000000-0000-0000-0000-000000000000")


def _downgrade_postgres() -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_chat_session_search")
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_message_search")
    op.execute("DROP TRIGGER IF EXISTS message_search_update ON message")
    op.execute("DROP TRIGGER IF EXISTS message_search_insert ON message")
    op.execute("DROP FUNCTION IF EXISTS chat_store_message_search()")
    op.execute("ALTER TABLE message DROP COLUMN IF EXISTS search_vector")
    op.execute("DROP FUNCTION IF EXISTS chat_store_search_language()")
    op.execute("DROP FUNCTION IF EXISTS chat_store_search_snippet(text, tsquery, text)")
    op.execute("DROP FUNCTION IF EXISTS chat_store_search_query(text)")
    op.execute("DROP FUNCTION IF EXISTS chat_store_search_vector(text)")
    # btree_gin stays: other objects of the database may use it.


# --- SQLite


def _tokenizer(language: str) -> str:
    # unicode61 splits at punctuation and folds case, like the Postgres side; diacritics are
    # kept, as Postgres' `simple` keeps them. English adds the Porter stemmer; FTS5 ships no
    # other language's stemmer, so any other language searches as `simple` does.
    base = "unicode61 remove_diacritics 0"
    return f"porter {base}" if language == "english" else base


def _marks_removed(expression: str) -> str:
    # U+E000 and U+E001 mark the matches in snippets; none may come from the text itself.
    return f"replace(replace({expression}, char(57344), ' '), char(57345), ' ')"


def _message_body(row: str) -> str:
    text = f"substr(coalesce({row}.content, {row}.partial_content), 1, {INDEXED_CHARS})"
    return _marks_removed(text)


def _title(row: str) -> str:
    return _marks_removed(f"{row}.title")


def _message_indexed(row: str) -> str:
    return f"{row}.status NOT IN {_OPEN}"


def _title_indexed(row: str) -> str:
    return f"{row}.title IS NOT NULL"


_MESSAGE_WATCHED = ("content", "partial_content", "status", "user_id")


class _FtsIndex(NamedTuple):
    """What an FTS5 table indexes: the rows of `table` where `indexed` holds, their `text` kept
    in `column`; a change of a `watched` column indexes a row again (`text` and `indexed` write
    the SQL for a row's name: `new`, `old` or the table)."""

    table: str
    column: str
    text: Callable[[str], str]
    indexed: Callable[[str], str]
    watched: tuple[str, ...]

    @property
    def fts(self) -> str:
        return f"{self.table}_fts"

    @property
    def source(self) -> str:
        return f"{self.table}_search_source"


_FTS_INDEXES = (
    _FtsIndex("message", "body", _message_body, _message_indexed, _MESSAGE_WATCHED),
    _FtsIndex("chat_session", "title", _title, _title_indexed, ("title", "user_id")),
)


def _fts_index(index: _FtsIndex, tokenize: str) -> None:
    """An FTS5 table over `index.table`: the text in `index.column` and the owner's id in
    `owner`, so that a search matches within one owner's rows (FTS5 intersects the two),
    rather than matching everyone's and dropping the others' afterwards. External content:
    FTS5 reads the text through a view of the indexed rows and never stores it a second time;
    the triggers hand it exactly what the view shows, which an external-content table
    requires."""
    table, column, text, indexed = index.table, index.column, index.text, index.indexed
    fts, source = index.fts, index.source
    op.execute(
        f"""
        CREATE VIEW {source} AS
        SELECT rowid AS rid, {text(table)} AS {column}, user_id AS owner
        FROM {table} WHERE {indexed(table)}
        """
    )
    op.execute(
        f"""
        CREATE VIRTUAL TABLE {fts} USING fts5(
            {column}, owner, content='{source}', content_rowid='rid', tokenize={tokenize})
        """
    )
    add = f"INSERT INTO {fts}(rowid, {column}, owner)"
    remove = f"INSERT INTO {fts}({fts}, rowid, {column}, owner)"
    op.execute(
        f"""
        CREATE TRIGGER {fts}_insert AFTER INSERT ON {table} WHEN {indexed("new")} BEGIN
            {add} VALUES (new.rowid, {text("new")}, new.user_id);
        END
        """
    )
    op.execute(
        f"""
        CREATE TRIGGER {fts}_delete AFTER DELETE ON {table} WHEN {indexed("old")} BEGIN
            {remove} VALUES ('delete', old.rowid, {text("old")}, old.user_id);
        END
        """
    )
    changed = " OR ".join(f"old.{name} IS NOT new.{name}" for name in index.watched)
    op.execute(
        f"""
        CREATE TRIGGER {fts}_update AFTER UPDATE OF {", ".join(index.watched)} ON {table}
        WHEN {changed} BEGIN
            {remove} SELECT 'delete', old.rowid, {text("old")}, old.user_id
            WHERE {indexed("old")};
            {add} SELECT new.rowid, {text("new")}, new.user_id WHERE {indexed("new")};
        END
        """
    )


def _upgrade_sqlite(language: str) -> None:
    tokenize = _sql_literal(_tokenizer(language))
    for index in _FTS_INDEXES:
        _fts_index(index, tokenize)
    connection = op.get_bind()
    for index in _FTS_INDEXES:
        backfill_sqlite(connection, index.source, index.fts, index.column, BATCH)


def backfill_sqlite(
    connection: sa.Connection, source: str, fts: str, column: str, batch: int
) -> int:
    """Index the rows of `source` in rowid order, `batch` rows per statement; returns how many
    batches ran."""
    return fill_fts5_in_batches(connection, source, fts, (column, "owner"), batch)


def _downgrade_sqlite() -> None:
    for trigger in (
        "chat_session_fts_update",
        "chat_session_fts_delete",
        "chat_session_fts_insert",
        "message_fts_update",
        "message_fts_delete",
        "message_fts_insert",
    ):
        op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    op.execute("DROP TABLE IF EXISTS chat_session_fts")
    op.execute("DROP TABLE IF EXISTS message_fts")
    op.execute("DROP VIEW IF EXISTS chat_session_search_source")
    op.execute("DROP VIEW IF EXISTS message_search_source")
