"""The part of the client that does no I/O: requests described as `Call`s, credentials, answers.

Every API method builds a `Call` (method, path, body, query, headers, and how to read a success).
The sync and async transports only send it; building requests, choosing credentials, deciding on
a token refresh and turning answers into models or errors all happen here, once.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any, Final, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx
import pydantic

from chat_store import __version__
from chat_store.client.errors import ChatStoreError, error_from_response
from chat_store.client.models import TokenPair

API_PREFIX = "/api/v1"
DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 30.0

T = TypeVar("T")
M = TypeVar("M", bound=pydantic.BaseModel)

QueryValue = str | int | float | bool | uuid.UUID | datetime | date | None


class _Unset(enum.Enum):
    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset.UNSET
"""Default of update arguments: "leave this field alone", as opposed to None ("clear it")."""

Unset = Literal[_Unset.UNSET]


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request to the API, and how to read its successful answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    json: Any = None  # None: no JSON body
    data: Mapping[str, str] | None = None  # form fields (the OAuth2 password form)
    params: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    # Send the client's credentials, and refresh the access token once on a 401.
    authenticated: bool = True
    # Statuses besides 2xx that `parse` reads itself (e.g. 503 from /health/ready).
    accept: frozenset[int] = frozenset()
    # Seconds to wait for the answer beyond the client's read timeout: a call the service
    # answers at its own time limit (a turn waited for: 202 after REQUEST_TIMEOUT_SECONDS, 30
    # by default, as the client's) must not give up just before that answer comes.
    extra_wait: float = 0.0

    def with_params(self, **params: QueryValue) -> Call[T]:
        return replace(self, params={**self.params, **query(**params)})


def path_id(value: uuid.UUID | str) -> str:
    """An id as one path segment (quoted, so no value can reach another route)."""
    return quote(str(value), safe="")


def json_value(value: Any) -> Any:
    """Make datetimes and UUIDs JSON-ready (RFC 3339 and the canonical string)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, Mapping):
        return {str(key): json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(item) for item in value]
    return value


def body(**fields: Any) -> dict[str, Any]:
    """A JSON body of the fields that were given (UNSET ones are left out, None is kept)."""
    return {name: json_value(value) for name, value in fields.items() if value is not UNSET}


def query(**values: QueryValue) -> dict[str, str]:
    """Query parameters as the API reads them; None means "not given"."""
    params: dict[str, str] = {}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            params[name] = "true" if value else "false"
        elif isinstance(value, date):  # a datetime too: RFC 3339
            params[name] = value.isoformat()
        else:
            params[name] = str(value)
    return params


def model(cls: type[M]) -> Callable[[httpx.Response], M]:
    """Read the answer as `cls`."""

    def parse(response: httpx.Response) -> M:
        return cls.model_validate_json(response.content)

    return parse


def no_content(response: httpx.Response) -> None:
    return None


def raw(response: httpx.Response) -> httpx.Response:
    return response


def default_headers(extra: Mapping[str, str] | None) -> dict[str, str]:
    headers = {"User-Agent": f"chat-store-client/{__version__}", "Accept": "application/json"}
    headers.update(extra or {})
    return headers


class ClientCore:
    """Credentials and the rules for using them, shared by both clients.

    An access token (from `login`) wins over an API key when both are held: it is what the caller
    asked for most recently. Tokens are plain attributes, so a program can keep them between runs
    and hand them back to a new client.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        access_token: str | None = None,
        refresh_token: str | None = None,
        client_id: str | None = None,
    ) -> None:
        self.api_key = api_key
        self.access_token = access_token
        self.refresh_token = refresh_token
        # Guest mode: sent as X-Client-ID when there is no other credential.
        self.client_id = client_id

    def set_tokens(self, tokens: TokenPair) -> None:
        self.access_token = tokens.access_token
        self.refresh_token = tokens.refresh_token

    def clear_tokens(self) -> None:
        self.access_token = None
        self.refresh_token = None

    def _credentials(self) -> dict[str, str]:
        if self.access_token:
            return {"Authorization": f"Bearer {self.access_token}"}
        if self.api_key:
            return {"X-API-Key": self.api_key}
        if self.client_id:
            return {"X-Client-ID": self.client_id}
        return {}

    def _build_request(
        self, http: httpx.Client | httpx.AsyncClient, call: Call[Any]
    ) -> httpx.Request:
        headers = dict(call.headers)
        if call.authenticated:
            headers.update(self._credentials())
        timeout = http.timeout
        if call.extra_wait and timeout.read is not None:
            timeout = httpx.Timeout(
                connect=timeout.connect,
                read=timeout.read + call.extra_wait,
                write=timeout.write,
                pool=timeout.pool,
            )
        return http.build_request(
            call.method,
            call.path,
            json=call.json,
            data=call.data,
            params=call.params or None,
            headers=headers,
            timeout=timeout,
        )

    def _token_sent(self, call: Call[Any]) -> str | None:
        return self.access_token if call.authenticated else None

    def _should_refresh(self, response: httpx.Response, sent: str | None) -> bool:
        """A 401 to a request that carried an access token, while a refresh token is held."""
        return response.status_code == 401 and sent is not None and self.refresh_token is not None

    def _keep_tokens(self, response: httpx.Response) -> TokenPair:
        tokens = TokenPair.model_validate_json(response.content)
        self.set_tokens(tokens)
        return tokens

    def _refresh_call(self, refresh_token: str | None = None) -> Call[TokenPair]:
        token = refresh_token or self.refresh_token
        if not token:
            raise ValueError("no refresh token: log in first, or pass refresh_token=")
        return Call(
            "POST",
            f"{API_PREFIX}/auth/refresh",
            json={"refresh_token": token},
            parse=self._keep_tokens,
            authenticated=False,
        )

    @staticmethod
    def _check(call: Call[Any], response: httpx.Response) -> None:
        """Raise the matching ChatStoreError for an error answer (its body must be read)."""
        if not response.is_success and response.status_code not in call.accept:
            raise error_from_response(response)

    def _finish(self, call: Call[T], response: httpx.Response) -> T:
        self._check(call, response)
        try:
            return call.parse(response)
        except (pydantic.ValidationError, ValueError) as exc:
            raise ChatStoreError(
                response.status_code,
                "invalid_response",
                f"Unexpected answer to {call.method} {call.path}: {exc}",
                request_id=response.headers.get("X-Request-ID"),
            ) from exc
