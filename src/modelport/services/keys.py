"""API keys: issuing, revoking, and authenticating requests.

Secrets look like `sk-mp-` + 43 random base62 characters (256 bits) + a 6-character
checksum: CRC32 of everything before it, in base62, zero-padded (GitHub's token format). The
fixed prefix lets secret scanners find leaked keys (`sk-mp-[0-9A-Za-z]{49}`, checksum
verifiable offline), and a mistyped or made-up key is refused without touching the cache or
the store. Keys issued before the checksum (`sk-mp-` + 43 URL-safe characters) keep working.
Only a secret's SHA-256 digest is stored: a slow password hash buys nothing against secrets
this random, and the hot path hashes every request. A secret never appears in a message, a log
line or the database; a secret or digest is compared only in constant time (a dict keyed by
digest is a lookup, not a comparison of secrets).

Admin operations (`create_key`, `revoke_key`, `ensure_admin_key`) are synchronous: the CLI
calls them directly, async code through `asyncio.to_thread`. `KeyService.authenticate` is the
request hot path and is served from memory; see its docstring for how stale it may be.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

import msgspec

from modelport.core.errors import AuthenticationFailed, InvalidRequest, NotFound, clip
from modelport.store.base import ApiKeyRecord, BillingStore, KeyGrant, KeyLimits, KeyStore, Role

SECRET_PREFIX = "sk-mp-"
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
RANDOM_LENGTH = 43  # base62 characters: 43 × log2(62) ≈ 256 bits
CHECKSUM_LENGTH = 6  # CRC32 in base62 (62^6 > 2^32)
SECRET_LENGTH = len(SECRET_PREFIX) + RANDOM_LENGTH + CHECKSUM_LENGTH  # 55
# Keys issued before the checksum: "sk-mp-" + token_urlsafe(32), always 43 characters.
LEGACY_SECRET_LENGTH = len(SECRET_PREFIX) + 43  # 49
PREFIX_LENGTH = 12  # how much of the secret a listing shows: "sk-mp-" + 6 characters
MAX_NAME_LENGTH = 100
ADMIN_KEY_ISSUED = "admin_key_issued"  # app_meta flag: the first-start admin key was handled

MISSING_KEY = "Missing API key: send Authorization: Bearer <key> or x-api-key"
INVALID_KEY = "Invalid API key"
REVOKED_KEY = "Invalid API key: this key has been revoked"
EXPIRED_KEY = "Invalid API key: this key expired"
DISABLED_ACCOUNT = "Invalid API key: its account is disabled"

LAST_ADMIN_KEY = "last_admin_key"  # the error code for refusing to revoke it


class Principal(msgspec.Struct, frozen=True):
    """Who is calling: the authenticated key, the account it spends from, and its limits."""

    key_id: int
    name: str
    role: Role
    account_id: int = 0
    account_name: str = ""
    limits: KeyLimits = KeyLimits()


def generate_secret() -> str:
    body = SECRET_PREFIX + "".join(secrets.choice(BASE62) for _ in range(RANDOM_LENGTH))
    return body + checksum(body)


# Two base62 digits per entry: the checksum in three lookups (it runs on every request).
_BASE62_PAIRS = tuple(high + low for high in BASE62 for low in BASE62)
_PAIR = 62 * 62


def checksum(body: str) -> str:
    """CRC32 of `body` (ASCII) as 6 base62 characters, zero-padded."""
    high, low = divmod(zlib.crc32(body.encode("ascii")), _PAIR)
    high, middle = divmod(high, _PAIR)
    return _BASE62_PAIRS[high] + _BASE62_PAIRS[middle] + _BASE62_PAIRS[low]


def well_formed(secret: str) -> bool:
    """Whether `secret` could be a key we issued: the current shape with a valid checksum, or
    the shape of keys issued before it (which only a lookup can check). Decides without I/O."""
    if not secret.startswith(SECRET_PREFIX):
        return False
    length = len(secret)
    if length == SECRET_LENGTH:
        if not secret.isascii():
            return False
        cut = SECRET_LENGTH - CHECKSUM_LENGTH
        return hmac.compare_digest(checksum(secret[:cut]), secret[cut:])
    return length == LEGACY_SECRET_LENGTH


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def display_prefix(secret: str) -> str:
    return secret[:PREFIX_LENGTH]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def normal_name(name: str) -> str:
    """A key or user name as stored and as looked up: without surrounding white space."""
    return name.strip()


def check_key_name(name: str) -> str:
    name = normal_name(name)
    problem = None
    if not name:
        problem = "must not be empty"
    elif len(name) > MAX_NAME_LENGTH:
        problem = f"must be at most {MAX_NAME_LENGTH} characters"
    elif not name.isprintable():
        problem = "must not contain control characters"
    elif name.isdigit():
        problem = "must not be all digits (revoking by name would be confused with an id)"
    elif name.startswith(SECRET_PREFIX):
        problem = f"must not start with {SECRET_PREFIX!r} (it would look like a key)"
    if problem:
        raise InvalidRequest(f"key name {problem}", param="name")
    return name


def create_key(
    store: KeyStore, name: str, role: Role = "user", *, now: datetime | None = None
) -> tuple[ApiKeyRecord, str]:
    """Issue a key; returns its record and the secret, which the caller shows exactly once."""
    name = check_key_name(name)
    if role not in ("admin", "user"):
        raise InvalidRequest(f"role must be 'admin' or 'user', not {clip(role)!r}", param="role")
    secret = generate_secret()
    record = store.create_key(
        name=name,
        prefix=display_prefix(secret),
        secret_hash=hash_secret(secret),
        role=role,
        created_at=now or _utcnow(),
    )
    return record, secret


def _matching_keys(keys: list[ApiKeyRecord], selector: str) -> tuple[list[ApiKeyRecord], str]:
    """Keys `selector` names, and how to describe the selector without leaking a secret."""
    if selector.isdigit():
        return [key for key in keys if key.id == int(selector)], f"id {selector}"
    if selector.startswith(SECRET_PREFIX):
        shown = selector.removesuffix("...").removesuffix("…")
        if len(shown) > PREFIX_LENGTH:  # a whole secret: match exactly, never echo it
            digest = hash_secret(selector)
            found = [key for key in keys if hmac.compare_digest(key.secret_hash, digest)]
            return found, "the given secret"
        return [key for key in keys if key.prefix == shown], f"prefix {clip(shown)!r}"
    return [key for key in keys if key.name == selector], f"name {clip(selector)!r}"


def revoke_key(store: GrantStore, selector: str, *, now: datetime | None = None) -> ApiKeyRecord:
    """Revoke the one active key named by id, display prefix, whole secret, or name.

    Raises `NotFound` if nothing matches and `InvalidRequest` if the key is already revoked, if
    a name or prefix matches several active keys (then the caller must use the id), or if it
    is the last live admin key (revoking it would leave no one able to administer).
    Returns the key as it was before revocation.
    """
    selector = normal_name(selector)
    now = now or _utcnow()
    matches, described = _matching_keys(store.list_keys(include_revoked=True), selector)
    if not matches:
        raise NotFound(f"no API key matches {clip(described, 200)}")
    active = [key for key in matches if not key.revoked]
    if not active:
        ids = ", ".join(str(key.id) for key in matches)
        raise InvalidRequest(f"API key id {ids} ({described}) is already revoked")
    if len(active) > 1:
        ids = ", ".join(str(key.id) for key in active)
        raise InvalidRequest(
            f"{len(active)} active API keys match {described} (ids {ids}); revoke one by its id"
        )
    target = active[0]
    if target.role == "admin":
        _refuse_last_admin(store.list_grants(), target, now)
    if store.revoke_key(target.id, now) == 0:
        raise InvalidRequest(f"API key id {target.id} is already revoked")
    return target


def live_admin_keys(grants: list[KeyGrant], now: datetime) -> list[KeyGrant]:
    """The keys that can use the admin API now: of an admin account, not revoked, not expired."""
    return [
        grant
        for grant in grants
        if grant.account.role == "admin"
        and not grant.key.revoked
        and (grant.limits.expires_at is None or grant.limits.expires_at > now)
    ]


def _refuse_last_admin(grants: list[KeyGrant], target: ApiKeyRecord, now: datetime) -> None:
    """InvalidRequest when `target` is the only live admin key. Checked before the write: two
    admins revoking each other's keys at the same instant could still both succeed."""
    live = live_admin_keys(grants, now)
    if live and all(grant.key.id == target.id for grant in live):
        raise InvalidRequest(
            f"API key id {target.id} is the last active admin key: revoking it would leave no "
            "key able to use the admin API. Create another admin key first "
            "(`modelport keys create --name NAME --admin`, or POST /api/v1/admin/keys with "
            '"role": "admin"), then revoke this one.',
            code=LAST_ADMIN_KEY,
        )


