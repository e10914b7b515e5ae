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
# Money is integer nano-yuan (core/money.py). An account's money is in two places: its free
# balance (`accounts.balance_nano`, what no process holds) and its credit leases (money a
# serving process has reserved for requests it admits, `credit_leases`). So at every moment
#     free balance + sum(its leases) == sum(ledger amounts of the account)
# and the ledger alone says where the money went: a top-up is +amount, a settled request is
# -cost (one "charge" row per request id, never two). A key's `spent_nano` in the database
# counts its settled spending plus what is leased for it, so a lease can never take a key past
# its spending limit.


class AccountRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    name: str
    role: Role
    balance_nano: int  # the whole balance users see: free + leased
    created_at: datetime
    leased_nano: int = 0  # the part of it leased to serving processes (requests in flight)
    disabled_at: datetime | None = None  # an admin disabled it: no key works, no log-in


class SessionRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A console session: the SHA-256 of its token (the cookie holds the token itself), whose
    account it is, its CSRF token, and when it ends."""

    id_hash: str
    account_id: int
    csrf: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None


class StoredResponse(msgspec.Struct, frozen=True, kw_only=True):
    """A stored answer of the Responses API: JSON texts of the conversation it continued
    (chat-form messages), its input items and the response object."""

    id: str
    account_id: int
    conversation: str
    input_items: str
    response: str
    created_at: datetime
    expires_at: datetime


class ResponseStore(Protocol):
    def save_response(self, record: StoredResponse) -> None: ...

    def get_response(
        self, response_id: str, account_id: int, now: datetime
    ) -> StoredResponse | None:
        """The account's stored response if it has not expired (another account's: None)."""
        ...

    def delete_response(self, response_id: str, account_id: int) -> bool: ...

    def purge_responses(self, before: datetime) -> int:
        """Delete the responses that expired before `before`."""
        ...


class ConsoleStore(Protocol):
    """Passwords and sessions of the console (accounts in the browser)."""

    def password_of(self, name: str) -> tuple[AccountRecord, str | None] | None:
        """The account named `name` and its password hash (None: no password set)."""
        ...

    def set_password(self, account_id: int, password_hash: str) -> int:
        """Rows changed (0: no such account)."""
        ...

    def create_invited_account(
        self, *, name: str, password_hash: str, code_hash: str, reason: str, now: datetime
    ) -> AccountRecord | None:
        """A user account made with an invitation (a top-up code), in one transaction: the
        account with its password, the code taken for it and its amount credited. None, and
        nothing written, when the code is not valid; StoreConflict when the name is taken."""
        ...

    def create_session(self, session: SessionRecord) -> None: ...

    def find_session(self, id_hash: str, now: datetime) -> SessionRecord | None:
        """The session if it is neither revoked nor expired at `now`."""
        ...

    def revoke_session(self, id_hash: str, at: datetime) -> int: ...

    def revoke_sessions(self, account_id: int, at: datetime) -> int:
        """Every live session of the account (a password change, a disabled user)."""
        ...

    def purge_sessions(self, before: datetime) -> int:
        """Delete sessions that expired or were revoked before `before`."""
        ...


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
    spent_nano: int  # settled spending only (what is leased for the key is not in it)


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
    estimated: bool = False  # the token counts are an estimate, not counted
    # Why the gateway did not bill what the upstream reported ("completion_above_limit",
    # "capped_at_hold", "lease_lost"; several joined by ","), or None.
    anomaly: str | None = None
    trace_id: str | None = None  # the HTTP request's id (X-Request-Id)


class UsageTotal(msgspec.Struct, frozen=True, kw_only=True):
    """Usage summed over one group (a day "2026-11-29", a model id, or a key id as text)."""

    group: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    cost_nano: int


class ModelActivity(msgspec.Struct, frozen=True, kw_only=True):
    """One model's requests in a window, for its public page: counts, token sums and the
    medians of its latencies (of the most recent `sampled` finished requests)."""

    model: str
    requests: int
    succeeded: int  # status "ok"
    prompt_tokens: int
    completion_tokens: int
    median_latency_ms: float | None
    median_ttft_ms: float | None
    # Output tokens per second of generation (after the first token), median over requests
    # that streamed more than one token; None without such requests.
    median_tokens_per_s: float | None
    sampled: int


class LeaseResult(msgspec.Struct, frozen=True):
    """The outcome of `lease_credit`: how much was granted into which lease, or why nothing."""

    granted_nano: int
    lease_id: int | None  # the lease the grant went into; None when refused
    reason: Literal["ok", "balance", "key_limit"] = "ok"
    balance_nano: int = 0  # the account's free balance after (granted) or as found (refused)
    # What the key's spending limit still allows after (or as found); None: no limit.
    key_headroom_nano: int | None = None


class LeaseRecord(msgspec.Struct, frozen=True, kw_only=True):
    """Credit one serving process (`owner`) holds for one key of one account."""

    id: int
    account_id: int
    key_id: int
    owner: str
    amount_nano: int  # leased and not yet charged
    created_at: datetime
    expires_at: datetime


class Charge(msgspec.Struct, frozen=True):
    """One finished request for the write-behind: its usage row, the lease its cost comes out
    of (None: none), and whether the account is postpaid (may go below zero)."""

    usage: UsageRecord
    lease_id: int | None
    postpaid: bool = False


class BillingStore(Protocol):
    """Accounts, credit leases, the ledger and usage rows, safe under concurrent callers in
    many processes.

    Reads and account administration are synchronous, one transaction each. The request path
    (`lease_credit`, `record`, `return_credit`, `renew_leases`, `flush`) returns futures: the
    operations go to one writer per store that applies them in submission order, many per
    transaction, and resolves each future once its transaction has committed. A future is
    never cancelled: what was submitted is applied.
    """

    def create_account(self, *, name: str, role: Role, created_at: datetime) -> AccountRecord:
        """Insert an account with balance 0; `StoreConflict` if the name is taken."""
        ...

    def get_account(self, name: str) -> AccountRecord | None: ...

    def get_account_by_id(self, account_id: int) -> AccountRecord | None: ...

    def list_accounts(self) -> list[AccountRecord]: ...

    def top_up(
        self, account_id: int, amount_nano: int, *, reason: str, created_at: datetime
    ) -> AccountRecord:
        """Add `amount_nano` and write the ledger entry, in one transaction. A negative amount
        (an adjustment) may take only the free balance, never below zero: `StoreConflict`."""
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

    def lease_credit(
        self,
        *,
        account_id: int,
        key_id: int,
        owner: str,
        lease_id: int | None,
        want_nano: int,
        need_nano: int,
        now: datetime,
        expires_at: datetime,
    ) -> Future[LeaseResult]:
        """Move up to `want_nano` (at least `need_nano`, or nothing) from the account's free
        balance into a lease of `owner` for the key: into lease `lease_id` (renewed to
        `expires_at`), or a new lease when it is None or gone. The grant is capped by the free
        balance and the key's spending limit; refused ("balance" or "key_limit") when less
        than `need_nano` (or nothing at all, when `want_nano` > 0) is left."""
        ...

    def record(self, charge: Charge) -> Future[bool]:
        """Write a finished request behind the response: its usage row, its ledger charge
        (cost > 0), and the money, out of its lease when that covers it, else (postpaid) out
        of the balance, else out of what the lease has and then the free balance as far as it
        goes, the cost lowered to what was taken (anomaly "lease_lost"). True once committed;
        False, changing nothing, when the request id was already recorded."""
        ...

    def return_credit(self, lease_id: int, amount_nano: int | None) -> Future[int]:
        """Give `amount_nano` of the lease (at most what it holds) back to the free balance,
        or everything (None), deleting the lease. Applied after every operation submitted
        before it. Resolves to the amount returned (0 for an unknown lease)."""
        ...

    def renew_leases(self, owner: str, expires_at: datetime) -> Future[int]:
        """Move the expiry of every lease `owner` holds (a heartbeat); how many."""
        ...

    def flush(self) -> Future[None]:
        """Resolves once every operation submitted before it has been committed."""
        ...

    def release_expired_leases(self, now: datetime) -> int:
        """Give back every lease with `expires_at <= now` (its process died or hung): its
        amount back to the free balance and out of the key's spending, the lease deleted.
        One transaction, safe to run on many replicas at once. Returns how many."""
        ...

    def leases(
        self, *, account_id: int | None = None, owner: str | None = None
    ) -> list[LeaseRecord]:
        """Leases in id order, all or of one account and/or owner."""
        ...

    def get_usage(self, request_id: str) -> UsageRecord | None: ...

    def usage_by_trace(
        self, trace_id: str, account_id: int | None = None
    ) -> UsageRecord | None: ...

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

    def model_activity(self, since: datetime, *, sample: int = 5000) -> list[ModelActivity]:
        """Per model, the requests created at or after `since` (every model with any), the
        medians over the latest `sample` of them."""
        ...

    def ledger(self, account_id: int) -> list[LedgerEntry]:
        """The account's entries, oldest first."""
        ...

    def ledger_page(
        self, account_id: int, *, limit: int = 50, before_id: int | None = None
    ) -> list[LedgerEntry]:
        """The account's entries, newest first, at most `limit`, older than `before_id`."""
        ...

    def usage_page(
        self,
        account_id: int,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        model: str | None = None,
        key_id: int | None = None,
        limit: int = 50,
        before: tuple[datetime, str] | None = None,
    ) -> list[UsageRecord]:
        """The account's usage rows, newest first, at most `limit`, filtered by model and key;
        `before` (created_at, request_id) of the last row seen continues the listing."""
        ...

    def set_disabled(self, account_id: int, disabled_at: datetime | None) -> int:
        """Disable an account (a time) or enable it again (None); rows changed."""
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


