"""The store interface services depend on, and the plain records it exchanges.

No database code lives here (services import this module and must not load SQLAlchemy).
Records are frozen msgspec Structs: no ORM objects ever leave the store.
"""

from __future__ import annotations

from concurrent.futures import Future
from datetime import datetime
from typing import Literal, Protocol

import msgspec

Role = Literal["admin", "user"]
ROLES: tuple[Role, ...] = ("admin", "user")


class StoreError(Exception):
    """The database could not be opened, migrated or queried; the message says which."""


class StoreConflict(StoreError):
    """A write broke a uniqueness rule (for example a second key with the same secret hash)."""


class ApiKeyRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One stored API key. `secret_hash` is the SHA-256 hex digest; the secret is never stored."""

    id: int
    name: str
    prefix: str  # the first characters of the secret, enough to recognise it in a listing
    secret_hash: str
    role: Role
    created_at: datetime  # timezone-aware UTC
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


class KeyStore(Protocol):
    """API keys and a small key/value table of facts about this installation.

    Methods are synchronous (they do blocking I/O); async callers run them with
    `asyncio.to_thread`. Callers decide timestamps; the store writes what it is given.
    """

    def create_key(
        self, *, name: str, prefix: str, secret_hash: str, role: Role, created_at: datetime
    ) -> ApiKeyRecord:
        """Insert a key; raises `StoreConflict` if `secret_hash` already exists."""
        ...

    def list_keys(self, *, include_revoked: bool = False) -> list[ApiKeyRecord]:
        """Keys in id order; revoked ones only when asked for."""
        ...

    def find_key_by_hash(self, secret_hash: str) -> ApiKeyRecord | None:
        """The key with this hash, revoked or not, or None."""
        ...

    def revoke_key(self, key_id: int, revoked_at: datetime) -> int:
        """Mark one active key revoked; returns how many rows changed (0 or 1)."""
        ...

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str, *, replace: bool = True) -> bool:
        """Write `key`; with `replace=False` only if absent. Returns whether it was written."""
        ...


# ---------------------------------------------------------------------------- accounts and money
#
# Money is integer nano-yuan (core/money.py). An account's `balance_nano` is what it can still
# spend: holds of requests in flight are already taken out of it. So at every moment
#     balance_nano == sum(ledger amounts of the account) - sum(its active holds)
# and the ledger alone says where the money went: a top-up is +amount, a settled request is
# -cost (one "charge" row per request id, never two).


class AccountRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    name: str
    role: Role
    balance_nano: int
    created_at: datetime


class KeyLimits(msgspec.Struct, frozen=True, kw_only=True):
    """What a key may do; None means no limit."""

    expires_at: datetime | None = None
    allowed_models: tuple[str, ...] | None = None  # catalog ids
    spend_limit_nano: int | None = None  # lifetime spending cap of this key
    rpm: int | None = None  # requests per minute
    tpm: int | None = None  # tokens (prompt + completion) per minute


class KeyGrant(msgspec.Struct, frozen=True, kw_only=True):
    """A key with its account and limits: what authentication needs, in one read."""

    key: ApiKeyRecord
    account: AccountRecord
    limits: KeyLimits
    spent_nano: int  # settled spending plus holds in flight


class LedgerEntry(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    account_id: int
    amount_nano: int  # + top-up, - charge
    kind: Literal["topup", "charge", "adjustment"]
    request_id: str | None
    reason: str | None
    created_at: datetime


class UsageRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One request, billed or not: the row every request leaves."""

    request_id: str
    account_id: int
    key_id: int
    model: str
    backend: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    cost_nano: int = 0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    finish_reason: str | None = None
    native_finish_reason: str | None = None
    status: Literal["ok", "error", "cancelled"] = "ok"
    error_code: str | None = None
    streamed: bool = False
    cancelled: bool = False
    created_at: datetime


class UsageTotal(msgspec.Struct, frozen=True, kw_only=True):
    """Usage summed over one group (a day "2026-11-29", a model id, or a key id as text)."""

    group: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    cost_nano: int


