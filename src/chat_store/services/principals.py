"""Who is calling: a JWT and an API key both resolve to one Principal.

A hot credential costs no database round trip: a verified API key (and the existence of a
JWT's user) is cached. Revoking a key or deleting a user replaces the cached entry with a
revocation marker when the change commits, and entries are only ever added where no entry is
(SET NX): a request that read the key just before the revocation cannot put it back, so in the
normal case revocation takes effect at once.

The database decides, not the cache: the marker is a best-effort write, lost when Redis is away
as it is written, and Redis may lose or give back anything it holds (a restart from a snapshot,
a FLUSHALL followed by a late write). So each positive entry carries the time its database read
began, and is used only for trust_seconds() after that, wherever it is read from; after that the
database is read again. A credential revoked in the database is therefore refused by every
process at most trust_seconds() after the revocation committed, whatever Redis did meanwhile.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from chat_store.cache import Cache
from chat_store.crud import api_keys as api_key_crud
from chat_store.crud import users as user_crud
from chat_store.db import is_write_refused
from chat_store.errors import Unauthorized
from chat_store.models import User
from chat_store.security import API_KEY_PREFIX, decode_access_token, sha256_hex
from chat_store.services import hooks
from chat_store.settings import Settings

logger = logging.getLogger(__name__)

# last_used_at is a hint for people, not an audit log: one write per key per minute at most.
_LAST_USED_GRANULARITY = timedelta(seconds=60)


@dataclass(frozen=True)
class Principal:
    user_id: uuid.UUID
    kind: Literal["user", "api_key", "guest"]
    api_key_id: uuid.UUID | None = None
    guest_client_id: uuid.UUID | None = None  # a guest's X-Client-ID
    # An access token's expiry: a stream opened with it ends once it has passed.
    expires_at: datetime | None = None
    # A guest with no row yet (it has written nothing): any made-up client id is one, so what
    # it does is counted by its address, not by its id.
    unsaved: bool = False


# Cached in place of a revoked key or a deleted user, for as long as an entry could live.
REVOKED = b"revoked"


def api_key_cache_key(key_hash: str) -> str:
    return f"principal:key:{key_hash}"


def user_cache_key(user_id: uuid.UUID) -> str:
    return f"principal:user:{user_id}"


def trust_seconds(settings: Settings) -> float:
    """How long a verified credential is used without reading the database again.

    With Redis, PRINCIPAL_LOCAL_CACHE_SECONDS (or PRINCIPAL_CACHE_SECONDS, if shorter): that is
    the most a lost revocation marker may cost, and what Redis saves is one database read per
    credential per window for all processes together. The in-process cache of the embedded
    default cannot lose a marker: PRINCIPAL_CACHE_SECONDS.
    """
    if settings.redis_url:
        return min(settings.principal_cache_seconds, settings.principal_local_cache_seconds)
    return float(settings.principal_cache_seconds)


def _fresh(entry: dict[str, Any], trust: float) -> bool:
    """Whether a cached entry is still within its trust window. The stamp is wall-clock time
    (entries cross processes); an entry without one (written by an older version) is not."""
    verified_at = entry.get("v")
    return isinstance(verified_at, int | float) and 0 <= time.time() - verified_at < trust


def _read_entry(cached: bytes | None, trust: float) -> dict[str, Any] | None:
    """A usable positive entry, or None (absent, unreadable or too old: read the database)."""
    if cached is None:
        return None
    try:
        entry = json.loads(cached)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) and _fresh(entry, trust) else None


async def _remember(cache: Cache, key: str, entry: dict[str, Any], trust: float) -> None:
    # Redis drops it when its trust ends, so no process meets a stale copy there.
    lifetime = entry["v"] + trust - time.time()
    if lifetime > 0:
        await cache.add(key, json.dumps(entry).encode(), lifetime)


async def from_bearer(db: AsyncSession, settings: Settings, cache: Cache, token: str) -> Principal:
    if token.startswith(API_KEY_PREFIX):
        return await from_api_key(db, settings, cache, token)
    claims = decode_access_token(token, settings.jwt_secret_value(), settings.jwt_algorithm)
    # A deleted user's still-valid JWT is refused.
    trust = trust_seconds(settings)
    key = user_cache_key(claims.user_id)
    cached = await cache.get(key) if trust > 0 else None
    if cached == REVOKED:
        raise Unauthorized("Invalid token")
    if _read_entry(cached, trust) is None:
        verified_at = time.time()  # before the read: the entry is no newer than what it saw
        if await user_crud.get_by_id(db, claims.user_id) is None:
            raise Unauthorized("Invalid token")
        if trust > 0:
            await _remember(cache, key, {"v": verified_at}, trust)
    return Principal(user_id=claims.user_id, kind="user", expires_at=claims.expires_at)


async def from_api_key(db: AsyncSession, settings: Settings, cache: Cache, key: str) -> Principal:
    if not key.startswith(API_KEY_PREFIX):
        raise Unauthorized("Invalid API key")
    # The lookup is by SHA-256 of a 256-bit secret: an equality match on the hash leaks nothing
    # usable about the secret, so no separate constant-time compare is needed.
    key_hash = sha256_hex(key)
    now = datetime.now(UTC)
    trust = trust_seconds(settings)
    cache_key = api_key_cache_key(key_hash)
    cached = await cache.get(cache_key) if trust > 0 else None
    if cached == REVOKED:
        raise Unauthorized("Invalid API key")
    entry = _read_entry(cached, trust)
    if entry is not None:
        expires_at = datetime.fromisoformat(entry["e"]) if entry["e"] else None
        if expires_at is not None and expires_at <= now:
            raise Unauthorized("API key expired")
        return Principal(
            user_id=uuid.UUID(entry["u"]), kind="api_key", api_key_id=uuid.UUID(entry["k"])
        )
    verified_at = time.time()  # before the read: the entry is no newer than what it saw
    row = await api_key_crud.get_by_hash(db, key_hash)
    if row is None:
        raise Unauthorized("Invalid API key")
    if row.expires_at is not None and row.expires_at <= now:
        raise Unauthorized("API key expired")
    touched = True
    if row.last_used_at is None or now - row.last_used_at > _LAST_USED_GRANULARITY:
        touched = await _touch_last_used(db, row.id, now)
    if trust > 0 and touched:  # otherwise the next request reads the key and tries again
        entry = {
            "u": str(row.user_id),
            "k": str(row.id),
            "e": row.expires_at.isoformat() if row.expires_at else None,
            "v": verified_at,
        }
        await _remember(cache, cache_key, entry, trust)
    return Principal(user_id=row.user_id, kind="api_key", api_key_id=row.id)


async def _touch_last_used(db: AsyncSession, key_id: uuid.UUID, now: datetime) -> bool:
    """Write the key's last-used time; False when SQLite refused it because another process
    is writing (a GET's transaction on SQLite takes no write lock, so it cannot wait for one):
    the time is a hint, and the request goes on without it."""
    try:
        await api_key_crud.touch_last_used(db, key_id, now)
    except DBAPIError as exc:
        if not is_write_refused(exc):
            raise
        logger.info("API key %s: its last-used time waits for a later request", key_id)
        return False
    return True


def guest_email(client_id: uuid.UUID) -> str:
    # Under a reserved top-level domain (RFC 2606): never a real, registrable address.
    return f"guest-{client_id}@guests.invalid"


# Guest user ids are derived from the client id, so a guest has its id (its rate-limit budget,
# what GET /users/me answers) before its row exists. The client id cannot be recovered from it.
_GUEST_ID_NAMESPACE = uuid.UUID("6d1f4a0e-2b7c-5e3a-9c1d-8f2e4b6a0c37")


def guest_user_id(client_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(_GUEST_ID_NAMESPACE, str(client_id))


def parse_client_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise Unauthorized("X-Client-ID must be a UUID") from None


# Guest mode: an X-Client-ID (a UUID the client made up and keeps) owns its own sessions. Its user
# row is made on its first write only (create_guest, limited per client address by the caller):
# until then the guest reads as an empty account (unsaved_guest), so reads by made-up client ids
# cost no rows.


async def find_guest(db: AsyncSession, client_id: uuid.UUID) -> Principal | None:
    """The guest with this client id, if its row exists."""
    user = await user_crud.get_by_email(db, guest_email(client_id))
    if user is None:
        return None
    if not user.is_guest:
        raise Unauthorized("Invalid client id")
    return Principal(user_id=user.id, kind="guest", guest_client_id=client_id)


def unsaved_guest(client_id: uuid.UUID) -> Principal:
    """A guest with no row yet: it owns nothing, under the id its row will have."""
    return Principal(
        user_id=guest_user_id(client_id), kind="guest", guest_client_id=client_id, unsaved=True
    )


async def create_guest(db: AsyncSession, client_id: uuid.UUID) -> Principal:
    """The guest's row, made now if it is still missing; its password can never match."""
    user = await user_crud.ensure_guest(
        db, guest_user_id(client_id), guest_email(client_id), GUEST_PASSWORD_HASH
    )
    if user is None:
        raise Unauthorized("Invalid client id")
    return Principal(user_id=user.id, kind="guest", guest_client_id=client_id)


def unsaved_guest_user(principal: Principal) -> User | None:
    """What a guest without a row reads as: an account with nothing in it (not stored)."""
    if principal.kind != "guest" or principal.guest_client_id is None:
        return None
    now = datetime.now(UTC)
    return User(
        id=principal.user_id,
        email=guest_email(principal.guest_client_id),
        password_hash=GUEST_PASSWORD_HASH,
        display_name=None,
        is_guest=True,
        created_at=now,
        updated_at=now,
    )


# Not a hash any scheme produces: no password verifies against it.
GUEST_PASSWORD_HASH = "!guest"


async def still_valid(db: AsyncSession, principal: Principal) -> bool:
    """Whether the credential a long-lived stream was opened with still holds (from the
    database: a stream re-checks it whenever it re-reads the store). An access token holds
    until it expires, as long as its user exists."""
    if principal.expires_at is not None and principal.expires_at <= datetime.now(UTC):
        return False
    if principal.api_key_id is not None:
        row = await api_key_crud.get_by_id(db, principal.api_key_id)
        return row is not None and (row.expires_at is None or row.expires_at > datetime.now(UTC))
    return await user_crud.get_by_id(db, principal.user_id) is not None


@dataclass
class CredentialCheck:
    """The credential a long answer (a live stream, an export) was asked with, checked again in
    the database as the answer goes on: at most every `trusted_for` seconds (at every chance
    with 0). The request that started the answer, which has just authenticated the caller,
    counts as the first check."""

    principal: Principal
    trusted_for: float
    # When the credential was last found to hold (time.monotonic()).
    checked_at: float = field(default_factory=time.monotonic)

    def due(self) -> bool:
        return self.trusted_for <= 0 or time.monotonic() - self.checked_at >= self.trusted_for

    def check_now(self) -> None:
        """Make the next chance a check, however recent the last one was."""
        self.checked_at = -math.inf

    async def holds(self, db: AsyncSession) -> bool:
        """Whether the credential still holds, read in `db` now."""
        checked_at = time.monotonic()  # before the read: it is no newer than that
        if not await still_valid(db, self.principal):
            return False
        self.checked_at = checked_at
        return True


def revoke_after_commit(db: AsyncSession, cache: Cache, ttl: int, *keys: str) -> None:
    """Mark cached credentials revoked once the revocation is committed."""
    if not ttl:
        return

    async def revoke() -> None:
        for key in keys:
            await cache.set(key, REVOKED, ttl)

    hooks.after_commit(db, revoke)
