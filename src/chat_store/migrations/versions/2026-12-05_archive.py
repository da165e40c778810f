"""archive and import: archived_at, archive_key, restored_at, source_fingerprint on chat_session

Revision ID: 0004_archive
Revises: 0002_generation
"""

import sqlalchemy as sa
from alembic import op

revision: str = "0004_archive"
down_revision: str | None = "0002_generation"

_COLUMNS = ("archived_at", "archive_key", "restored_at", "source_fingerprint")


def upgrade() -> None:
    # Nullable columns and indexes only: both dialects add them in place (no table copy).
    op.add_column("chat_session", sa.Column("archived_at", sa.DateTime(timezone=True)))
    op.add_column("chat_session", sa.Column("archive_key", sa.String(300)))
    op.add_column("chat_session", sa.Column("restored_at", sa.DateTime(timezone=True)))
    op.add_column("chat_session", sa.Column("source_fingerprint", sa.String(64)))
    # An imported conversation is one session per owner; a unique index (not a constraint) so
    # that SQLite adds it without rebuilding the table. NULLs do not collide on either dialect.
    op.create_index(
        "uq_chat_session_user_id_source_fingerprint",
        "chat_session",
        ["user_id", "source_fingerprint"],
        unique=True,
    )
    # Archiving looks for sessions not archived yet and idle since a cut-off.
    _partial_index("ix_chat_session_archive_due", "last_activity_at", "archived_at IS NULL")
    # The few sessions with an archive object (archived, or an archive or restore unfinished).
    _partial_index("ix_chat_session_archive_key", "archive_key", "archive_key IS NOT NULL")


def _partial_index(name: str, column: str, where: str) -> None:
    """An index of chat_session's rows where `where` holds, on both dialects."""
    condition = sa.text(where)
    op.create_index(
        name, "chat_session", [column], postgresql_where=condition, sqlite_where=condition
    )


def downgrade() -> None:
    op.drop_index("ix_chat_session_archive_key", table_name="chat_session")
    op.drop_index("ix_chat_session_archive_due", table_name="chat_session")
    op.drop_index("uq_chat_session_user_id_source_fingerprint", table_name="chat_session")
    # Archived sessions' messages are only in their objects: restore them before downgrading.
    with op.batch_alter_table("chat_session") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
