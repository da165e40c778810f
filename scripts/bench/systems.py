"""The systems under test (chat-store, the baseline, the stack floor) and what is seeded."""

from __future__ import annotations

from dataclasses import dataclass, field

from .processes import Server


@dataclass
class Target:
    """One system under test, as the load generators see it."""

    name: str
    server: Server
    auth_header: tuple[str, str]
    sessions_path: str = "/api/v1/sessions"

    @property
    def headers(self) -> dict[str, str]:
        return {self.auth_header[0]: self.auth_header[1]}

    @property
    def wrk_auth(self) -> str:
        return f"auth={self.auth_header[0]}:{self.auth_header[1]}"


@dataclass
class Seed:
    user_id: str = ""
    api_key: str = ""
    list_user_id: str = ""
    list_api_key: str = ""
    append_sessions: list[str] = field(default_factory=list)
    contention_session: str = ""
    hot_sessions: list[str] = field(default_factory=list)
    cold_sessions: list[str] = field(default_factory=list)
    cold_keys: list[str] = field(default_factory=list)
    size_sessions: dict[int, str] = field(default_factory=dict)
    size_keys: dict[int, str] = field(default_factory=dict)