# ---------------------------------------------------------------------------- top-up codes
#
# A code is worth `amount_nano` once (services/codes.py makes and reads them). The store keeps
# only its SHA-256; spending it and crediting the account commit together or not at all.

CodeState = Literal["unused", "redeemed", "expired"]


class TopupCodeRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One stored top-up code (never the code itself: `code_hash` is its SHA-256 hex)."""

    id: int
    code_hash: str
    batch: str
    amount_nano: int
    created_at: datetime
    created_by: str
    expires_at: datetime | None = None
    redeemed_at: datetime | None = None
    redeemed_by: int | None = None  # the account that redeemed it
    redeemed_by_name: str | None = None  # that account's name (listings)

    def state(self, now: datetime) -> CodeState:
        """Redeemed, else expired at `now`, else unused."""
        if self.redeemed_at is not None:
            return "redeemed"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "unused"


class NewTopupCode(msgspec.Struct, frozen=True, kw_only=True):
    """What `create_codes` inserts for one code."""

    code_hash: str
    batch: str
    amount_nano: int
    created_at: datetime
    created_by: str
    expires_at: datetime | None = None


class CodeStore(Protocol):
    """Top-up codes. Synchronous, one transaction per call."""

    def create_codes(self, codes: list[NewTopupCode]) -> list[TopupCodeRecord]:
        """Insert every code in one transaction (all or none), returned in the order given;
        `StoreConflict` (nothing inserted) when a hash already exists."""
        ...

    def list_codes(self, *, batch: str | None = None) -> list[TopupCodeRecord]:
        """Codes in id order, all or of one batch, with the name of whoever redeemed each."""
        ...

    def redeem_code(
        self,
        code_hash: str,
        *,
        account_id: int,
        reason: str,
        now: datetime,
        max_balance_nano: int | None = None,
    ) -> tuple[TopupCodeRecord, AccountRecord] | None:
        """Spend the code and credit its amount to the account (a "topup" ledger entry with
        `reason`), in one transaction: the code is taken by one conditional UPDATE (unredeemed
        and unexpired at `now`), so of any number of concurrent redemptions exactly one
        succeeds. None, changing nothing, when no such code is redeemable. `StoreConflict`,
        changing nothing, when the account's free balance would pass `max_balance_nano`;
        `StoreError` for an unknown account. Returns the spent code and the account after."""
        ...
