"""Every API method, written once as a request builder (see `_endpoint`).

To add a method: write a builder returning a `Call`, decorate it with `@endpoint` (or `@paginated`
for a list to walk), and both clients have it. Answers that are not one JSON document (Server-Sent
Events, exports) go through the transports' `_stream`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, Literal

import httpx

from chat_store.client._core import (
    API_PREFIX,
    UNSET,
    Call,
    ClientCore,
    Unset,
    body,
    model,
    no_content,
    path_id,
    query,
    raw,
)
from chat_store.client._endpoint import endpoint, paginated
from chat_store.client.errors import error_from_response
from chat_store.client.models import (
    ApiKey,
    ApiKeyCreated,
    ChatSession,
    ChatTurn,
    ClaimResult,
    ContextWindow,
    Deleted,
    Health,
    Message,
    MessageRole,
    MessageStatus,
    MessageWithLength,
    Page,
    Readiness,
    ResumePoint,
    SearchPage,
    TokenPair,
    User,
    Workspace,
)

ChatSessionStatus = Literal["active", "ended"]
Order = Literal["asc", "desc"]
WorkspaceInput = Workspace | Mapping[str, str | None]

_SESSIONS = f"{API_PREFIX}/sessions"


def _readiness(response: httpx.Response) -> Readiness:
    # 503 carries the same report when the service is up but not ready; anything else is an error.
    try:
        return Readiness.model_validate_json(response.content)
    except ValueError:
        if response.is_success:
            raise
        raise error_from_response(response) from None


class ChatStoreApi(ClientCore):
    # --- health

    @endpoint
    def health(self) -> Call[Health]:
        """Liveness: the server process is up."""
        return Call("GET", "/health", parse=model(Health), authenticated=False)

    @endpoint
    def ready(self) -> Call[Readiness]:
        """Readiness: `ready` is true when the database answers at the migration head."""
        return Call(
            "GET",
            "/health/ready",
            parse=_readiness,
            authenticated=False,
            accept=frozenset({503}),
        )

    # --- auth

    @endpoint
    def register(self, email: str, password: str, *, display_name: str | None = None) -> Call[User]:
        """Create an account (it does not log in: call `login` next)."""
        return Call(
            "POST",
            f"{API_PREFIX}/auth/register",
            json=body(
                email=email,
                password=password,
                display_name=UNSET if display_name is None else display_name,
            ),
            parse=model(User),
            authenticated=False,
        )

    @endpoint
    def login(self, email: str, password: str) -> Call[TokenPair]:
        """Log in with email and password; the client keeps the tokens and uses them from now on."""
        return Call(
            "POST",
            f"{API_PREFIX}/auth/token",
            data={"username": email, "password": password},
            parse=self._keep_tokens,
            authenticated=False,
        )

    @endpoint
    def refresh(self, refresh_token: str | None = None) -> Call[TokenPair]:
        """Trade the refresh token (the one held, or the one given) for a new pair, and keep it."""
        return self._refresh_call(refresh_token)

    @endpoint
    def logout(self, refresh_token: str | None = None) -> Call[None]:
        """Revoke the login behind the refresh token (held or given) and forget the tokens."""
        token = refresh_token or self.refresh_token
        if not token:
            raise ValueError("no refresh token: log in first, or pass refresh_token=")

        def forget(response: httpx.Response) -> None:
            if token == self.refresh_token:
                self.clear_tokens()

        return Call(
            "POST",
            f"{API_PREFIX}/auth/logout",
            json={"refresh_token": token},
            parse=forget,
            authenticated=False,
        )

    # --- the current user

    @endpoint
    def me(self) -> Call[User]:
        """The account behind the credentials."""
        return Call("GET", f"{API_PREFIX}/users/me", parse=model(User))

    @endpoint
    def update_me(
        self,
        *,
        display_name: str | Unset | None = UNSET,
        password: str | None = None,
        current_password: str | None = None,
    ) -> Call[User]:
        """Change the display name (None clears it), or the password (with current_password)."""
        return Call(
            "PATCH",
            f"{API_PREFIX}/users/me",
            json=body(
                display_name=display_name,
                password=UNSET if password is None else password,
                current_password=UNSET if current_password is None else current_password,
            ),
            parse=model(User),
        )

    @endpoint
    def delete_me(self) -> Call[None]:
        """Erase the account and everything it owns; the client forgets its tokens."""

        def forget(response: httpx.Response) -> None:
            self.clear_tokens()

        return Call("DELETE", f"{API_PREFIX}/users/me", parse=forget)

    # --- API keys

    @endpoint
    def create_api_key(
        self, name: str, *, expires_at: datetime | None = None
    ) -> Call[ApiKeyCreated]:
        """Create an API key; its secret (`key`) is in this answer only."""
        return Call(
            "POST",
            f"{API_PREFIX}/api-keys",
            json=body(name=name, expires_at=UNSET if expires_at is None else expires_at),
            parse=model(ApiKeyCreated),
        )

    @endpoint
    def list_api_keys(self) -> Call[Page[ApiKey]]:
        """The caller's keys, newest first (prefixes and last use, never the secrets)."""
        return Call("GET", f"{API_PREFIX}/api-keys", parse=model(Page[ApiKey]))

    @endpoint
    def revoke_api_key(self, key_id: uuid.UUID | str) -> Call[None]:
        """Revoke a key at once."""
        return Call("DELETE", f"{API_PREFIX}/api-keys/{path_id(key_id)}", parse=no_content)

    # --- chat sessions

    @endpoint
    def create_session(
        self,
        *,
        title: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        workspace: WorkspaceInput | None = None,
        system_prompt: str | None = None,
        id: uuid.UUID | str | None = None,
        idempotency_key: str | None = None,
    ) -> Call[ChatSession]:
        """Start a chat session. With `idempotency_key`, a retry returns the first answer."""
        return Call(
            "POST",
            _SESSIONS,
            json=body(
                id=UNSET if id is None else id,
                title=UNSET if title is None else title,
                metadata=UNSET if metadata is None else metadata,
                workspace=UNSET if workspace is None else workspace,
                system_prompt=UNSET if system_prompt is None else system_prompt,
            ),
            headers=_idempotency(idempotency_key),
            parse=model(ChatSession),
        )

    @endpoint
    def list_sessions(
        self,
        *,
        limit: int | None = None,
        order: Order | None = None,
        after: uuid.UUID | str | None = None,
        before: uuid.UUID | str | None = None,
        favorite: bool | None = None,
        status: ChatSessionStatus | None = None,
        q: str | None = None,
        repo: str | None = None,
        updated_after: datetime | None = None,
    ) -> Call[Page[ChatSession]]:
        """One page of the caller's sessions, newest activity first unless `order="asc"`."""
        return Call(
            "GET",
            _SESSIONS,
            params=query(
                limit=limit,
                order=order,
                after=after,
                before=before,
                favorite=favorite,
                status=status,
                q=q,
                repo=repo,
                updated_after=updated_after,
            ),
            parse=model(Page[ChatSession]),
        )

    @paginated
    def iter_sessions(
        self,
        *,
        order: Order | None = None,
        favorite: bool | None = None,
        status: ChatSessionStatus | None = None,
        q: str | None = None,
        repo: str | None = None,
        updated_after: datetime | None = None,
        page_size: int = 100,
    ) -> Call[Page[ChatSession]]:
        """Every session that matches the filters, in list order, fetched page by page."""
        return Call(
            "GET",
            _SESSIONS,
            params=query(
                limit=page_size,
                order=order,
                favorite=favorite,
                status=status,
                q=q,
                repo=repo,
                updated_after=updated_after,
            ),
            parse=model(Page[ChatSession]),
        )

    @endpoint
    def get_session(self, session_id: uuid.UUID | str) -> Call[ChatSession]:
        """One session."""
        return Call("GET", f"{_SESSIONS}/{path_id(session_id)}", parse=model(ChatSession))

    @endpoint
    def update_session(
        self,
        session_id: uuid.UUID | str,
        *,
        title: str | Unset | None = UNSET,
        is_favorite: bool | Unset = UNSET,
        metadata: Mapping[str, Any] | Unset = UNSET,
        workspace: WorkspaceInput | Unset | None = UNSET,
        status: ChatSessionStatus | Unset = UNSET,
        system_prompt: str | Unset | None = UNSET,
    ) -> Call[ChatSession]:
        """Change only the fields given (None clears `title`, `workspace` or `system_prompt`)."""
        return Call(
            "PATCH",
            f"{_SESSIONS}/{path_id(session_id)}",
            json=body(
                title=title,
                is_favorite=is_favorite,
                metadata=metadata,
                workspace=workspace,
                status=status,
                system_prompt=system_prompt,
            ),
            parse=model(ChatSession),
        )

    @endpoint
    def rename_session(self, session_id: uuid.UUID | str, title: str | None) -> Call[ChatSession]:
        """Set the title (None clears it)."""
        return Call(
            "PUT",
            f"{_SESSIONS}/{path_id(session_id)}",
            json={"title": title},
            parse=model(ChatSession),
        )

    @endpoint
    def set_favorite(
        self, session_id: uuid.UUID | str, is_favorite: bool | None = None
    ) -> Call[ChatSession]:
        """Set the favourite flag, or toggle it when `is_favorite` is None."""
        return Call(
            "PATCH",
            f"{_SESSIONS}/{path_id(session_id)}/favorite",
            json=None if is_favorite is None else {"is_favorite": is_favorite},
            parse=model(ChatSession),
        )

    @endpoint
    def delete_session(self, session_id: uuid.UUID | str) -> Call[Deleted]:
        """Delete a session and all its messages."""
        return Call("DELETE", f"{_SESSIONS}/{path_id(session_id)}", parse=model(Deleted))

    @endpoint
    def claim_guest(self, client_id: uuid.UUID | str) -> Call[ClaimResult]:
        """Move a guest's sessions (its X-Client-ID) to the signed-in user."""
        return Call(
            "POST",
            f"{API_PREFIX}/auth/claim",
            json={"client_id": str(client_id)},
            parse=model(ClaimResult),
        )

    # --- messages

    @endpoint
    def append_message(
        self,
        session_id: uuid.UUID | str,
        role: MessageRole,
        content: str | None = None,
        *,
        status: MessageStatus | None = None,
        partial_content: str | None = None,
        error_message: str | None = None,
        context: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        token_count: int | None = None,
        model_name: str | None = None,
        latency_ms: int | None = None,
        id: uuid.UUID | str | None = None,
        expected_last_seq: int | None = None,
        idempotency_key: str | None = None,
    ) -> Call[Message]:
        """Append a message (the server gives it the next seq). Create an answer to stream
        with `status="pending"` and no content."""
        fields = {
            "role": role,
            "content": content,
            "status": status,
            "partial_content": partial_content,
            "error_message": error_message,
            "context": context,
            "metadata": metadata,
            "token_count": token_count,
            "model": model_name,
            "latency_ms": latency_ms,
            "id": id,
            "expected_last_seq": expected_last_seq,
        }
        return Call(
            "POST",
            _messages(session_id),
            json=body(**{k: v for k, v in fields.items() if v is not None}),
            headers=_idempotency(idempotency_key),
            parse=model(Message),
        )

    @endpoint
    def append_messages(
        self,
        session_id: uuid.UUID | str,
        messages: list[Mapping[str, Any]],
        *,
        expected_last_seq: int | None = None,
        idempotency_key: str | None = None,
    ) -> Call[Page[Message]]:
        """Append several messages at once: all of them or none."""
        payload = body(
            messages=list(messages),
            expected_last_seq=UNSET if expected_last_seq is None else expected_last_seq,
        )
        return Call(
            "POST",
            f"{_messages(session_id)}/batch",
            json=payload,
            headers=_idempotency(idempotency_key),
            parse=model(Page[Message]),
        )

    @endpoint
    def list_messages(
        self,
        session_id: uuid.UUID | str,
        *,
        limit: int | None = None,
        order: Order | None = None,
        after: uuid.UUID | str | None = None,
        before: uuid.UUID | str | None = None,
        after_seq: int | None = None,
        before_seq: int | None = None,
    ) -> Call[Page[Message]]:
        """One page of a session's messages in seq order (`order="desc"`: newest first)."""
        return Call(
            "GET",
            _messages(session_id),
            params=query(
                limit=limit,
                order=order,
                after=after,
                before=before,
                after_seq=after_seq,
                before_seq=before_seq,
            ),
            parse=model(Page[Message]),
        )

    @paginated
    def iter_messages(
        self,
        session_id: uuid.UUID | str,
        *,
        order: Order | None = None,
        after_seq: int | None = None,
        page_size: int = 100,
    ) -> Call[Page[Message]]:
        """Every message of a session in seq order, fetched page by page."""
        return Call(
            "GET",
            _messages(session_id),
            params=query(limit=page_size, order=order, after_seq=after_seq),
            parse=model(Page[Message]),
        )

    @endpoint
    def get_message(
        self, session_id: uuid.UUID | str, message_id: uuid.UUID | str
    ) -> Call[Message]:
        """One message."""
        return Call("GET", _message(session_id, message_id), parse=model(Message))

    @endpoint
    def update_message(
        self,
        session_id: uuid.UUID | str,
        message_id: uuid.UUID | str,
        *,
        status: MessageStatus | Unset = UNSET,
        content: str | Unset = UNSET,
        partial_content: str | Unset = UNSET,
        error_message: str | Unset | None = UNSET,
        metadata: Mapping[str, Any] | Unset = UNSET,
        token_count: int | Unset | None = UNSET,
        latency_ms: int | Unset | None = UNSET,
    ) -> Call[Message]:
        """Change a message: status (forward only), text, error, metadata, counts."""
        return Call(
            "PATCH",
            _message(session_id, message_id),
            json=body(
                status=status,
                content=content,
                partial_content=partial_content,
                error_message=error_message,
                metadata=metadata,
                token_count=token_count,
                latency_ms=latency_ms,
            ),
            parse=model(Message),
        )

    @endpoint
    def complete_message(
        self,
        session_id: uuid.UUID | str,
        message_id: uuid.UUID | str,
        *,
        content: str | Unset = UNSET,
        token_count: int | Unset | None = UNSET,
        latency_ms: int | Unset | None = UNSET,
    ) -> Call[Message]:
        """Mark a streamed answer complete (its streamed text becomes `content`)."""
        return Call(
            "PATCH",
            _message(session_id, message_id),
            json=body(
                status="complete", content=content, token_count=token_count, latency_ms=latency_ms
            ),
            parse=model(Message),
        )

    @endpoint
    def delete_message(
        self, session_id: uuid.UUID | str, message_id: uuid.UUID | str
    ) -> Call[Deleted]:
        """Delete a message (its seq is never reused)."""
        return Call("DELETE", _message(session_id, message_id), parse=model(Deleted))

    @endpoint
    def append_delta(
        self,
        session_id: uuid.UUID | str,
        message_id: uuid.UUID | str,
        delta: str,
        offset: int,
        *,
        return_text: bool = False,
    ) -> Call[MessageWithLength]:
        """Stream `delta` into a pending/in_progress message at `offset` (code points).

        Retrying the same delta at the same offset is safe (nothing changes). By default the
        answer leaves out the text so far (`Prefer: return=minimal`), so each delta costs the
        same however long the answer grows; `length` is the stored length after it.
        """
        headers = {} if return_text else {"Prefer": "return=minimal"}
        return Call(
            "POST",
            f"{_message(session_id, message_id)}/append",
            json={"delta": delta, "offset": offset},
            headers=headers,
            parse=model(MessageWithLength),
        )

    # --- chat turns the service answers (see also `chat()`)

    @endpoint
    def send_chat(
        self,
        session_id: uuid.UUID | str,
        content: str,
        *,
        context: Mapping[str, Any] | None = None,
        model_name: str | None = None,
        system: str | None = None,
        temperature: float | None = None,
        max_output_tokens: int | None = None,
        expected_last_seq: int | None = None,
        idempotency_key: str | None = None,
    ) -> Call[ChatTurn]:
        """Send a user message and wait for the service's answer (`stream: false`): the turn
        with the answer complete, or, when the server's time limit came first (202), as it
        stands; follow the rest with `follow()`."""
        return Call(
            "POST",
            f"{_SESSIONS}/{path_id(session_id)}/chat",
            json=chat_body(
                content,
                stream=False,
                context=context,
                model_name=model_name,
                system=system,
                temperature=temperature,
                max_output_tokens=max_output_tokens,
                expected_last_seq=expected_last_seq,
            ),
            headers=_idempotency(idempotency_key),
            parse=model(ChatTurn),
        )

    @endpoint
    def cancel(self, session_id: uuid.UUID | str, message_id: uuid.UUID | str) -> Call[Message]:
        """Stop generating an answer, wherever it runs: `cancelled`, its text kept."""
        return Call("POST", f"{_message(session_id, message_id)}/cancel", parse=model(Message))

    @endpoint
    def continue_message(
        self, session_id: uuid.UUID | str, message_id: uuid.UUID | str
    ) -> Call[Message]:
        """Generate the rest of a failed or abandoned answer after its stored text; follow it
        with `follow(..., offset=len(message.text))`."""
        return Call("POST", f"{_message(session_id, message_id)}/continue", parse=model(Message))

    @endpoint
    def resume(
        self, session_id: uuid.UUID | str, *, history_limit: int | None = None
    ) -> Call[ResumePoint]:
        """Where to continue: the newest unfinished assistant message, its offset, history."""
        return Call(
            "POST",
            f"{_SESSIONS}/{path_id(session_id)}/resume",
            params=query(history_limit=history_limit),
            parse=model(ResumePoint),
        )

    @endpoint
    def fork_session(
        self,
        session_id: uuid.UUID | str,
        message_id: uuid.UUID | str,
        *,
        idempotency_key: str | None = None,
    ) -> Call[ChatSession]:
        """A new session with copies of the messages up to and including `message_id`."""
        return Call(
            "POST",
            f"{_SESSIONS}/{path_id(session_id)}/fork",
            json={"message_id": str(message_id)},
            headers=_idempotency(idempotency_key),
            parse=model(ChatSession),
        )

    @endpoint
    def context(self, session_id: uuid.UUID | str, max_tokens: int) -> Call[ContextWindow]:
        """The newest messages that fit `max_tokens` (tool calls stay with their results)."""
        return Call(
            "GET",
            f"{_SESSIONS}/{path_id(session_id)}/context",
            params=query(max_tokens=max_tokens),
            parse=model(ContextWindow),
        )

    # --- search

    @endpoint
    def search(
        self,
        q: str,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        session_id: uuid.UUID | str | None = None,
        role: MessageRole | None = None,
        repo: str | None = None,
        favorite: bool | None = None,
        status: ChatSessionStatus | None = None,
        after: datetime | date | None = None,
        before: datetime | date | None = None,
    ) -> Call[SearchPage]:
        """One page of the caller's messages and session titles that match `q` (words,
        "phrases", -excluded, or), best first. `after`/`before`: a time with an offset, or a
        date (the start of that day, UTC). The next page: `cursor=page.next_cursor`."""
        return Call(
            "GET",
            f"{API_PREFIX}/search",
            params=query(
                q=q,
                limit=limit,
                cursor=cursor,
                session_id=session_id,
                role=role,
                repo=repo,
                favorite=favorite,
                status=status,
                after=_day_or_time(after),
                before=_day_or_time(before),
            ),
            parse=model(SearchPage),
        )


