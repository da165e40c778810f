"""Where the terminal client keeps its login: one JSON file in the user's config folder.

The file holds the service URL and the tokens (or an API key), so it is created with mode 0600
and replaced atomically: a crash while saving leaves the old file, never half of a new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import ModuleType

import platformdirs

fcntl: ModuleType | None
try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "CHAT_STORE_URL"
API_KEY_ENV = "CHAT_STORE_API_KEY"
CONFIG_DIR_ENV = "CHAT_STORE_CONFIG_DIR"


@dataclass(frozen=True)
class Login:
    """What `chat-store login` keeps: the URL and either tokens or an API key."""

    url: str
    email: str | None = None
    access_token: str | None = None
    refresh_token: str | None = None
    api_key: str | None = None

    def with_tokens(self, access_token: str | None, refresh_token: str | None) -> Login:
        return replace(self, access_token=access_token, refresh_token=refresh_token)

    @property
    def has_credentials(self) -> bool:
        return bool(self.access_token or self.api_key)


def config_dir() -> Path:
    """CHAT_STORE_CONFIG_DIR, or the platform's user config folder (~/.config/chat-store)."""
    configured = os.environ.get(CONFIG_DIR_ENV)
    return Path(configured) if configured else Path(platformdirs.user_config_dir("chat-store"))


def login_path() -> Path:
    return config_dir() / "login.json"


def default_url() -> str:
    return os.environ.get(URL_ENV) or DEFAULT_URL


def load() -> Login | None:
    """The saved login, or None when there is none (or it cannot be read as one)."""
    try:
        data = json.loads(login_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("url"), str):
        return None
    fields = {name: data.get(name) for name in Login.__dataclass_fields__ if name != "url"}
    if not all(value is None or isinstance(value, str) for value in fields.values()):
        return None
    return Login(url=data["url"], **fields)


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """Hold the login's lock (a file beside it, locked with flock): the chat-store processes of
    one login refresh its tokens one at a time. Where flock is missing, no lock."""
    path = login_path().with_name(".login.lock")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path, "a", encoding="utf-8") as file:
        if fcntl is None:
            yield
            return
        fcntl.flock(file.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(file.fileno(), fcntl.LOCK_UN)


def save(login: Login) -> Path:
    """Write the login with mode 0600, atomically (a temporary file renamed over the old one)."""
    path = login_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".login-", suffix=".json")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump({k: v for k, v in asdict(login).items() if v is not None}, file, indent=2)
            file.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove() -> bool:
    """Delete the saved login; whether there was one."""
    try:
        login_path().unlink()
    except FileNotFoundError:
        return False
    return True
