"""Accounts and their keys: what the CLI and the admin API do, in one place.

Synchronous, like the key functions in `services/keys.py`: the CLI calls them directly, the
admin API through `asyncio.to_thread`. Amounts arrive as CNY decimal strings ("12.5") and are
kept as integer nano-yuan; every balance change is a ledger entry with a reason.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from modelport.core.errors import InvalidRequest, NotFound, clip
from modelport.core.money import NANO_PER_YUAN, format_cny, parse_cny
from modelport.protocols.validation import INT32_MAX
from modelport.services.keys import (
    GrantStore,
    check_key_name,
    display_prefix,
    generate_secret,
    hash_secret,
    normal_name,
)
from modelport.store.base import (
    AccountRecord,
    ApiKeyRecord,
    KeyGrant,
    KeyLimits,
    Role,
    StoreConflict,
    UsageRecord,
    UsageTotal,
)

MAX_REASON_LENGTH = 500
# The largest amount one operation may move, and the largest balance an account may hold:
# far below what a 64-bit column holds (9.2e9 CNY in nano-yuan), so sums stay in range.
MAX_AMOUNT_NANO = 10**9 * NANO_PER_YUAN  # one billion CNY
MAX_BALANCE_NANO = 4 * MAX_AMOUNT_NANO
MAX_RATE = 10**9  # requests or tokens per minute
KEY_ID_MAX = INT32_MAX  # key ids are INTEGER columns: 32 bits on PostgreSQL


def cny_to_nano(amount: str, *, field: str, allow_negative: bool = False) -> int:
    """A CNY decimal string as nano-yuan; InvalidRequest naming `field` when it is not an
    exact amount (more than nine decimals) or, unless allowed, negative."""
    text = amount.strip()
    negative = allow_negative and text.startswith("-")
    try:
        value = parse_cny(text[1:] if negative else text)
    except ValueError as exc:
        raise InvalidRequest(f"{field}: {exc}", param=field) from None
    if value > MAX_AMOUNT_NANO // NANO_PER_YUAN:
        raise InvalidRequest(
            f"{field}: at most {MAX_AMOUNT_NANO // NANO_PER_YUAN} CNY at a time", param=field
        )
    nano = value * NANO_PER_YUAN
    if nano != nano.to_integral_value():
        raise InvalidRequest(
            f"{field}: {clip(amount)} CNY is finer than a nano-yuan (at most 9 decimals)",
            param=field,
        )
    return -int(nano) if negative else int(nano)


def parse_time(value: str, field: str) -> datetime:
    """An ISO 8601 date or time from a query or an option; UTC when it names no zone."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(
            f"{field} must be an ISO 8601 date or time, not {clip(value)!r}", param=field
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _now() -> datetime:
    return datetime.now(UTC)


def create_user(
    store: GrantStore, name: str, *, balance: str = "0", admin: bool = False
) -> AccountRecord:
    """A new account (role admin or user), with an opening top-up when `balance` > 0."""
    name = _check_account_name(name)
    opening = cny_to_nano(balance, field="balance")
    role: Role = "admin" if admin else "user"
    try:
        account = store.create_account(name=name, role=role, created_at=_now())
    except StoreConflict:
        raise InvalidRequest(f"a user named {clip(name)!r} already exists", param="name") from None
    if opening:
        account = store.top_up(account.id, opening, reason="opening balance", created_at=_now())
    return account


def _check_account_name(name: str) -> str:
    name = normal_name(name)
    if not name or len(name) > 100 or not name.isprintable() or "/" in name:
        raise InvalidRequest(
            "user name must be 1 to 100 printable characters without '/'", param="name"
        )
    return name


def get_user(store: GrantStore, name: str) -> AccountRecord:
    """The account named `name`, normalised as names are when created (trimmed)."""
    name = normal_name(name)
    account = store.get_account(name)
    if account is None:
        raise NotFound(f"no user named {clip(name)!r}")
    return account


def set_disabled(store: GrantStore, name: str, disabled: bool) -> AccountRecord:
    """Disable a user (their keys stop working; the caller drops cached keys and sessions)
    or enable them again. The last admin account cannot be disabled."""
    account = get_user(store, name)
    if disabled and account.role == "admin":
        admins = [a for a in store.list_accounts() if a.role == "admin" and a.disabled_at is None]
        if [a.id for a in admins] == [account.id]:
            raise InvalidRequest("the last admin account cannot be disabled", param="name")
    store.set_disabled(account.id, _now() if disabled else None)
    return get_user(store, name)


def top_up(store: GrantStore, name: str, amount: str, *, reason: str) -> AccountRecord:
    """Add `amount` CNY (negative: an adjustment down, never below zero) with a reason."""
    reason = reason.strip()
    if not reason or len(reason) > MAX_REASON_LENGTH:
        raise InvalidRequest(
            f"reason must be 1 to {MAX_REASON_LENGTH} characters: every change of a balance "
            "is recorded with one",
            param="reason",
        )
    nano = cny_to_nano(amount, field="amount", allow_negative=True)
    if nano == 0:
        raise InvalidRequest("amount must not be zero", param="amount")
    account = get_user(store, name)
    if account.balance_nano + nano > MAX_BALANCE_NANO:
        raise InvalidRequest(
            f"a balance may not exceed {format_cny(MAX_BALANCE_NANO)} CNY", param="amount"
        )
    try:
        return store.top_up(account.id, nano, reason=reason, created_at=_now())
    except StoreConflict:
        raise InvalidRequest(
            f"an adjustment of {clip(amount)} CNY would take {account.name!r} below zero "
            f"(balance {format_cny(account.balance_nano)} CNY)",
            param="amount",
        ) from None