class HoldResult(msgspec.Struct, frozen=True):
    """The outcome of `place_hold`: placed, or why not."""

    placed: bool
    reason: Literal["ok", "balance", "key_limit", "duplicate"] = "ok"
    balance_nano: int | None = None  # the account's balance after (placed) or as found (not)


class BillingStore(Protocol):
    """Accounts, holds, the ledger and usage rows. Synchronous, like `KeyStore`; every method
    is one database transaction, safe under concurrent callers in many processes."""

    def create_account(self, *, name: str, role: Role, created_at: datetime) -> AccountRecord:
        """Insert an account with balance 0; `StoreConflict` if the name is taken."""
        ...

    def get_account(self, name: str) -> AccountRecord | None: ...

    def get_account_by_id(self, account_id: int) -> AccountRecord | None: ...

    def list_accounts(self) -> list[AccountRecord]: ...

    def top_up(
        self, account_id: int, amount_nano: int, *, reason: str, created_at: datetime
    ) -> AccountRecord:
        """Add `amount_nano` (may be negative: an adjustment, never taking the balance below
        zero: `StoreConflict` then) and write the ledger entry, in one transaction."""
        ...

    def create_account_key(
        self,
        *,
        account_id: int,
        name: str,
        prefix: str,
        secret_hash: str,
        role: Role,
        limits: KeyLimits,
        created_at: datetime,
    ) -> ApiKeyRecord:
        """Insert a key owned by the account; `StoreConflict` on a duplicate secret hash."""
        ...

    def find_grant(self, secret_hash: str) -> KeyGrant | None:
        """The key with this hash, its account and limits, or None."""
        ...

    def list_grants(self, *, account_id: int | None = None) -> list[KeyGrant]: ...

    def place_hold(
        self,
        *,
        request_id: str,
        account_id: int,
        key_id: int,
        amount_nano: int,
        created_at: datetime,
        expires_at: datetime,
    ) -> HoldResult:
        """Take `amount_nano` out of the account's balance and add it to the key's spending,
        only if the balance covers it and the key's spending limit allows it (conditional
        updates: concurrent holds can never take a balance below zero), and record the hold.
        A second hold for the same request id is refused ("duplicate")."""
        ...

    def submit_hold(
        self,
        *,
        request_id: str,
        account_id: int,
        key_id: int,
        amount_nano: int,
        created_at: datetime,
        expires_at: datetime,
    ) -> Future[HoldResult]:
        """`place_hold` without blocking: resolves once its transaction has committed."""
        ...

    def submit_settle(self, usage: UsageRecord) -> Future[bool]:
        """`settle` without blocking: resolves once its transaction has committed."""
        ...

    def settle(self, usage: UsageRecord) -> bool:
        """Finish a request, once: release its hold (if any), charge `usage.cost_nano`
        (balance -= cost, key spending adjusted by cost - hold), write the ledger charge (when
        cost > 0) and the usage row. Idempotent by request id: a second call changes nothing
        and returns False. A request whose hold already expired is still charged."""
        ...

    def release_expired_holds(self, now: datetime) -> int:
        """Give back every hold whose `expires_at` has passed (its process died before it
        could settle): balance and key spending restored, hold deleted. Returns how many."""
        ...

    def active_holds(self, account_id: int | None = None) -> int:
        """How many holds are in flight (all accounts, or one)."""
        ...

    def get_usage(self, request_id: str) -> UsageRecord | None: ...

    def usage_totals(
        self,
        *,
        by: Literal["day", "model", "key"],
        account_id: int | None = None,
        key_id: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[UsageTotal]:
        """Sums per group in group order; days in UTC."""
        ...

    def ledger(self, account_id: int) -> list[LedgerEntry]:
        """The account's entries, oldest first."""
        ...

    def ledger_total(self, account_id: int | None = None) -> int:
        """Sum of ledger amounts (one account, or all)."""
        ...

    def usage_cost_total(self, account_id: int | None = None) -> int:
        """Sum of usage rows' cost_nano (one account, or all)."""
        ...

    def set_key_limits(self, key_id: int, limits: KeyLimits) -> int:
        """Replace a key's limits; rows changed (0 or 1)."""
        ...
