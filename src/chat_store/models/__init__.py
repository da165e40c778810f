"""ORM models; importing this package registers every table on Base.metadata."""

from chat_store.models.archive_deletion import ArchiveDeletion
from chat_store.models.auth_token import ApiKey, RefreshToken
from chat_store.models.base import Base
from chat_store.models.chat_session import ChatSession
from chat_store.models.generation import Generation
from chat_store.models.idempotency_key import IdempotencyKey
from chat_store.models.message import ArchivedMessage, Message, MessageChunk, MessageTombstone
from chat_store.models.user import User

__all__ = [
    "ApiKey",
    "ArchiveDeletion",
    "ArchivedMessage",
    "Base",
    "ChatSession",
    "Generation",
    "IdempotencyKey",
    "Message",
    "MessageChunk",
    "MessageTombstone",
    "RefreshToken",
    "User",
]