def _day_or_time(value: datetime | date | None) -> datetime | str | None:
    if value is None or isinstance(value, datetime):
        return value
    return value.isoformat()


def _messages(session_id: uuid.UUID | str) -> str:
    return f"{_SESSIONS}/{path_id(session_id)}/messages"


def _message(session_id: uuid.UUID | str, message_id: uuid.UUID | str) -> str:
    return f"{_messages(session_id)}/{path_id(message_id)}"


def chat_body(
    content: str,
    *,
    stream: bool,
    context: Mapping[str, Any] | None = None,
    model_name: str | None = None,
    system: str | None = None,
    temperature: float | None = None,
    max_output_tokens: int | None = None,
    expected_last_seq: int | None = None,
) -> dict[str, Any]:
    fields = {
        "content": content,
        "context": context,
        "model": model_name,
        "system": system,
        "temperature": temperature,
        "max_output_tokens": max_output_tokens,
        "expected_last_seq": expected_last_seq,
    }
    return {**body(**{k: v for k, v in fields.items() if v is not None}), "stream": stream}


def _idempotency(key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": key} if key is not None else {}


ExportFormat = Literal["json", "jsonl", "markdown"]


def export_call(session_id: uuid.UUID | str | None, export_format: ExportFormat) -> Call[Any]:
    """A session's export (or, with no session, the account's as JSONL), read as a stream."""
    if session_id is None:
        return Call("GET", f"{API_PREFIX}/users/me/export", parse=raw, headers={"Accept": "*/*"})
    return Call(
        "GET",
        f"{_SESSIONS}/{path_id(session_id)}/export",
        params={"format": export_format},
        parse=raw,
        headers={"Accept": "*/*"},
    )
