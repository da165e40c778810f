"""Registration, login, refresh-token rotation with reuse detection, logout."""

from __future__ import annotations

import logging
import unicodedata
import uuid
from datetime import UTC, datetime, timedelta

from email_validator import EmailNotValidError, validate_email
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chat_store.crud import auth_tokens as token_crud
from chat_store.crud import chat_sessions as chat_session_crud
from chat_store.crud import generations as generation_crud
from chat_store.crud import users as user_crud
from chat_store.errors import (
    EmailTaken,
    GuestNotAllowed,
    NotFound,
    RateLimited,
    RegistrationClosed,
    Unauthorized,
)
from chat_store.ids import uuid7
from chat_store.models import User
from chat_store.ratelimit import RateLimiter, parse_limit
from chat_store.schemas.users import TokenPair, UserCreate
from chat_store.security import (
    create_access_token,
    dummy_password_hash,
    hash_password,
    new_refresh_token,
    sha256_hex,
    verify_and_upgrade,
    verify_password,
)
from chat_store.services import events, principals
from chat_store.services.context import RequestContext
from chat_store.settings import Settings

logger = logging.getLogger(__name__)

_BAD_LOGIN = "Incorrect email or password"


def normalize_email(email: str) -> str:
    """The one form an email is stored and looked up in (register, login, the CLI).

    email-validator's normalization (the one registration validates with): the domain decoded
    from punycode to Unicode, the address in NFC; then case-folded and composed again (folding
    can decompose). Input that is not a valid address cannot be a registered one: it is only
    composed and folded, and finds nobody.
    """
    text = email.strip()
    try:
        text = validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError:
        text = unicodedata.normalize("NFC", text)
    return unicodedata.normalize("NFC", text.casefold())


async def register(db: AsyncSession, settings: Settings, body: UserCreate) -> User:
    if not settings.allow_registration:
        raise RegistrationClosed()
    return await create_user(db, settings, str(body.email), body.password, body.display_name)


async def create_user(
    db: AsyncSession, settings: Settings, email: str, password: str, display_name: str | None
) -> User:
    email = normalize_email(email)
    if await user_crud.get_by_email(db, email) is not None:
        raise EmailTaken()
    password_hash = await hash_password(password, settings.bcrypt_rounds)
    try:
        async with db.begin_nested():
            return await user_crud.create(
                db, email=email, password_hash=password_hash, display_name=display_name
            )
    except IntegrityError:  # a concurrent registration won the race
        raise EmailTaken() from None


async def authenticate(db: AsyncSession, settings: Settings, email: str, password: str) -> User:
    """The same 401, at the same cost, for an unknown email and a wrong password."""
    user = await user_crud.get_by_email(db, normalize_email(email))
    if user is None:
        await verify_password(
            password, dummy_password_hash(settings.bcrypt_rounds), settings.bcrypt_rounds
        )
        raise Unauthorized(_BAD_LOGIN)
    if user.is_guest:  # no password was ever set: pay the same cost, refuse the same way
        await verify_password(
            password, dummy_password_hash(settings.bcrypt_rounds), settings.bcrypt_rounds
        )
        raise Unauthorized(_BAD_LOGIN)
    valid, upgraded = await verify_and_upgrade(password, user.password_hash, settings.bcrypt_rounds)
    if not valid:
        raise Unauthorized(_BAD_LOGIN)
    if upgraded is not None:  # a plain bcrypt hash (blind beyond 72 bytes): kept as bcrypt_sha256
        user.password_hash = upgraded
    return user


async def login(
    db: AsyncSession, settings: Settings, limiter: RateLimiter, email: str, password: str
) -> TokenPair:
    """Password login. Failed attempts are also counted per account (whatever the client IP),
    so a password cannot be guessed from many addresses at once.

    Each attempt is counted before its password is checked, in one atomic step with the check
    of the limit, and given back if the password was right: concurrent guesses cannot all pass
    the check before any failure is counted, so at most the budget of passwords is ever
    checked, and only failures stay counted.
    """
    account = normalize_email(email)
    await count_password_guess(settings, limiter, account)
    user = await authenticate(db, settings, email, password)
    await forgive_password_guess(settings, limiter, account)
    return await _issue_pair(db, settings, user.id, family_id=uuid7())


