"""Credit in memory: holds served from per-process leases of an account's balance.

Admission must not wait on the database. So a process *leases* a slice of an account's
balance in one conditional write (`BillingStore.lease_credit`: the money leaves the free
balance, and counts against the key's spending limit), and then serves the holds of that
key's requests from memory. A hold is carved out of the lease while its request runs; at the
end the request's cost stays consumed and the rest of the hold is free again. The cost reaches
the database behind the response (`BillingStore.record`, write-behind), taken out of the
lease there. What a lease has left goes back when the process stops, when the lease has been
idle a while, or when another replica runs short of credit for the same account.

- One lease per key per process. The first request of a key waits for its lease to be taken
  (one database write); later ones do not. When a lease runs low it is topped up in the
  background, before a request has to wait.
- A lease takes up to `LEASE_HOLDS` times the hold that asked for it (at least the hold, at
  most the free balance), so a busy key writes its lease rarely.
- Short of credit: first this process gives back its other leases of the same account, then
  (with `reclaim`, over Redis) asks the other replicas to give back theirs, and tries again for
  a short while before refusing (402). A balance split across replicas is never refused while
  its money sits idle elsewhere for longer than that.
- Leases carry an expiry, renewed by a heartbeat; a process that dies leaves its leases until
  they expire, and then any replica's sweep gives the money back. In-memory holds die with it:
  only the requests in flight (and the settlements not yet written) go unbilled; nothing is
  billed twice; no balance ever goes below zero.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from modelport.core.errors import InsufficientBalance, ModelportError
from modelport.core.money import format_cny
from modelport.store.base import BillingStore, LeaseResult

log = logging.getLogger("modelport.credit")

LEASE_HOLDS = 16  # a lease asks for this many times the hold that needed it
REFILL_HOLDS = 4  # top up in the background when less than this many holds' worth is left
RECLAIM_WAITS = (0.02, 0.05, 0.1, 0.2)  # seconds between tries after asking other replicas
IDLE_RETURN_S = 30.0  # a lease unused this long goes back to the account


def process_owner() -> str:
    """A name for this process's leases: unique per start."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{secrets.token_hex(4)}"


class Lease:
    """One key's lease in this process. `granted` is what the database lease holds for us
    (less what was given back); `charged` what settled requests consumed (written or about
    to be); `held` what requests in flight reserve."""

    __slots__ = ("account_id", "charged", "granted", "held", "key_id", "lease_id", "taking", "used")

    def __init__(self, account_id: int, key_id: int) -> None:
        self.account_id = account_id
        self.key_id = key_id
        self.lease_id: int | None = None
        self.granted = 0
        self.charged = 0
        self.held = 0
        self.taking: asyncio.Future[LeaseResult] | None = None
        self.used = time.monotonic()

    @property
    def available(self) -> int:
        return self.granted - self.charged - self.held


class Hold:
    """What one admitted request reserved; `lease` None for a hold of nothing."""

    __slots__ = ("amount", "lease")

    def __init__(self, lease: Lease | None, amount: int) -> None:
        self.lease = lease
        self.amount = amount


