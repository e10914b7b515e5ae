"""Top-up codes: an admin makes a batch of codes worth an amount of CNY each; a user redeems one
into their balance, once (docs/billing.md, "Top-up codes").

- **Codes** look like `MPC-7K2Q-XW9D-4HNR-T3EB`: 16 characters from a 32-letter alphabet with
  nothing to confuse (no 0/O, 1/I), 80 random bits from `secrets`. They are shown once, when
  made; the store keeps only their SHA-256, so a leaked database hands out no credit.
- **Typing**: case, spaces and dashes (full-width ones too) are ignored, and so is a missing
  `MPC` prefix: `mpc 7k2q xw9d 4hnr t3eb` is the code above.
- **Redemption** spends the code and credits the account in one transaction
  (`CodeStore.redeem_code`): of any number of concurrent redemptions of one code, in any
  number of processes, exactly one succeeds. The ledger entry is a "topup" with the reason
  `code MPC-7K2Q` (the code's first group: enough to tell codes apart, useless once spent).
- **Guessing**: a code that does not exist, was spent, or has expired gets the same answer
  (`INVALID_CODE`), and each such failure counts against the account (`AuthThrottle`, 10 per
  15 minutes by default); past the limit the account's redemptions are refused with 429
  before any lookup.

`create_codes` is synchronous (the CLI calls it directly, the admin API through a thread);
`redeem` is a coroutine (it counts failures on the event loop, the store runs in a thread).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import secrets
import unicodedata
from datetime import UTC, datetime
from typing import Any

import msgspec

from modelport.core.errors import InvalidRequest, RateLimited
from modelport.core.money import format_cny
from modelport.services.accounts import MAX_BALANCE_NANO, account_json, cny_to_nano
from modelport.services.auth_throttle import AuthThrottle
from modelport.store.base import (
    AccountRecord,
    CodeStore,
    NewTopupCode,
    StoreConflict,
    TopupCodeRecord,
)

ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # 32 letters: 5 bits each, no 0/O or 1/I
CODE_PREFIX = "MPC"
GROUPS = 4
GROUP_LENGTH = 4
CODE_BITS = GROUPS * GROUP_LENGTH * 5  # 80
MAX_COUNT = 1000  # codes in one batch
MAX_BATCH_LENGTH = 100
MAX_CREATED_BY_LENGTH = 200
MAX_CODE_INPUT = 200  # characters a typed code may have, spaces and dashes included
REDEEM_FAILURE_LIMIT = 10
REDEEM_FAILURE_WINDOW = 15 * 60.0  # seconds
INVALID_CODE = "this code is not valid"
TOO_MANY_CODE_FAILURES = "too_many_code_failures"

# What typing may add and normalisation takes out: white space and dashes of any width.
_IGNORED = frozenset(" \t\r\n-_‐‑‒–—―−－")


class Redemption(msgspec.Struct, frozen=True, kw_only=True):
    """A redeemed code and the account after the credit."""

    code: TopupCodeRecord
    account: AccountRecord


def _now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------- codes


def generate_code() -> str:
    """A new random code, `MPC-XXXX-XXXX-XXXX-XXXX` (80 bits)."""
    body = "".join(secrets.choice(ALPHABET) for _ in range(GROUPS * GROUP_LENGTH))
    return _format(body)


def _format(body: str) -> str:
    groups = [body[i : i + GROUP_LENGTH] for i in range(0, len(body), GROUP_LENGTH)]
    return "-".join([CODE_PREFIX, *groups])


def normalize_code(text: str) -> str | None:
    """The canonical form of a typed code (`MPC-XXXX-XXXX-XXXX-XXXX`), or None when it cannot
    be one: case, white space, dashes and the `MPC` prefix are the typist's business."""
    if len(text) > MAX_CODE_INPUT:
        return None
    folded = unicodedata.normalize("NFKC", text).upper()  # full-width letters and digits too
    compact = "".join(ch for ch in folded if ch not in _IGNORED)
    length = GROUPS * GROUP_LENGTH
    if len(compact) == length + len(CODE_PREFIX) and compact.startswith(CODE_PREFIX):
        compact = compact[len(CODE_PREFIX) :]
    if len(compact) != length or any(ch not in ALPHABET for ch in compact):
        return None
    return _format(compact)


def hash_code(code: str) -> str:
    """The SHA-256 hex digest the store keeps of a canonical code."""
    return hashlib.sha256(code.encode("ascii")).hexdigest()


def code_prefix(code: str) -> str:
    """The part of a canonical code the ledger names: `MPC-XXXX`."""
    return code[: len(CODE_PREFIX) + 1 + GROUP_LENGTH]


# ---------------------------------------------------------------------------- creating


def _check_batch(batch: str | None, now: datetime) -> str:
    if batch is None or not batch.strip():
        return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
    batch = batch.strip()
    if len(batch) > MAX_BATCH_LENGTH or not batch.isprintable():
        raise InvalidRequest(
            f"batch must be 1 to {MAX_BATCH_LENGTH} printable characters", param="batch"
        )
    return batch