async def count_password_guess(settings: Settings, limiter: RateLimiter, account: str) -> None:
    """Counts one check of the account's password against LOGIN_FAILURES_PER_ACCOUNT before it is
    made; `RateLimited` when the budget is spent. Every place that checks a password (login, a
    password change) draws on the same budget, so none of them is a way around it."""
    if not settings.rate_limit_enabled:
        return
    attempt = await limiter.hit(
        parse_limit(settings.login_failures_per_account), "login-failures", account
    )
    if not attempt.allowed:
        error = RateLimited("Too many failed logins for this account; try again later")
        error.headers["Retry-After"] = str(max(1, attempt.reset_seconds))
        raise error


async def forgive_password_guess(settings: Settings, limiter: RateLimiter, account: str) -> None:
    """Gives back the check counted by `count_password_guess` once the password was right."""
    if settings.rate_limit_enabled:
        await limiter.give_back(
            parse_limit(settings.login_failures_per_account), "login-failures", account
        )


async def refresh(db: AsyncSession, settings: Settings, refresh_token: str) -> TokenPair:
    now = datetime.now(UTC)
    row = await token_crud.get_refresh_token_for_update(db, sha256_hex(refresh_token))
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        raise Unauthorized("Invalid refresh token")
    if row.used_at is not None or not await token_crud.mark_used(db, row.id, now):
        # A spent token presented again: someone holds a copy. Revoke the whole family, and
        # commit that even though this request fails (see RevokedFamily handling in deps).
        await token_crud.revoke_family(db, row.family_id, now)
        logger.warning(
            "refresh token reuse detected; family revoked", extra={"user_id": str(row.user_id)}
        )
        raise Unauthorized(
            "Refresh token reused; all sessions of this login were revoked", commit=True
        )
    return await _issue_pair(db, settings, row.user_id, family_id=row.family_id)


async def claim_guest(ctx: RequestContext, client_id: uuid.UUID) -> int:
    """Move a guest's sessions to the signed-in user and forget the guest; returns how many.
    Once committed, the streams the guest still follows them with end at once: they would
    otherwise carry the new owner's writes until their next check of the credential."""
    db, principal = ctx.db, ctx.principal
    if principal.kind == "guest":
        raise GuestNotAllowed("Sign in (or use an API key) to claim a guest's sessions")
    guest = await user_crud.get_by_email(db, principals.guest_email(client_id))
    if guest is None or not guest.is_guest:
        raise NotFound("No guest data for this client id")
    # The guest's lease rows before its sessions' (the move updates both): the lock order of
    # crud/generations.py, which a completion of one of its answers takes.
    await generation_crud.lock_leases(db, guest.id)
    # A fingerprint is unique per owner: a conversation both imported stays twice (nothing of
    # the guest's copy is lost, it may have grown since), and importing it again finds the
    # user's own. The user's imports wait for the claim, and it for theirs in flight: one that
    # committed between the two statements below made the move break the unique index.
    if not await user_crud.lock_out_inserts(db, principal.user_id):
        raise Unauthorized()
    await chat_session_crud.forget_sources_shared(db, guest.id, principal.user_id)
    moved = await chat_session_crud.move_to_owner(db, guest.id, principal.user_id)
    await user_crud.delete_by_id(db, guest.id)
    events.publish_to_each_after_commit(db, ctx.bus, moved, events.OwnerChanged())
    return len(moved)


async def logout(db: AsyncSession, refresh_token: str) -> None:
    """Revoke the family of this token; an unknown token is not an error (nothing to revoke)."""
    row = await token_crud.get_refresh_token_for_update(db, sha256_hex(refresh_token))
    if row is not None:
        await token_crud.revoke_family(db, row.family_id, datetime.now(UTC))


async def _issue_pair(
    db: AsyncSession, settings: Settings, user_id: uuid.UUID, family_id: uuid.UUID
) -> TokenPair:
    access_token, expires_in = create_access_token(
        user_id,
        settings.jwt_secret_value(),
        settings.jwt_algorithm,
        timedelta(minutes=settings.access_token_minutes),
    )
    refresh_token = new_refresh_token()
    await token_crud.create_refresh_token(
        db,
        user_id=user_id,
        family_id=family_id,
        token_hash=sha256_hex(refresh_token),
        expires_at=datetime.now(UTC) + timedelta(days=settings.refresh_token_days),
    )
    return TokenPair(access_token=access_token, refresh_token=refresh_token, expires_in=expires_in)
