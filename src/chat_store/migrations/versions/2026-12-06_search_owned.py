"""search owned: each message's words indexed under its owner, one GIN list per user and word;
titles' vectors stored

Postgres only (SQLite's FTS5 tables are untouched). Until now `ix_message_search` was a GIN
index on (user_id, search_vector): a search looked up the owner's list (every message of the
user: 50,000 entries for a user with 50,000 messages) and each word's list (every user's
messages with it) and intersected them, 2 to 10 ms for words that are common across all users,
whatever the user's own matches. Now every word of `search_vector` carries a tag of its owner
(`<the last 3 bytes of user_id in base64><word>`, positions kept), and the GIN index is on the
vector alone: the list of a tagged word holds that user's messages with it and no one else's.

The tag only narrows the index lookup: searches still compare user_id, so two users whose ids
end alike merely share lists. Queries are tagged the same way (chat_store_owned_query); excerpts
(ts_headline) read the text with the untagged query.

Each existing message's vector is computed again from its text in batches, each its own
transaction, between dropping the old index and building the new one CONCURRENTLY: the table
stays readable and writable throughout, and searches made meanwhile (by either version of the
service) miss the messages not yet rewritten (docs/operations.md, "Search").

Revision ID: 0007_search_owned
Revises: 0006_search_recent
"""

# ruff: noqa: S608  (the SQL is put together from this file's constants only)

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from chat_store.migrate import walk_in_batches

revision: str = "0007_search_owned"
down_revision: str | None = "0006_search_recent"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 5000
_OPEN = "('pending', 'in_progress')"
# The owner's tag: the last 3 bytes of its id (random in a UUIDv7) in base64, 4 characters
# (2^24 tags), put before each word without a separator (the tag's length is fixed). Each
# character costs a byte per distinct word of every message: about 40 a message here.
_TAG = "encode(substr(uuid_send(owner), 14, 3), 'base64')"

_FUNCTIONS = [
    # The tagged vector: every lexeme of tsvector's text form starts after a space with a
    # quote (to_tsvector's lexemes hold no spaces), so one replace tags them all, positions
    # kept. About 25 µs for a 300-character message, half what to_tsvector takes.
    f"""
    CREATE OR REPLACE FUNCTION chat_store_owned_vector(owner uuid, vector tsvector)
    RETURNS tsvector LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT replace(' ' || vector::text, ' ''', ' ''' || {_TAG})::tsvector $$
    """,
    # The tagged query: each quoted lexeme of tsquery's text form (quotes inside doubled).
    f"""
    CREATE OR REPLACE FUNCTION chat_store_owned_query(owner uuid, query tsquery)
    RETURNS tsquery LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT regexp_replace(
        query::text, '''((?:[^'']|'''')*)''', '''' || {_TAG} || '\\1''', 'g')::tsquery $$
    """,
]


def _message_vector(row: str, *, owned: bool) -> str:
    vector = f"chat_store_search_vector(coalesce({row}.content, {row}.partial_content))"
    return f"chat_store_owned_vector({row}.user_id, {vector})" if owned else vector


def _trigger_function(*, owned: bool) -> str:
    return f"""
    CREATE OR REPLACE FUNCTION chat_store_message_search() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.status IN {_OPEN} THEN
            NEW.search_vector := NULL;
        ELSE
            NEW.search_vector := {_message_vector("NEW", owned=owned)};
        END IF;
        RETURN NEW;
    END $$
    """


def _update_trigger(*, owned: bool) -> str:
    # The owner is part of the vector now: a change of owner indexes the row again.
    columns = "content, partial_content, status" + (", user_id" if owned else "")
    owner = " OR OLD.user_id IS DISTINCT FROM NEW.user_id" if owned else ""
    return f"""
    CREATE TRIGGER message_search_update BEFORE UPDATE OF {columns}
    ON message FOR EACH ROW WHEN (
        OLD.status IS DISTINCT FROM NEW.status
        OR OLD.content IS DISTINCT FROM NEW.content
        OR OLD.partial_content IS DISTINCT FROM NEW.partial_content{owner})
    EXECUTE FUNCTION chat_store_message_search()
    """


_TITLE_EXPRESSION = "ix_chat_session_search ON chat_session USING gin (user_id, {vector})"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in _FUNCTIONS:
        op.execute(statement)
    _switch(owned=True, index="ix_message_search ON message USING gin (search_vector)")
    # Titles: the vector stored (a generated column), so that ranking a title does not compute
    # it again (17 µs a title: `the` is in 300 of a user's 500 titles here). Adding it rewrites
    # chat_session under its lock: a second for 100,000 sessions.
    op.execute(
        "ALTER TABLE chat_session ADD COLUMN IF NOT EXISTS search_vector tsvector "
        "GENERATED ALWAYS AS (chat_store_search_vector(title)) STORED"
    )
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_chat_session_search")
        index = _TITLE_EXPRESSION.format(vector="search_vector")
        op.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {index}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_chat_session_search")
        index = _TITLE_EXPRESSION.format(vector="chat_store_search_vector(title)")
        op.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {index}")
    op.execute("ALTER TABLE chat_session DROP COLUMN IF EXISTS search_vector")
    _switch(owned=False, index="ix_message_search ON message USING gin (user_id, search_vector)")
    op.execute("DROP FUNCTION IF EXISTS chat_store_owned_query(uuid, tsquery)")
    op.execute("DROP FUNCTION IF EXISTS chat_store_owned_vector(uuid, tsvector)")


def _switch(*, owned: bool, index: str) -> None:
    """New rows get the new form at once (the trigger), then the index goes, the existing rows
    are rewritten, and the new index is built."""
    op.execute(_trigger_function(owned=owned))
    op.execute("DROP TRIGGER IF EXISTS message_search_update ON message")
    op.execute(_update_trigger(owned=owned))
    with op.get_context().autocommit_block():
        # Without the index while rewriting: a GIN index kept up to date row by row would cost
        # more than building it once after.
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_message_search")
        rewrite_vectors(op.get_bind(), BATCH, owned=owned)
        op.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {index}")


def rewrite_vectors(connection: sa.Connection, batch: int, *, owned: bool) -> int:
    """Compute every final message's vector again from its text, `batch` rows per statement
    (each committed by itself in autocommit), walking the primary key; again from the start
    if interrupted. Returns how many batches ran."""
    statement = sa.text(
        f"""
        WITH batch AS (
            SELECT id FROM message WHERE id > :after ORDER BY id LIMIT :batch
        ), indexed AS (
            UPDATE message SET search_vector = {_message_vector("message", owned=owned)}
            FROM batch
            WHERE message.id = batch.id AND message.status NOT IN {_OPEN}
        )
        SELECT id FROM batch ORDER BY id DESC LIMIT 1
        """
    )
    return walk_in_batches(connection, statement, batch, "00000000-0000-0000-0000-000000000000")
