"""archive deletion: archive objects of deleted sessions, deleted after the rows are gone

Deleting a session (by its owner, with its account, or by retention) deleted its archive object
before the transaction that deletes its rows committed: when that transaction was undone (a
later object refused, a timeout, a process stopped), the session stayed archived with its only
copy gone. The keys now go into `archive_deletion` in that transaction, and the objects are
deleted after it commits; what is left there is deleted by the next housekeeping run. A new
table: nothing is rewritten or locked.

Revision ID: 0012_archive_deletion
Revises: 0011_generation_handovers
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0012_archive_deletion"
down_revision: str | None = "0011_generation_handovers"


def upgrade() -> None:
    op.create_table(
        "archive_deletion",
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("refused_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name="pk_archive_deletion"),
    )


def downgrade() -> None:
    # The objects still listed here are left in the store, with no session of theirs.
    op.drop_table("archive_deletion")
