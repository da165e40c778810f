"""generation handovers: the runs of an answer that handed it over at their process's shutdown

GENERATION_MAX_ATTEMPTS gives up an answer whose runs kept dying. A run that hands its answer
over at shutdown (SIGTERM, a rolling restart) did not die, and is counted here to be left out of
that count. A plain ADD COLUMN with a constant default on both dialects: no table rewrite (on
Postgres 11 and later, and on SQLite); leases written before it count no hand-over.

Revision ID: 0011_generation_handovers
Revises: 0010_archived_message
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0011_generation_handovers"
down_revision: str | None = "0010_archived_message"


def upgrade() -> None:
    op.add_column(
        "generation",
        sa.Column("handovers", sa.Integer(), server_default="0", nullable=False),
    )


def downgrade() -> None:
    # SQLite 3.35 and later drop a column in place (no table rebuild).
    op.drop_column("generation", "handovers")
