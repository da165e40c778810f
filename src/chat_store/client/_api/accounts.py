"""Health, accounts and their credentials: log in, refresh, the current user, API keys."""

from __future__ import annotations

from datetime import datetime

import httpx

from chat_store.client._api.common import Id
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
)
from chat_store.client._endpoint import endpoint
from chat_store.client.errors import error_from_response
from chat_store.client.models import ApiKey, ApiKeyCreated, Health, Page, Readiness, TokenPair, User


def _readiness(response: httpx.Response) -> Readiness:
    # 503 carries the same report when the service is up but not ready; anything else is an error.
    try:
        return Readiness.model_validate_json(response.content)
    except ValueError:
        if response.is_success:
            raise
        raise error_from_response(response) from None


class AccountsApi(ClientCore):
    @endpoint
    def health(self) -> Call[Health]:
        """Liveness: the server process is up."""
        return Call("GET", "/health", parse=model(Health), authenticated=False)

    @endpoint
    def ready(self) -> Call[Readiness]:
        """Readiness: `ready` is true when the database answers at the migration head."""
        return Call(
            "GET", "/health/ready", parse=_readiness, authenticated=False, accept=frozenset({503})
        )

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
    def revoke_api_key(self, key_id: Id) -> Call[None]:
        """Revoke a key at once."""
        return Call("DELETE", f"{API_PREFIX}/api-keys/{path_id(key_id)}", parse=no_content)
