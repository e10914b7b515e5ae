"""Accounts in the browser: sign-up, log-in and sessions for the console (issue 15's pages
build on this).

- **Passwords** are hashed with argon2id (argon2-cffi's defaults: 64 MiB, 3 passes), off the
  event loop: a hash takes tens of milliseconds. A log-in for a name that does not exist, or
  an account without a password, verifies against a dummy hash all the same, so the answer's
  timing does not tell which names exist. A hash made with older parameters is redone at the
  next good log-in.
- **Log-in throttling**: failures are counted per account and per client address; past either
  limit the next attempts are refused (429 with Retry-After) before any hash is computed.
- **Sessions** live in the store, keyed by the SHA-256 of a 256-bit random token (the cookie
  holds the token; the table cannot be replayed); each carries its own CSRF token. A log-in
  always makes a new session (the one the browser had is revoked: rotation), and sessions can
  be revoked one by one or all of an account's at once (a password change).
- **Sign-up** follows the policy: `open` (anyone), `closed` (nobody; the operator creates
  accounts with the CLI), with an optional starting credit for new accounts.

A session is for the console only: the API authenticates keys, never cookies.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from modelport.core.errors import AuthenticationFailed, InvalidRequest, PermissionDenied, clip
from modelport.services.accounts import cny_to_nano
from modelport.services.auth_throttle import AuthThrottle
from modelport.services.codes import INVALID_CODE, code_prefix, hash_code, normalize_code
from modelport.store.base import (
    AccountRecord,
    BillingStore,
    ConsoleStore,
    SessionRecord,
    StoreConflict,
)

SignupPolicy = Literal["open", "invite", "closed"]
USERNAME = re.compile(r"[a-z0-9][a-z0-9_.-]{2,31}")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # characters: argon2 takes any length, a megabyte is not a password
SESSION_TTL = timedelta(days=14)
BAD_LOGIN = "Wrong username or password."


class AccountsStore(ConsoleStore, BillingStore, Protocol):
    """What the console needs of the store."""


class Session(msgspec.Struct, frozen=True):
    """A live session: the token for the cookie (only when it was just made), whose account
    it is, and its CSRF token for the forms."""

    account: AccountRecord
    csrf: str
    expires_at: datetime
    token: str = ""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def check_username(name: str) -> str:
    """A console username: 3 to 32 of a-z, 0-9, '_', '.', '-', starting with a letter or
    digit (case is folded); they are the account names."""
    folded = name.strip().lower()
    if not USERNAME.fullmatch(folded):
        raise InvalidRequest(
            "username must be 3 to 32 characters: letters, digits, '_', '.' or '-', "
            "starting with a letter or digit",
            param="username",
        )
    return folded


def check_password(password: str, username: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidRequest(
            f"password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters", param="password"
        )
    if password.strip().lower() == username:
        raise InvalidRequest("password must not be the username", param="password")
    return password


class ConsoleAccounts:
    def __init__(
        self,
        store: AccountsStore,
        *,
        policy: SignupPolicy = "open",
        signup_credit: str = "0",
        account_failures: int = 5,
        address_failures: int = 20,
        window: float = 900.0,
        hasher: PasswordHasher | None = None,
    ) -> None:
        self._store = store
        self.policy = policy
        self._credit = cny_to_nano(signup_credit, field="signup_credit")
        self._hasher = hasher or PasswordHasher()
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))
        self._by_account = AuthThrottle(account_failures, window)
        self._by_address = AuthThrottle(address_failures, window)

    # ------------------------------------------------------------------ sign-up, log-in

    async def signup(
        self, username: str, password: str, *, address: str = "", code: str = ""
    ) -> Session:
        """A new account (role user, with the starting credit) and its first session. Under
        the "invite" policy `code` (a top-up code) is the invitation: the account is made only
        together with its redemption, in one transaction."""
        if self.policy == "closed":
            raise PermissionDenied(
                "Sign-up is closed on this server: ask its operator for an account."
            )
        self._by_address.check(address)
        name = check_username(username)
        check_password(password, name)
        canonical = normalize_code(code) if self.policy == "invite" else None
        if self.policy == "invite" and canonical is None:
            self._by_address.failed(address)
            raise InvalidRequest(INVALID_CODE, param="code")
        password_hash = await asyncio.to_thread(self._hasher.hash, password)
        store = self._store
        try:
            if canonical is not None:
                invited = await asyncio.to_thread(
                    functools.partial(
                        store.create_invited_account,
                        name=name,
                        password_hash=password_hash,
                        code_hash=hash_code(canonical),
                        reason=f"invitation {code_prefix(canonical)}",
                        now=_now(),
                    )
                )
                if invited is None:
                    self._by_address.failed(address)  # guessing codes costs like a bad log-in
                    raise InvalidRequest(INVALID_CODE, param="code")
                account = invited
            else:
                account = await asyncio.to_thread(
                    store.create_account, name=name, role="user", created_at=_now()
                )
                await asyncio.to_thread(store.set_password, account.id, password_hash)
        except StoreConflict:
            self._by_address.failed(address)  # probing for names costs like a bad log-in
            raise InvalidRequest(
                f"the username {clip(name)!r} is taken", param="username"
            ) from None
        if self._credit:
            account = await asyncio.to_thread(
                store.top_up, account.id, self._credit, reason="sign-up credit", created_at=_now()
            )
        return await self._new_session(account)

    async def login(
        self, username: str, password: str, *, address: str = "", replacing: str | None = None
    ) -> Session:
        """A new session for the right password; `replacing` (the browser's current session
        token, if any) is revoked. Raises AuthenticationFailed (wrong name or password, the
        same message for both) or RateLimited (too many failures for the name or address)."""
        name = username.strip().lower()[:64]
        self._by_address.check(address)
        self._by_account.check(name)
        found = await asyncio.to_thread(self._store.password_of, name)
        stored = found[1] if found is not None else None
        ok = await asyncio.to_thread(self._verify, stored or self._dummy, password[:MAX_PASSWORD])
        if found is None or stored is None or not ok:
            self._by_address.failed(address)
            self._by_account.failed(name)
            raise AuthenticationFailed(BAD_LOGIN)
        account = found[0]
        if account.disabled_at is not None:
            raise PermissionDenied("This account is disabled; ask the operator.")
        if self._hasher.check_needs_rehash(stored):
            rehashed = await asyncio.to_thread(self._hasher.hash, password)
            await asyncio.to_thread(self._store.set_password, account.id, rehashed)
        if replacing:
            await self.logout(replacing)
        return await self._new_session(account)

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    # ------------------------------------------------------------------ sessions

    async def session(self, token: str | None) -> Session | None:
        """The live session for a cookie's token, or None (absent, unknown, revoked, expired,
        or its account is gone)."""
        if not token or len(token) > 128:
            return None
        store = self._store
        record = await asyncio.to_thread(store.find_session, _digest(token), _now())
        if record is None:
            return None
        account = await asyncio.to_thread(store.get_account_by_id, record.account_id)
        if account is None or account.disabled_at is not None:
            return None
        return Session(account, record.csrf, record.expires_at)

    async def set_password(self, account: AccountRecord, password: str) -> None:
        """Set an account's console password (the operator's CLI); its sessions end."""
        check_password(password, account.name)
        password_hash = await asyncio.to_thread(self._hasher.hash, password)
        await asyncio.to_thread(self._store.set_password, account.id, password_hash)
        await asyncio.to_thread(self._store.revoke_sessions, account.id, _now())

    async def logout(self, token: str) -> None:
        if token and len(token) <= 128:
            await asyncio.to_thread(self._store.revoke_session, _digest(token), _now())

    async def change_password(self, account: AccountRecord, old: str, new: str) -> Session:
        """A new password (the old one must be given); every session of the account ends and
        a new one is returned."""
        found = await asyncio.to_thread(self._store.password_of, account.name)
        stored = found[1] if found is not None else None
        if stored is None or not await asyncio.to_thread(self._verify, stored, old):
            raise AuthenticationFailed(BAD_LOGIN)
        check_password(new, account.name)
        password_hash = await asyncio.to_thread(self._hasher.hash, new)
        await asyncio.to_thread(self._store.set_password, account.id, password_hash)
        await asyncio.to_thread(self._store.revoke_sessions, account.id, _now())
        return await self._new_session(account)

    @staticmethod
    def csrf_ok(session: Session, submitted: str | None) -> bool:
        """Whether a form's CSRF field matches its session's token (constant time)."""
        return bool(submitted) and hmac.compare_digest(session.csrf, submitted or "")

    async def _new_session(self, account: AccountRecord) -> Session:
        token = secrets.token_urlsafe(32)
        now = _now()
        record = SessionRecord(
            id_hash=_digest(token),
            account_id=account.id,
            csrf=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=now + SESSION_TTL,
        )
        await asyncio.to_thread(self._store.create_session, record)
        return Session(account, record.csrf, record.expires_at, token)
