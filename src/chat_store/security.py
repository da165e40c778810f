"""Password hashing, JWTs and opaque secrets."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import anyio.to_thread
from jose import ExpiredSignatureError, JWTError, jwt
from passlib.context import CryptContext

from chat_store.errors import TokenExpired, Unauthorized

API_KEY_PREFIX = "csk_"
ACCESS_TOKEN_TYPE = "access"


@lru_cache(maxsize=4)
def _password_context(rounds: int) -> CryptContext:
    # bcrypt_sha256 first: bcrypt alone raises (bcrypt 5) or truncates beyond 72 bytes; plain
    # bcrypt hashes still verify and are upgraded on the next login.
    return CryptContext(
        schemes=["bcrypt_sha256", "bcrypt"],
        deprecated="auto",
        bcrypt_sha256__rounds=rounds,
        bcrypt__rounds=rounds,
    )


async def hash_password(password: str, rounds: int) -> str:
    # ~240 ms of CPU at 12 rounds: run it off the event loop or every other request stalls.
    context = _password_context(rounds)
    return await anyio.to_thread.run_sync(context.hash, password)


async def verify_and_upgrade(
    password: str, password_hash: str, rounds: int
) -> tuple[bool, str | None]:
    """Whether the password is right, and the hash to keep from now on when the stored one is
    of a deprecated scheme (plain bcrypt): None when it stays."""
    context = _password_context(rounds)
    valid, upgraded = await anyio.to_thread.run_sync(
        context.verify_and_update, password, password_hash
    )
    return bool(valid), upgraded if valid else None


async def verify_password(password: str, password_hash: str, rounds: int) -> bool:
    context = _password_context(rounds)
    return bool(await anyio.to_thread.run_sync(context.verify, password, password_hash))


@lru_cache(maxsize=4)
def dummy_password_hash(rounds: int) -> str:
    """A hash to verify against when the email is unknown, so both failures cost the same."""
    return str(_password_context(rounds).hash(secrets.token_urlsafe(16)))


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def constant_time_equals(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def new_refresh_token() -> str:
    return secrets.token_urlsafe(48)


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class AccessClaims:
    user_id: uuid.UUID
    expires_at: datetime  # the first moment the token is refused


def create_access_token(
    user_id: uuid.UUID, secret: str, algorithm: str, lifetime: timedelta
) -> tuple[str, int]:
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": str(user_id),
        "type": ACCESS_TOKEN_TYPE,
        "iat": int(now.timestamp()),
        "exp": int((now + lifetime).timestamp()),
        "jti": secrets.token_hex(8),
    }
    return jwt.encode(claims, secret, algorithm=algorithm), int(lifetime.total_seconds())


def decode_access_token(token: str, secret: str, algorithm: str) -> AccessClaims:
    """Verify signature, algorithm (pinned: `none` and others are refused) and expiry."""
    try:
        header = jwt.get_unverified_header(token)
        if header.get("alg") != algorithm:
            raise Unauthorized("Invalid token")
        claims = jwt.decode(
            token,
            secret,
            algorithms=[algorithm],
            options={"require_exp": True, "require_sub": True, "require_iat": True},
        )
    except JWTError as exc:
        if isinstance(exc, ExpiredSignatureError):
            raise TokenExpired() from None
        raise Unauthorized("Invalid token") from None
    except (TypeError, OverflowError):
        # python-jose checks exp, iat and nbf with a bare int() once the signature holds: a
        # null, a list or an object is a TypeError there, an infinity an OverflowError.
        raise Unauthorized("Invalid token") from None
    if claims.get("type") != ACCESS_TOKEN_TYPE:
        raise Unauthorized("Invalid token")
    try:
        user_id = uuid.UUID(str(claims["sub"]))
    except (KeyError, ValueError):
        raise Unauthorized("Invalid token") from None
    # python-jose compares whole seconds (`exp < int(now)`): the token is refused from the
    # second after `exp` on, and the time it holds until is that.
    holds_until = _expiry(claims.get("exp")) + timedelta(seconds=1)
    return AccessClaims(user_id=user_id, expires_at=holds_until)


def _expiry(exp: object) -> datetime:
    """`exp` as a time. python-jose takes any value int() accepts (a numeric string too) and any
    size, which datetime does not: a number (RFC 7519's NumericDate) that is a representable
    time, or the token is invalid."""
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise Unauthorized("Invalid token")
    try:
        return datetime.fromtimestamp(exp, UTC)
    except (OverflowError, OSError, ValueError):
        raise Unauthorized("Invalid token") from None
