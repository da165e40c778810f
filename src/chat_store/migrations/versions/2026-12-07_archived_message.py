"""archived message: the ids of an archived session's messages stay taken

An archived session's messages are only in its archive object. Their ids are kept in
`archived_message` while it is archived (written by the archive's commit, removed by the
restore), so that a message created with one of them is refused (409 message_exists) as one
with a stored or deleted message's id is, and the restore never finds one of them taken. A new
table: nothing is rewritten or locked. Sessions archived before this revision have no rows in it
until they are restored (docs/operations.md, Archive).

Revision ID: 0010_archived_message
Revises: 0009_total_tokens_bigint
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0010_archived_message"
down_revision: str | None = "0009_total_tokens_bigint"


def upgrade() -> None:
    op.create_table(
        "archived_message",
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["chat_session.id"],
            name="fk_archived_message_session_id_chat_session",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", name="pk_archived_message"),
    )
    # The restore removes a session's ids, and deleting a session cascades here: both by session.
    op.create_index("ix_archived_message_session_id", "archived_message", ["session_id"])


def downgrade() -> None:
    # The archive objects hold every message: what this table kept is only a guard.
    op.drop_table("archived_message")