def create_account_key(
    store: GrantStore,
    name: str,
    *,
    user: str | None = None,
    admin: bool = False,
    rpm: int | None = None,
    tpm: int | None = None,
    limit: str | None = None,
    models: tuple[str, ...] | None = None,
    expires_at: datetime | None = None,
    known_models: frozenset[str] | None = None,
) -> tuple[ApiKeyRecord, str]:
    """Issue a key for `user` (default: the "admin" account for admin keys, "default" for
    others) with its limits; returns the record and the secret, shown once."""
    name = check_key_name(name)
    for field, value in (("rpm", rpm), ("tpm", tpm)):
        if value is not None and not 1 <= value <= MAX_RATE:
            raise InvalidRequest(f"{field} must be from 1 to {MAX_RATE}", param=field)
    if models is not None:
        models = tuple(model.strip() for model in models if model.strip())
        unknown = [m for m in models if known_models is not None and m not in known_models]
        if unknown:
            raise InvalidRequest(f"unknown model(s): {clip(', '.join(unknown))}", param="models")
    if expires_at is not None and expires_at.tzinfo is None:
        raise InvalidRequest("expires_at must carry a time zone", param="expires_at")
    limits = KeyLimits(
        expires_at=expires_at,
        allowed_models=models,
        spend_limit_nano=None if limit is None else cny_to_nano(limit, field="limit"),
        rpm=rpm,
        tpm=tpm,
    )
    user = (normal_name(user) or None) if user else None  # blank: the default account
    account_name = user or ("admin" if admin else "default")
    account = store.get_account(account_name)
    if account is None:
        if user is not None:
            raise NotFound(f"no user named {clip(user)!r}")
        role: Role = "admin" if admin else "user"
        try:
            account = store.create_account(name=account_name, role=role, created_at=_now())
        except StoreConflict:  # created meanwhile by another process
            account = get_user(store, account_name)
    secret = generate_secret()
    record = store.create_account_key(
        account_id=account.id,
        name=name,
        prefix=display_prefix(secret),
        secret_hash=hash_secret(secret),
        role=account.role,
        limits=limits,
        created_at=_now(),
    )
    return record, secret


# ---------------------------------------------------------------------------- JSON views


def cny(nano: int) -> str:
    """Money in responses: an exact decimal string of CNY."""
    return format_cny(nano)


def account_json(account: AccountRecord) -> dict[str, Any]:
    return {
        "id": account.id,
        "name": account.name,
        "role": account.role,
        "balance": cny(account.balance_nano),
        "balance_nano": account.balance_nano,
        # The part of the balance servers hold as credit for requests (docs/billing.md).
        "leased": cny(account.leased_nano),
        "leased_nano": account.leased_nano,
        "created_at": account.created_at.isoformat(),
        "disabled_at": None if account.disabled_at is None else account.disabled_at.isoformat(),
    }


def grant_json(grant: KeyGrant) -> dict[str, Any]:
    key, limits = grant.key, grant.limits
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "user": grant.account.name,
        "role": grant.account.role,
        "created_at": key.created_at.isoformat(),
        "revoked_at": None if key.revoked_at is None else key.revoked_at.isoformat(),
        "expires_at": None if limits.expires_at is None else limits.expires_at.isoformat(),
        "models": None if limits.allowed_models is None else list(limits.allowed_models),
        "limit": None if limits.spend_limit_nano is None else cny(limits.spend_limit_nano),
        "spent": cny(grant.spent_nano),
        "rpm": limits.rpm,
        "tpm": limits.tpm,
    }


def usage_json(row: UsageRecord) -> dict[str, Any]:
    """A usage row as `GET /api/v1/generation` returns it (OpenRouter's names where they
    exist: tokens_prompt, tokens_completion, generation_time, latency)."""
    return {
        "id": row.request_id,
        "request_id": row.trace_id,
        "model": row.model,
        "backend": row.backend,
        "created_at": row.created_at.isoformat(),
        "tokens_prompt": row.prompt_tokens,
        "tokens_completion": row.completion_tokens,
        "tokens_reasoning": row.reasoning_tokens,
        "tokens_cached": row.cached_tokens,
        "total_cost": cny(row.cost_nano),
        "cost_nano": row.cost_nano,
        "latency": row.ttft_ms,
        "generation_time": row.latency_ms,
        "finish_reason": row.finish_reason,
        "native_finish_reason": row.native_finish_reason,
        "status": row.status,
        "error_code": row.error_code,
        "streamed": row.streamed,
        "cancelled": row.cancelled,
        "estimated": row.estimated,
        "anomaly": row.anomaly,
        "key_id": row.key_id,
    }


def total_json(total: UsageTotal) -> dict[str, Any]:
    return {
        "group": total.group,
        "requests": total.requests,
        "prompt_tokens": total.prompt_tokens,
        "completion_tokens": total.completion_tokens,
        "reasoning_tokens": total.reasoning_tokens,
        "cost": cny(total.cost_nano),
        "cost_nano": total.cost_nano,
    }


def cost_number(nano: int) -> float:
    """Cost as a JSON number of CNY (for `usage.cost`, where clients expect a number); the
    exact figure is in the usage rows."""
    return float(Decimal(nano) / NANO_PER_YUAN)
