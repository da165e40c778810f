"""A stored message has one shape: every column of the message table, once."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

from chat_store.crud.messages import StoredMessage
from chat_store.models import Message
from chat_store.models.base import attribute_columns


def test_a_stored_message_is_the_message_table_column_for_column() -> None:
    fields = [field.name for field in dataclasses.fields(StoredMessage)]
    assert fields == [attribute for attribute, _ in attribute_columns(Message)]


def test_its_columns_go_to_the_database_and_come_back_by_column_name() -> None:
    now = datetime.now(UTC)
    message = StoredMessage(
        id=uuid.uuid4(),
        session_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        seq=1,
        role="user",
        content="hi",
        partial_content=None,
        partial_length=2,
        partial_bytes=2,
        status="complete",
        error_message=None,
        context=None,
        metadata_={"k": 1},
        token_count=None,
        model=None,
        latency_ms=None,
        created_version=1,
        version=1,
        created_at=now,
        updated_at=now,
        completed_at=now,
    )
    columns = message.columns()
    assert columns["metadata"] == {"k": 1} and "metadata_" not in columns
    assert StoredMessage.from_columns(columns) == message
