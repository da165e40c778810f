"""initial schema: users, credentials, chat sessions, messages, idempotency keys

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _at(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _owner() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("user_id", sa.Uuid(), nullable=False)


def _cascade_fk(table: str, column: str, parent: str) -> sa.ForeignKeyConstraint:
    """`table`.`column` is the id of a `parent` row; the row goes when its parent does."""
    return sa.ForeignKeyConstraint(
        [column], [f"{parent}.id"], name=f"fk_{table}_{column}_{parent}", ondelete="CASCADE"
    )


def _owner_fk(table: str) -> sa.ForeignKeyConstraint:
    return _cascade_fk(table, "user_id", "user")


def _owned_table(
    name: str,
    *columns: sa.Column,  # type: ignore[type-arg]
    unique: tuple[str, ...] = (),
) -> None:
    """A table of rows one user owns: an `id` key and the owner (its rows go with the user)
    around the table's own columns; `unique`: columns unique together. (Each constraint is
    made here, in this order: SQLAlchemy emits a table's constraints in the order made.)"""
    op.create_table(
        name,
        sa.Column("id", sa.Uuid(), nullable=False),
        _owner(),
        *columns,
        _owner_fk(name),
        sa.PrimaryKeyConstraint("id", name=f"pk_{name}"),
        *([sa.UniqueConstraint(*unique, name=f"uq_{name}_{'_'.join(unique)}")] if unique else []),
    )


def upgrade() -> None:
    op.create_table(
        "user",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=True),
        sa.Column("is_guest", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        _at("created_at"),
        _at("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_user"),
        sa.UniqueConstraint("email", name="uq_user_email"),
    )
    _owned_table(
        "api_key",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        _at("expires_at", nullable=True),
        _at("last_used_at", nullable=True),
        _at("created_at"),
        unique=("key_hash",),
    )
    op.create_index("ix_api_key_user_id", "api_key", ["user_id"])
    _owned_table(
        "refresh_token",
        sa.Column("family_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        _at("expires_at"),
        _at("used_at", nullable=True),
        _at("revoked_at", nullable=True),
        _at("created_at"),
        unique=("token_hash",),
    )
    op.create_index("ix_refresh_token_user_id", "refresh_token", ["user_id"])
    op.create_index("ix_refresh_token_family_id", "refresh_token", ["family_id"])
    _owned_table(
        "chat_session",
        sa.Column("title", sa.String(400), nullable=True),
        sa.Column("is_favorite", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("status", sa.String(16), server_default="active", nullable=False),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("workspace_repo", sa.String(500), nullable=True),
        sa.Column("workspace_branch", sa.String(500), nullable=True),
        sa.Column("workspace_path", sa.String(2000), nullable=True),
        sa.Column("message_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("total_tokens", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_seq", sa.Integer(), server_default="0", nullable=False),
        sa.Column("history_version", sa.Integer(), server_default="0", nullable=False),
        sa.Column("updated_version", sa.Integer(), server_default="0", nullable=False),
        _at("last_message_at", nullable=True),
        _at("last_activity_at"),
        _at("created_at"),
        _at("updated_at"),
        _at("ended_at", nullable=True),
    )
    # The session list: per owner, newest activity first, keyset on (last_activity_at, id).
    op.create_index(
        "ix_chat_session_user_activity", "chat_session", ["user_id", "last_activity_at", "id"]
    )
    # Retention: sessions idle since a cut-off, across all owners.
    op.create_index("ix_chat_session_last_activity_at", "chat_session", ["last_activity_at"])
    op.create_table(
        "message",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("session_id", sa.Uuid(), nullable=False),
        _owner(),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text(), nullable=True),
        sa.Column("partial_content", sa.Text(), nullable=True),
        sa.Column("partial_length", sa.Integer(), server_default="0", nullable=False),
        sa.Column("partial_bytes", sa.Integer(), server_default="0", nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("context", JSON, nullable=True),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("token_count", sa.Integer(), nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("created_version", sa.Integer(), server_default="0", nullable=False),
        sa.Column("version", sa.Integer(), server_default="0", nullable=False),
        _at("created_at"),
        _at("updated_at"),
        _at("completed_at", nullable=True),
        _cascade_fk("message", "session_id", "chat_session"),
        _owner_fk("message"),
        sa.PrimaryKeyConstraint("id", name="pk_message"),
        # The per-session cursor, and the index behind every history read.
        sa.UniqueConstraint("session_id", "seq", name="uq_message_session_id_seq"),
    )
    op.create_index("ix_message_user_id", "message", ["user_id"])
    op.create_table(
        "message_chunk",
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("start", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        _cascade_fk("message_chunk", "message_id", "message"),
        sa.PrimaryKeyConstraint("message_id", "start", name="pk_message_chunk"),
    )
    op.create_table(
        "message_tombstone",
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        _cascade_fk("message_tombstone", "session_id", "chat_session"),
        sa.PrimaryKeyConstraint("message_id", name="pk_message_tombstone"),
    )
    op.create_index(
        "ix_message_tombstone_session_id_version", "message_tombstone", ["session_id", "version"]
    )
    _owned_table(
        "idempotency_key",
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("response_body", sa.Text(), nullable=False),
        _at("created_at"),
        _at("expires_at"),
        unique=("user_id", "key"),
    )
    op.create_index("ix_idempotency_key_expires_at", "idempotency_key", ["expires_at"])


def downgrade() -> None:
    op.drop_table("idempotency_key")
    op.drop_table("message_tombstone")
    op.drop_table("message_chunk")
    op.drop_table("message")
    op.drop_table("chat_session")
    op.drop_table("refresh_token")
    op.drop_table("api_key")
    op.drop_table("user")
