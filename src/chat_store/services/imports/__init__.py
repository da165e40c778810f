"""Import: a chat-store/1 export, one ChatGPT conversation, or a plain list of messages becomes
one session, all of it or nothing.

The same source conversation imported twice is the same session: its fingerprint (SHA-256 of
the conversation as validated, ids and the export time left out) is kept on the session, unique
per owner, and a second import answers the session the first one made.
"""

from chat_store.services.imports.chatgpt import current_branch
from chat_store.services.imports.files import SourceFile, Unreadable, open_source, owner_id
from chat_store.services.imports.formats import detect_format, parse
from chat_store.services.imports.spec import ImportSpec
from chat_store.services.imports.storing import import_chat_session, import_document

__all__ = [
    "ImportSpec",
    "SourceFile",
    "Unreadable",
    "current_branch",
    "detect_format",
    "import_chat_session",
    "import_document",
    "open_source",
    "owner_id",
    "parse",
]
