"""The client the terminal commands use: built from CHAT_STORE_API_KEY or the saved login, and
saving the tokens again whenever the client refreshes them."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import time
from collections.abc import Iterator

import httpx

from chat_store.client import ChatStoreClient, ChatStoreError
from chat_store.client.models import TokenPair
from chat_store.terminal import config
from chat_store.terminal.output import ExitCode, api_error, fail, unreachable_line

_EXPIRY_MARGIN_SECONDS = 10.0


class TerminalClient(ChatStoreClient):
    """A client whose tokens live in the login file: a refresh is saved at once, because the
    old refresh token is spent and the next run must present the new one."""

    def __init__(self, login: config.Login, *, persist: bool) -> None:
        super().__init__(
            login.url,
            api_key=login.api_key,
            access_token=login.access_token,
            refresh_token=login.refresh_token,
            timeout=httpx.Timeout(30.0, connect=10.0),
        )
        self.login_record = login
        self._persist = persist

    def _refresh_after_401(self, sent: str | None) -> None:
        """Refresh the tokens, unless another chat-store process of this login has done it
        already: a refresh token is spent once used, and the service takes a second use as
        theft and ends the login. Under the login's lock, tokens saved since this process read
        them are taken (and refreshed at once if their access token has expired meanwhile);
        otherwise this one refreshes, and saves before letting go.

        A login file that now holds another login (another service or account, `chat-store
        login` run since) is left alone: this process refreshes its own tokens and keeps them
        in memory, never acting as the other account nor writing its login over the new one."""
        if not self._persist:
            super()._refresh_after_401(sent)
            return
        with config.locked():
            saved = config.load()
            if saved is None or not self._same_login(saved):
                self._persist = False
                super()._refresh_after_401(sent)
                return
            if saved.refresh_token is not None and saved.refresh_token != self.refresh_token:
                self.access_token, self.refresh_token = saved.access_token, saved.refresh_token
                self.login_record = saved
                if not _expired(saved.access_token):
                    return
                sent = self.access_token
            super()._refresh_after_401(sent)

    def _same_login(self, saved: config.Login) -> bool:
        record = self.login_record
        return (saved.url, saved.email, saved.api_key) == (record.url, record.email, record.api_key)

    def set_tokens(self, tokens: TokenPair) -> None:
        super().set_tokens(tokens)
        self._save()

    def clear_tokens(self) -> None:
        super().clear_tokens()
        self._save()

    def _save(self) -> None:
        self.login_record = self.login_record.with_tokens(self.access_token, self.refresh_token)
        if self._persist:
            config.save(self.login_record)


def _expired(access_token: str | None) -> bool:
    """Whether an access token (a JWT) is past its `exp`, or within a few seconds of it, read
    without verifying it: only to spare a request the service would refuse."""
    if not access_token:
        return True
    try:
        payload = access_token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"]) <= time.time() + _EXPIRY_MARGIN_SECONDS
    except (IndexError, ValueError, KeyError, TypeError):
        return False  # not a token this can read: the service judges it


def current_login() -> config.Login | None:
    """CHAT_STORE_API_KEY wins (scripts need no login); otherwise the saved login."""
    api_key = os.environ.get(config.API_KEY_ENV)
    saved = config.load()
    if api_key:
        url = os.environ.get(config.URL_ENV) or (saved.url if saved else config.DEFAULT_URL)
        return config.Login(url=url, api_key=api_key)
    if saved is None or not saved.has_credentials:
        return None
    # The saved tokens belong to the saved URL: CHAT_STORE_URL only chooses where to log in.
    return saved


def open_client() -> TerminalClient:
    login = current_login()
    if login is None:
        fail(
            "not logged in: run `chat-store login` (or set CHAT_STORE_API_KEY)",
            ExitCode.NOT_LOGGED_IN,
        )
    return TerminalClient(login, persist=not os.environ.get(config.API_KEY_ENV))


@contextlib.contextmanager
def reported_errors() -> Iterator[None]:
    """Error answers and unreachable servers as one line and an exit code, never a traceback."""
    try:
        yield
    except ChatStoreError as exc:
        api_error(exc)
    except httpx.TransportError as exc:
        fail(unreachable_line(exc))
