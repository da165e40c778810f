"""Chat sessions: create, list, change, delete; a guest's sessions claimed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Unpack

from chat_store.client._api.common import (
    SESSIONS,
    Id,
    SessionChanges,
    SessionFilters,
    SessionPage,
    WorkspaceInput,
    chat_session_path,
    idempotency_headers,
)
from chat_store.client._core import API_PREFIX, Call, ClientCore, body, model, query
from chat_store.client._endpoint import endpoint, paginated
from chat_store.client.models import ChatSession, ClaimResult, Deleted, Page


class ChatSessionsApi(ClientCore):
    @endpoint
    def create_session(
        self,
        *,
        title: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        workspace: WorkspaceInput | None = None,
        system_prompt: str | None = None,
        id: Id | None = None,
        idempotency_key: str | None = None,
    ) -> Call[ChatSession]:
        """Start a chat session. With `idempotency_key`, a retry returns the first answer."""
        given = {"title": title, "metadata": metadata, "workspace": workspace, "id": id}
        given["system_prompt"] = system_prompt
        return Call(
            "POST",
            SESSIONS,
            json=body(**{name: value for name, value in given.items() if value is not None}),
            headers=idempotency_headers(idempotency_key),
            parse=model(ChatSession),
        )

    @endpoint
    def list_sessions(self, **options: Unpack[SessionPage]) -> Call[Page[ChatSession]]:
        """One page of the caller's sessions, newest activity first unless `order="asc"`."""
        return Call("GET", SESSIONS, params=query(**options), parse=model(Page[ChatSession]))

    @paginated
    def iter_sessions(
        self, *, page_size: int = 100, **filters: Unpack[SessionFilters]
    ) -> Call[Page[ChatSession]]:
        """Every session that matches the filters, in list order, fetched page by page."""
        options = query(limit=page_size, **filters)
        return Call("GET", SESSIONS, params=options, parse=model(Page[ChatSession]))

    @endpoint
    def get_session(self, session_id: Id) -> Call[ChatSession]:
        """One session."""
        return Call("GET", chat_session_path(session_id), parse=model(ChatSession))

    @endpoint
    def update_session(
        self, session_id: Id, **changes: Unpack[SessionChanges]
    ) -> Call[ChatSession]:
        """Change only the fields given (None clears `title`, `workspace` or `system_prompt`)."""
        path = chat_session_path(session_id)
        return Call("PATCH", path, json=body(**changes), parse=model(ChatSession))

    @endpoint
    def rename_session(self, session_id: Id, title: str | None) -> Call[ChatSession]:
        """Set the title (None clears it)."""
        return Call(
            "PUT", chat_session_path(session_id), json={"title": title}, parse=model(ChatSession)
        )

    @endpoint
    def set_favorite(self, session_id: Id, is_favorite: bool | None = None) -> Call[ChatSession]:
        """Set the favourite flag, or toggle it when `is_favorite` is None."""
        return Call(
            "PATCH",
            f"{chat_session_path(session_id)}/favorite",
            json=None if is_favorite is None else {"is_favorite": is_favorite},
            parse=model(ChatSession),
        )

    @endpoint
    def delete_session(self, session_id: Id) -> Call[Deleted]:
        """Delete a session and all its messages."""
        return Call("DELETE", chat_session_path(session_id), parse=model(Deleted))

    @endpoint
    def claim_guest(self, client_id: Id) -> Call[ClaimResult]:
        """Move a guest's sessions (its X-Client-ID) to the signed-in user."""
        return Call(
            "POST",
            f"{API_PREFIX}/auth/claim",
            json={"client_id": str(client_id)},
            parse=model(ClaimResult),
        )