def ensure_admin_key(store: KeyStore, *, now: datetime | None = None) -> str | None:
    """On the very first start, issue an admin key and return its secret; otherwise None.

    "First start" means no key has ever been issued and the flag in `app_meta` is unset, so
    the secret is returned once in the installation's life (the caller prints it). When keys
    already exist (made with the CLI before the first `serve`) no admin key is created.
    """
    if store.get_meta(ADMIN_KEY_ISSUED) is not None:
        return None
    stamp = (now or _utcnow()).isoformat()
    if store.list_keys(include_revoked=True):
        store.set_meta(ADMIN_KEY_ISSUED, f"skipped {stamp}: keys already existed", replace=False)
        return None
    # Claiming the flag first means that of two processes starting together only one issues.
    if not store.set_meta(ADMIN_KEY_ISSUED, stamp, replace=False):
        return None
    _record, secret = create_key(store, "admin", role="admin", now=now)
    return secret


_Verdict = Principal | str  # a principal, or the message of the AuthenticationFailed to raise


class GrantStore(KeyStore, BillingStore, Protocol):
    """What authentication reads: keys with their accounts and limits."""


class KeyService:
    """Authenticates request secrets against the store, from an in-memory cache.

    A lookup result (key found, unknown, or revoked) is trusted for `ttl` seconds, so the hot
    path does not touch the database: **a revocation takes effect within `ttl` seconds**
    (`settings.key_cache_ttl`) in processes that did not do the revoking; `forget_all()` makes
    it immediate in this one. Negative results are cached for `negative_ttl` (default: `ttl`)
    so a client hammering with one bad key costs one lookup per period, and concurrent misses
    for the same secret share one lookup. The cache holds at most `max_entries` digests.
    """

    def __init__(
        self,
        store: GrantStore,
        *,
        ttl: float,
        negative_ttl: float | None = None,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._ttl = ttl
        self._negative_ttl = ttl if negative_ttl is None else negative_ttl
        self._max_entries = max_entries
        self._clock = clock
        self._cache: dict[str, tuple[float, _Verdict]] = {}
        self._inflight: dict[str, asyncio.Task[_Verdict]] = {}

    async def authenticate(self, secret: str | None) -> Principal:
        """The principal for `secret`; raises `AuthenticationFailed` if it is not a live key."""
        if not secret:
            raise AuthenticationFailed(MISSING_KEY)
        if not well_formed(secret):  # a typo or an invention: no cache, no store
            raise AuthenticationFailed(INVALID_KEY)
        digest = hash_secret(secret)
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > self._clock():
            verdict = cached[1]
        else:
            verdict = await self._lookup(digest)
        if isinstance(verdict, str):
            raise AuthenticationFailed(verdict)
        expires = verdict.limits.expires_at
        if expires is not None and expires <= _utcnow():
            raise AuthenticationFailed(f"{EXPIRED_KEY} on {expires.isoformat()}")
        return verdict

    def forget_all(self) -> None:
        """Drop every cached result (after a revocation made in this process)."""
        self._cache.clear()

    async def _lookup(self, digest: str) -> _Verdict:
        task = self._inflight.get(digest)
        if task is None:
            task = asyncio.create_task(self._fetch(digest))
            self._inflight[digest] = task
            task.add_done_callback(lambda _done: self._inflight.pop(digest, None))
        # Shielded: one cancelled caller must not cancel the lookup the others wait on.
        return await asyncio.shield(task)

    def forget(self, digest: str) -> None:
        """Drop one cached result ("*": all), as a key-change event from any replica says."""
        if digest == "*":
            self._cache.clear()
        else:
            self._cache.pop(digest, None)

    async def _fetch(self, digest: str) -> _Verdict:
        grant = await asyncio.to_thread(self._store.find_grant, digest)
        verdict: _Verdict
        if grant is None or not hmac.compare_digest(grant.key.secret_hash, digest):
            verdict, ttl = INVALID_KEY, self._negative_ttl
        elif grant.key.revoked:
            verdict, ttl = REVOKED_KEY, self._negative_ttl
        elif grant.account.disabled_at is not None:
            verdict, ttl = DISABLED_ACCOUNT, self._negative_ttl
        else:
            record, account = grant.key, grant.account
            verdict = Principal(
                key_id=record.id,
                name=record.name,
                role=account.role,
                account_id=account.id,
                account_name=account.name,
                limits=grant.limits,
            )
            ttl = self._ttl
        if ttl > 0:
            self._remember(digest, self._clock() + ttl, verdict)
        return verdict

    def _remember(self, digest: str, expires: float, verdict: _Verdict) -> None:
        if len(self._cache) >= self._max_entries:
            now = self._clock()
            for key in [key for key, (until, _) in self._cache.items() if until <= now]:
                del self._cache[key]
            # Still full (a flood of distinct bad keys): drop the oldest quarter.
            if len(self._cache) >= self._max_entries:
                for key in list(self._cache)[: max(1, self._max_entries // 4)]:
                    del self._cache[key]
        self._cache[digest] = (expires, verdict)