def create_codes(
    store: CodeStore,
    count: int,
    amount: str,
    *,
    expires_at: datetime | None = None,
    batch: str | None = None,
    created_by: str,
    now: datetime | None = None,
) -> list[tuple[TopupCodeRecord, str]]:
    """`count` codes worth `amount` CNY each, in one batch (a label; generated from the time
    when None), valid until `expires_at` (None: no expiry). Returns each stored record with
    its code: the only time the code is shown."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
        raise InvalidRequest(f"count must be a whole number from 1 to {MAX_COUNT}", param="count")
    amount_nano = cny_to_nano(amount, field="amount")
    if amount_nano <= 0:
        raise InvalidRequest("amount must be more than zero", param="amount")
    now = now or _now()
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise InvalidRequest("expires_at must carry a time zone", param="expires_at")
        if expires_at <= now:
            raise InvalidRequest("expires_at must be in the future", param="expires_at")
    label = _check_batch(batch, now)
    created_by = created_by.strip()[:MAX_CREATED_BY_LENGTH] or "unknown"
    for attempt in range(3):
        codes: list[str] = []
        while len(codes) < count:  # distinct within the batch (a repeat is a 2^-80 event)
            code = generate_code()
            if code not in codes:
                codes.append(code)
        new = [
            NewTopupCode(
                code_hash=hash_code(code),
                batch=label,
                amount_nano=amount_nano,
                created_at=now,
                created_by=created_by,
                expires_at=expires_at,
            )
            for code in codes
        ]
        try:
            records = store.create_codes(new)
        except StoreConflict:  # a code that exists already: draw the batch again
            if attempt == 2:
                raise
            continue
        return list(zip(records, codes, strict=True))
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------- redeeming


def new_throttle() -> AuthThrottle:
    """The default throttle of failed redemptions, per account."""
    return AuthThrottle(REDEEM_FAILURE_LIMIT, REDEEM_FAILURE_WINDOW)


def _bucket(account_id: int) -> str:
    return f"account {account_id}"  # no ":": AuthThrottle would read it as an IPv6 address


async def redeem(
    store: CodeStore,
    account_id: int,
    code: str,
    *,
    throttle: AuthThrottle | None,
    now: datetime | None = None,
) -> Redemption:
    """Spend `code` and credit its amount to the account. InvalidRequest (`INVALID_CODE`,
    the same for a code that never existed, was spent or expired) counts one failure against
    the account; RateLimited (429) once it has failed `throttle.limit` times in a window.
    Call it on the event loop that owns `throttle` (the store runs in a thread)."""
    bucket = _bucket(account_id)
    if throttle is not None:
        try:
            throttle.check(bucket)
        except RateLimited as limited:
            wait = math.ceil(limited.retry_after or throttle.window)
            raise RateLimited(
                f"Too many invalid top-up codes from this account; try again in {wait} s.",
                code=TOO_MANY_CODE_FAILURES,
                retry_after=limited.retry_after,
            ) from None
    canonical = normalize_code(code)
    result = None
    if canonical is not None:
        try:
            result = await asyncio.to_thread(
                store.redeem_code,
                hash_code(canonical),
                account_id=account_id,
                reason=f"code {code_prefix(canonical)}",
                now=now or _now(),
                max_balance_nano=MAX_BALANCE_NANO,
            )
        except StoreConflict:
            raise InvalidRequest(
                f"a balance may not exceed {format_cny(MAX_BALANCE_NANO)} CNY; "
                "the code was not used",
                param="code",
            ) from None
    if result is None:
        if throttle is not None:
            throttle.failed(bucket)
        raise InvalidRequest(INVALID_CODE, param="code")
    record, account = result
    return Redemption(code=record, account=account)


# ---------------------------------------------------------------------------- JSON views


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def code_json(record: TopupCodeRecord, now: datetime | None = None) -> dict[str, Any]:
    """A stored code as listings show it (never the code: it is not stored)."""
    return {
        "id": record.id,
        "batch": record.batch,
        "amount": format_cny(record.amount_nano),
        "amount_nano": record.amount_nano,
        "state": record.state(now or _now()),
        "created_at": record.created_at.isoformat(),
        "created_by": record.created_by,
        "expires_at": _time(record.expires_at),
        "redeemed_at": _time(record.redeemed_at),
        "redeemed_by": record.redeemed_by_name,
    }


def created_json(created: list[tuple[TopupCodeRecord, str]]) -> dict[str, Any]:
    """A new batch, each code with its `code`: the answer that shows them, once."""
    now = _now()
    return {
        "batch": created[0][0].batch if created else None,
        "count": len(created),
        "data": [{**code_json(record, now), "code": code} for record, code in created],
    }


def redemption_json(redemption: Redemption) -> dict[str, Any]:
    amount = redemption.code.amount_nano
    return {
        "amount": format_cny(amount),
        "amount_nano": amount,
        "account": account_json(redemption.account),
    }