class CreditBook:
    def __init__(
        self,
        store: BillingStore,
        *,
        owner: str,
        ttl: float,
        reclaim: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._owner = owner
        self._ttl = timedelta(seconds=ttl)
        self._reclaim = reclaim  # asks the other replicas to give back an account's credit
        self._leases: dict[int, Lease] = {}  # key id -> lease

    @property
    def owner(self) -> str:
        return self._owner

    def held(self, key_id: int) -> int:
        """What requests in flight of this key hold now."""
        lease = self._leases.get(key_id)
        return 0 if lease is None else lease.held

    # ------------------------------------------------------------------ admission

    def try_hold(self, account_id: int, key_id: int, amount: int) -> Hold | None:
        """The fast path: a hold served from memory, or None when the lease cannot cover it."""
        lease = self._leases.get(key_id)
        if lease is None or lease.available < amount or lease.taking is not None:
            return None
        lease.held += amount
        lease.used = time.monotonic()
        if lease.available < amount * REFILL_HOLDS:
            self._refill(lease, amount)
        return Hold(lease, amount)

    async def hold(self, account_id: int, key_id: int, amount: int) -> Hold:
        """Reserve `amount` for one request; `InsufficientBalance` (402) when the balance (or
        the key's spending limit) cannot cover it."""
        if amount <= 0:
            return Hold(None, 0)
        held = self.try_hold(account_id, key_id, amount)
        if held is not None:
            return held
        reclaimed = False
        waits = iter(RECLAIM_WAITS)
        while True:
            # Looked up afresh on every pass: a lease given back meanwhile (another replica
            # asked for it) is gone from the book, and a new one is taken instead.
            lease = self._leases.get(key_id)
            if lease is None:
                lease = self._leases[key_id] = Lease(account_id, key_id)
            if lease.taking is not None:
                await asyncio.shield(lease.taking)  # cleared before it completes: no spin
                continue
            if lease.available >= amount:
                lease.held += amount
                lease.used = time.monotonic()
                return Hold(lease, amount)
            result = await self._take(lease, need=amount - lease.available, want=amount)
            if result.granted_nano or lease.available >= amount:
                continue
            if not reclaimed:
                reclaimed = True
                await self._give_back_others(account_id, keep=key_id)
                if self._reclaim is not None:
                    await self._reclaim(account_id)
                continue
            wait = next(waits, None) if self._reclaim is not None else None
            if wait is None:
                raise self._refusal(result, amount)
            await asyncio.sleep(wait)

    def _refill(self, lease: Lease, amount: int) -> None:
        if lease.taking is not None or lease.lease_id is None:
            return
        self._take(lease, need=0, want=amount).add_done_callback(_log_failure)

    def _take(self, lease: Lease, *, need: int, want: int) -> asyncio.Future[LeaseResult]:
        """Take (or extend) the lease by up to LEASE_HOLDS × want, at least `need`; one take
        per lease at a time (others wait for it). `lease.taking` is cleared before the take
        completes, so whoever awaits it finds the lease settled."""
        if lease.taking is None:
            lease.taking = asyncio.ensure_future(self._take_now(lease, need=need, want=want))
        return asyncio.shield(lease.taking)

    async def _take_now(self, lease: Lease, *, need: int, want: int) -> LeaseResult:
        now = datetime.now(UTC)
        try:
            result = await asyncio.wrap_future(
                self._store.lease_credit(
                    account_id=lease.account_id,
                    key_id=lease.key_id,
                    owner=self._owner,
                    lease_id=lease.lease_id,
                    want_nano=max(need, want * LEASE_HOLDS),
                    need_nano=need,
                    now=now,
                    expires_at=now + self._ttl,
                )
            )
        finally:
            lease.taking = None
        if result.granted_nano:
            lease.lease_id = result.lease_id
            lease.granted += result.granted_nano
        return result

    @staticmethod
    def _refusal(result: LeaseResult, amount: int) -> ModelportError:
        needed = format_cny(amount)
        if result.reason == "key_limit":
            return InsufficientBalance(
                f"This API key has reached its spending limit: this request may cost up to "
                f"{needed} CNY. Ask an administrator to raise the key's limit.",
                code="key_limit_exceeded",
            )
        return InsufficientBalance(
            f"Insufficient balance: this request may cost up to {needed} CNY (the prompt plus "
            f"max_tokens, or what the model may write, at the model's prices) and the balance "
            f"is {format_cny(max(result.balance_nano, 0))} CNY. Lower max_tokens, or top up."
        )

    # ------------------------------------------------------------------ settlement

    def settle(self, held: Hold, cost: int) -> int:
        """Release the hold and consume `cost` of it (never more than it: what a prepaid
        request is charged is capped by its hold). Returns what was consumed."""
        lease = held.lease
        if lease is None:
            return 0
        charged = min(cost, held.amount)
        lease.held -= held.amount
        lease.charged += charged
        lease.used = time.monotonic()
        return charged

    # ------------------------------------------------------------------ giving back

    async def _give_back_others(self, account_id: int, *, keep: int) -> None:
        for key_id, lease in list(self._leases.items()):
            if lease.account_id == account_id and key_id != keep:
                await self._give_back(lease)

    async def give_back(self, account_id: int) -> None:
        """Another replica is short of this account's credit: give back what our leases of it
        do not need for the requests in flight."""
        for lease in list(self._leases.values()):
            if lease.account_id == account_id:
                await self._give_back(lease)

    async def _give_back(self, lease: Lease) -> None:
        if lease.lease_id is None or lease.taking is not None:
            return
        spare = lease.available
        if lease.held == 0:
            # Nothing in flight: close it (the store applies the charges submitted before).
            self._leases.pop(lease.key_id, None)
            lease.granted -= spare
            lease_id, lease.lease_id = lease.lease_id, None
            await asyncio.wrap_future(self._store.return_credit(lease_id, None))
        elif spare > 0:
            lease.granted -= spare
            await asyncio.wrap_future(self._store.return_credit(lease.lease_id, spare))

    async def tick(self) -> None:
        """Housekeeping, every few seconds: renew this process's leases, give back idle ones."""
        now = datetime.now(UTC)
        await asyncio.wrap_future(self._store.renew_leases(self._owner, now + self._ttl))
        idle_before = time.monotonic() - IDLE_RETURN_S
        for lease in list(self._leases.values()):
            if lease.held == 0 and lease.used < idle_before:
                await self._give_back(lease)

    async def aclose(self) -> None:
        """Give back every lease (after the charges already submitted)."""
        for lease in list(self._leases.values()):
            if lease.taking is not None:
                await asyncio.shield(lease.taking)
            if lease.lease_id is not None:
                self._leases.pop(lease.key_id, None)
                await asyncio.wrap_future(self._store.return_credit(lease.lease_id, None))
        self._leases.clear()


def _log_failure(task: asyncio.Future[LeaseResult]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("topping up a credit lease failed: %s", task.exception())
