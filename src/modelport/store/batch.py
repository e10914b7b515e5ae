"""The store's writer: credit leases and the write-behind of finished requests, many per
transaction, in submission order.

Every billed request ends in a `Charge` (its usage row, ledger charge and the money out of its
process's credit lease), and nobody waits for it: the response has gone. One transaction each
would cost a lock, a commit and a handful of statements per request, and on SQLite only one
writer runs at a time. So one writer thread per store takes whatever is waiting and applies it
in one transaction with set-wise statements (`executemany` inserts, one update per account,
key and lease), then resolves each operation's future. While it holds only charges it lingers
(`linger` seconds, or until `MAX_BATCH`) to gather more; any other operation (a lease, a
return, a renewal, a flush: someone waits for it) is applied at once. `close` applies
everything queued before the thread ends.

Correctness does not rest on the batching. Inside the transaction the rows involved are
locked and read: accounts, then keys, then leases, each in id order (PostgreSQL: `SELECT … FOR
UPDATE`, the order every write follows, so replicas never wait on each other in a cycle;
SQLite: the transaction holds the database's write lock). Then the operations are applied in
submission order to those values in memory (`_Books`), exactly as if one ran after the other,
and what changed is written back. If a batch fails as a whole (a database error), each of its
operations is retried alone, in order, so one bad operation fails only its own future.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from msgspec.structs import astuple

from modelport.store.base import Charge, LeaseResult, StoreError, UsageRecord
from modelport.store.schema import accounts, api_keys, credit_leases, ledger
from modelport.store.schema import usage as usage_rows

log = logging.getLogger("modelport.store")

MAX_BATCH = 256
DEFAULT_LINGER_S = 0.01
LEASE_LOST = "lease_lost"

# ---------------------------------------------------------------------------------- operations


@dataclass(frozen=True, slots=True)
class LeaseOp:
    account_id: int
    key_id: int
    owner: str
    lease_id: int | None
    want_nano: int
    need_nano: int
    now: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class ReturnOp:
    lease_id: int
    amount_nano: int | None  # None: everything, and the lease is deleted


@dataclass(frozen=True, slots=True)
class RenewOp:
    owner: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class FlushOp:
    """Nothing to apply: resolves when everything submitted before it has committed."""


FLUSH = FlushOp()

Op = Charge | LeaseOp | ReturnOp | RenewOp | FlushOp
Transaction = Callable[[], AbstractContextManager[sa.Connection]]

# ---------------------------------------------------------------------------------- the thread


class BatchWriter:
    """One writer thread per store; `submit` from any thread, `close` to stop it."""

    def __init__(
        self,
        transaction: Transaction,
        *,
        lock_rows: bool,
        linger: float = DEFAULT_LINGER_S,
        translate: Callable[[Exception], Exception] = lambda error: error,
    ) -> None:
        self._transaction = transaction
        self._translate = translate  # database errors into the store's own
        self._lock_rows = lock_rows  # SELECT … FOR UPDATE (PostgreSQL)
        self._linger = max(0.0, linger)
        self._queue: queue.SimpleQueue[tuple[Op, Future[Any]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # orders submissions against close()
        self._wake = threading.Event()  # ends the writer's lingering
        self._closed = False
        # When each op not yet applied was submitted, oldest first (the write-behind lag).
        self._submitted_at: deque[float] = deque()

    def backlog(self) -> tuple[int, float]:
        """Ops submitted and not yet applied, and the seconds the oldest of them has waited."""
        waiting = self._submitted_at
        try:
            oldest = waiting[0]
        except IndexError:
            return 0, 0.0
        return len(waiting), max(0.0, time.monotonic() - oldest)

    def submit(self, op: Op) -> Future[Any]:
        """A future of the op's result. It is running from the start, so it cannot be
        cancelled: an operation submitted is an operation applied (a lost charge would be
        money nobody is billed)."""
        future: Future[Any] = Future()
        future.set_running_or_notify_cancel()
        with self._lock:
            if self._closed:
                future.set_exception(RuntimeError("the store is closed"))
                return future
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="modelport-store-writer", daemon=True
                )
                self._thread.start()
            self._submitted_at.append(time.monotonic())
            self._queue.put((op, future))
        if type(op) is not Charge or self._queue.qsize() >= MAX_BATCH - 1:
            self._wake.set()  # someone waits for it, or a batch is full: stop lingering
        return future

    def close(self) -> None:
        """Apply everything submitted so far, then stop; later submissions fail."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._queue.put(None)  # after every submission: none can follow it
        self._wake.set()
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        get, get_nowait = self._queue.get, self._queue.get_nowait
        while True:
            item = get()
            if item is None:
                return
            # Only charges waiting, and room for more: gather for `linger` seconds. The
            # writer sleeps through that time (submissions do not wake it one by one);
            # `_wake` ends it early.
            if self._linger and type(item[0]) is Charge and self._queue.qsize() < MAX_BATCH - 1:
                self._wake.wait(self._linger)
            self._wake.clear()
            batch = [item]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    more = get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            try:
                self._apply(batch)
            finally:
                waiting = self._submitted_at
                for _ in batch:
                    if waiting:
                        waiting.popleft()
            if stop:
                return

    def _apply(self, batch: list[tuple[Op, Future[Any]]]) -> None:
        if all(op is FLUSH for op, _ in batch):
            results: list[Any] = [None] * len(batch)
        else:
            try:
                with self._transaction() as connection:
                    results = apply_ops(connection, [op for op, _ in batch], self._lock_rows)
            except Exception as error:
                if len(batch) == 1:
                    op, future = batch[0]
                    if isinstance(op, Charge):  # nobody may be waiting for it: say so here
                        log.error("recording request %s failed: %s", op.usage.request_id, error)
                    future.set_exception(self._translate(error))
                    return
                log.warning(
                    "a batch of %d writes failed (%s); retrying each alone", len(batch), error
                )
                for item in batch:
                    self._apply([item])
                return
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(result)


# ------------------------------------------------------------------------------- the statements

_IDS: sa.BindParameter[Any] = sa.bindparam("p_ids", expanding=True)
_OWNERS: sa.BindParameter[Any] = sa.bindparam("p_owners", expanding=True)
_TAKEN_USAGE = sa.select(usage_rows.c.request_id).where(usage_rows.c.request_id.in_(_IDS))
_ACCOUNTS = (
    sa.select(accounts.c.id, accounts.c.balance_nano)
    .where(accounts.c.id.in_(_IDS))
    .order_by(accounts.c.id)
)
_KEYS = (
    sa.select(
        api_keys.c.id, api_keys.c.account_id, api_keys.c.spent_nano, api_keys.c.spend_limit_nano
    )
    .where(api_keys.c.id.in_(_IDS))
    .order_by(api_keys.c.id)
)
_LEASE_COLUMNS = (
    credit_leases.c.id,
    credit_leases.c.account_id,
    credit_leases.c.key_id,
    credit_leases.c.owner,
    credit_leases.c.amount_nano,
    credit_leases.c.expires_at,
)
_LEASES = (
    sa.select(*_LEASE_COLUMNS)
    .where(sa.or_(credit_leases.c.id.in_(_IDS), credit_leases.c.owner.in_(_OWNERS)))
    .order_by(credit_leases.c.id)
)
_LEASE_HOLDERS = sa.select(credit_leases.c.account_id, credit_leases.c.key_id).where(
    credit_leases.c.id.in_(_IDS)
)
_READS = (_ACCOUNTS, _KEYS, _LEASES)
_LOCKING_READS = tuple(query.with_for_update() for query in _READS)
_NEW_LEASE = credit_leases.insert().returning(credit_leases.c.id)
_SET_LEASE = (
    credit_leases.update()
    .where(credit_leases.c.id == sa.bindparam("p_id"))
    .values(amount_nano=sa.bindparam("p_amount"), expires_at=sa.bindparam("p_expires"))
)
_DELETE_LEASES = credit_leases.delete().where(credit_leases.c.id.in_(_IDS))
ADD_BALANCE = (
    accounts.update()
    .where(accounts.c.id == sa.bindparam("p_account"))
    .values(balance_nano=accounts.c.balance_nano + sa.bindparam("p_delta"))
)
ADD_SPENDING = (
    api_keys.update()
    .where(api_keys.c.id == sa.bindparam("p_key"))
    .values(spent_nano=api_keys.c.spent_nano + sa.bindparam("p_delta"))
)

USAGE_FIELDS = UsageRecord.__struct_fields__
LEDGER_FIELDS = ("account_id", "amount_nano", "kind", "request_id", "reason", "created_at")
_COST = USAGE_FIELDS.index("cost_nano")
_ANOMALY = USAGE_FIELDS.index("anomaly")
_CREATED_AT = USAGE_FIELDS.index("created_at")


class DriverInsert:
    """A Core INSERT compiled once for one dialect and run as the driver's own `executemany`
    over rows already in column order: the per-row work SQLAlchemy would do (a parameter dict
    per row, every value through its type) shrinks to the columns whose type has a bind
    processor (timestamps; booleans on SQLite). Rows are lists in `columns` order."""

    def __init__(self, table: sa.Table, columns: tuple[str, ...], dialect: sa.Dialect) -> None:
        # inline(): no RETURNING of a generated key (nobody reads it back).
        compiled = table.insert().inline().compile(dialect=dialect, column_keys=list(columns))
        self.sql = compiled.string
        self._columns = columns
        order = tuple(compiled.positiontup or ()) if dialect.positional else columns
        if sorted(order) != sorted(columns):
            raise RuntimeError(f"unexpected parameters in {self.sql!r}")
        self._positional = dialect.positional
        self._order = None if order == columns else [columns.index(name) for name in order]
        self.processors = [
            (index, processor)
            for index, name in enumerate(columns)
            if (processor := table.c[name].type.dialect_impl(dialect).bind_processor(dialect))
        ]

    def process(self, row: list[Any]) -> None:
        """Put the row's values into the driver's form, in place."""
        for index, processor in self.processors:
            value = row[index]
            if value is not None:
                row[index] = processor(value)

    def execute(self, connection: sa.Connection, rows: list[list[Any]]) -> None:
        params: list[Any]
        if not self._positional:
            params = [dict(zip(self._columns, row, strict=True)) for row in rows]
        elif self._order is None:
            params = [tuple(row) for row in rows]
        else:
            params = [tuple(row[index] for index in self._order) for row in rows]
        connection.exec_driver_sql(self.sql, params)


class DriverInserts:
    """The write-behind's two inserts for one dialect. A ledger charge row is made of values
    of its usage row already processed (its timestamp), so it needs no processing itself."""

    def __init__(self, dialect: sa.Dialect) -> None:
        self.usage = DriverInsert(usage_rows, USAGE_FIELDS, dialect)
        self.ledger = DriverInsert(ledger, LEDGER_FIELDS, dialect)
        if {LEDGER_FIELDS[index] for index, _ in self.ledger.processors} - {"created_at"}:
            raise RuntimeError("ledger rows need processing the write-behind does not do")


@functools.lru_cache(maxsize=16)
def driver_inserts(dialect: sa.Dialect) -> DriverInserts:
    return DriverInserts(dialect)


# ------------------------------------------------------------------------------ applying a batch


def apply_ops(connection: sa.Connection, ops: list[Op], lock_rows: bool) -> list[Any]:
    """Apply the operations in order in one transaction; their results in the same order."""
    books = _Books(connection, ops, lock_rows)
    results = [books.apply(op) for op in ops]
    books.write()
    return results


class _Lease:
    """A lease row as this batch sees it: read (or inserted) at the start, changed in memory."""

    __slots__ = ("account_id", "amount", "expires_at", "id", "key_id", "owner", "stored")

    def __init__(
        self,
        id: int,
        account_id: int,
        key_id: int,
        owner: str,
        amount: int,
        expires_at: datetime,
    ) -> None:
        self.id = id
        self.account_id = account_id
        self.key_id = key_id
        self.owner = owner
        self.amount = amount
        self.expires_at = expires_at
        self.stored = (amount, expires_at)  # what the database holds


class _Books:
    """The rows one batch touches, locked and read; operations change them in memory, in
    order; `write` puts what changed back."""

    def __init__(self, connection: sa.Connection, ops: list[Op], lock_rows: bool) -> None:
        self._connection = connection
        self._inserts = driver_inserts(connection.dialect)
        account_ids: set[int] = set()
        key_ids: set[int] = set()
        lease_ids: set[int] = set()
        returned: set[int] = set()
        owners: set[str] = set()
        request_ids: list[str] = []
        leasing = False
        for op in ops:
            if type(op) is Charge:
                account_ids.add(op.usage.account_id)
                key_ids.add(op.usage.key_id)
                request_ids.append(op.usage.request_id)
                if op.lease_id is not None:
                    lease_ids.add(op.lease_id)
            elif type(op) is LeaseOp:
                leasing = True
                account_ids.add(op.account_id)
                key_ids.add(op.key_id)
                if op.lease_id is not None:
                    lease_ids.add(op.lease_id)
            elif type(op) is ReturnOp:
                returned.add(op.lease_id)
            elif type(op) is RenewOp:
                owners.add(op.owner)
        lease_ids |= returned
        if lock_rows and returned:
            # A returned lease's account and key are locked before it, like everywhere.
            for row in connection.execute(_LEASE_HOLDERS, {"p_ids": sorted(returned)}):
                account_ids.add(row.account_id)
                key_ids.add(row.key_id)
        self._reads = _LOCKING_READS if lock_rows else _READS
        self._account_ids, self._key_ids = account_ids, key_ids
        self.balances: dict[int, int] = {}  # account -> free balance, running
        self.spent: dict[int, int] = {}  # key -> spending (leases included), running
        self.limits: dict[int, int | None] = {}
        self.key_accounts: dict[int, int] = {}
        self.balance_delta: defaultdict[int, int] = defaultdict(int)
        self.spending_delta: defaultdict[int, int] = defaultdict(int)
        # Row locks must be taken now, in order. Without them (SQLite: the write lock) the
        # accounts and keys are read only if an operation needs their values: most batches
        # are charges their leases cover.
        self._money_read = False
        if lock_rows or leasing:
            self._read_money()
        self.leases: dict[int, _Lease] = {}
        if lease_ids or owners:
            params = {"p_ids": sorted(lease_ids), "p_owners": sorted(owners)}
            for row in connection.execute(self._reads[2], params):
                self.leases[row.id] = _Lease(
                    row.id,
                    row.account_id,
                    row.key_id,
                    row.owner,
                    int(row.amount_nano),
                    row.expires_at,
                )
        self.deleted: list[int] = []
        self.taken: set[str] = set()  # request ids recorded already (or earlier in the batch)
        if request_ids:
            self.taken.update(connection.execute(_TAKEN_USAGE, {"p_ids": request_ids}).scalars())
        self.usage: list[list[Any]] = []
        self.charges: list[list[Any]] = []

    def _read_money(self) -> None:
        """Read (and lock) the batch's accounts and keys; what the batch already moved is
        added to what was read."""
        self._money_read = True
        connection, (account_query, key_query, _) = self._connection, self._reads
        if self._account_ids:
            for row in connection.execute(account_query, {"p_ids": sorted(self._account_ids)}):
                self.balances[row.id] = int(row.balance_nano) + self.balance_delta.get(row.id, 0)
        if self._key_ids:
            for row in connection.execute(key_query, {"p_ids": sorted(self._key_ids)}):
                self.spent[row.id] = int(row.spent_nano) + self.spending_delta.get(row.id, 0)
                limit = row.spend_limit_nano
                self.limits[row.id] = None if limit is None else int(limit)
                self.key_accounts[row.id] = row.account_id

    def apply(self, op: Op) -> Any:
        if type(op) is Charge:
            return self._record(op)
        if type(op) is LeaseOp:
            return self._lease(op)
        if type(op) is ReturnOp:
            return self._return(op)
        if type(op) is RenewOp:
            return self._renew(op)
        return None  # FLUSH

    # Money moves: the running values and the deltas written back.

    def _to_balance(self, account_id: int, amount: int) -> None:
        if account_id in self.balances:
            self.balances[account_id] += amount
        self.balance_delta[account_id] += amount

    def _to_spending(self, key_id: int, amount: int) -> None:
        if key_id in self.spent:
            self.spent[key_id] += amount
        self.spending_delta[key_id] += amount

    def _free(self, account_id: int) -> int:
        if not self._money_read:
            self._read_money()
        try:
            return self.balances[account_id]
        except KeyError:
            raise StoreError(f"no account {account_id}") from None

    def _matching(
        self, lease_id: int | None, account_id: int, key_id: int, owner: str | None = None
    ) -> _Lease | None:
        """The lease, when it still exists and is the caller's (its account, key, owner)."""
        if lease_id is None:
            return None
        lease = self.leases.get(lease_id)
        if lease is None or lease.account_id != account_id or lease.key_id != key_id:
            return None
        if owner is not None and lease.owner != owner:
            return None
        return lease

    def _record(self, op: Charge) -> bool:
        usage = op.usage
        if usage.request_id in self.taken:
            return False
        self.taken.add(usage.request_id)
        cost = usage.cost_nano
        anomaly = usage.anomaly
        lease = self._matching(op.lease_id, usage.account_id, usage.key_id)
        if lease is not None and lease.amount >= cost:
            lease.amount -= cost  # the key's spending already counts it
        elif op.postpaid:
            self._to_balance(usage.account_id, -cost)
            self._to_spending(usage.key_id, cost)
        else:
            # The lease is gone (swept after it expired) or short: what it has, then the free
            # balance as far as it goes. A prepaid balance never goes below zero; the cost
            # billed is what was taken, and the row says why.
            from_lease = 0
            if lease is not None:
                from_lease, lease.amount = lease.amount, 0
            from_balance = min(cost - from_lease, max(self._free(usage.account_id), 0))
            self._to_balance(usage.account_id, -from_balance)
            self._to_spending(usage.key_id, from_balance)
            if from_lease + from_balance < cost:
                cost = from_lease + from_balance
                anomaly = LEASE_LOST if anomaly is None else f"{anomaly},{LEASE_LOST}"
        row = list(astuple(usage))
        if cost != usage.cost_nano:
            row[_COST] = cost
            row[_ANOMALY] = anomaly
        self._inserts.usage.process(row)
        self.usage.append(row)
        if cost > 0:
            charge = [usage.account_id, -cost, "charge", usage.request_id, None, row[_CREATED_AT]]
            self.charges.append(charge)
        return True

    def _lease(self, op: LeaseOp) -> LeaseResult:
        free = self._free(op.account_id)
        if self.key_accounts.get(op.key_id) != op.account_id:
            raise StoreError(f"no key {op.key_id} of account {op.account_id}")
        limit = self.limits[op.key_id]
        headroom = None if limit is None else limit - self.spent[op.key_id]
        grant = min(op.want_nano, free) if headroom is None else min(op.want_nano, free, headroom)
        grant = max(grant, 0)
        floor = max(op.need_nano, 1) if op.want_nano else 0  # nothing is not a grant
        if grant < floor:
            return LeaseResult(
                granted_nano=0,
                lease_id=None,
                reason="balance" if free < floor else "key_limit",
                balance_nano=free,
                key_headroom_nano=headroom,
            )
        lease = self._matching(op.lease_id, op.account_id, op.key_id, op.owner)
        if lease is None:
            values = {
                "account_id": op.account_id,
                "key_id": op.key_id,
                "owner": op.owner,
                "amount_nano": grant,
                "created_at": op.now,
                "expires_at": op.expires_at,
            }
            lease_id = self._connection.execute(_NEW_LEASE, values).scalar_one()
            lease = _Lease(lease_id, op.account_id, op.key_id, op.owner, grant, op.expires_at)
            self.leases[lease_id] = lease
        else:
            lease.amount += grant
            lease.expires_at = op.expires_at
        self._to_balance(op.account_id, -grant)
        self._to_spending(op.key_id, grant)
        return LeaseResult(
            granted_nano=grant,
            lease_id=lease.id,
            balance_nano=self.balances[op.account_id],
            key_headroom_nano=None if headroom is None else headroom - grant,
        )

    def _return(self, op: ReturnOp) -> int:
        lease = self.leases.get(op.lease_id)
        if lease is None:
            return 0
        amount = lease.amount if op.amount_nano is None else min(op.amount_nano, lease.amount)
        lease.amount -= amount
        self._to_balance(lease.account_id, amount)
        self._to_spending(lease.key_id, -amount)
        if op.amount_nano is None:
            del self.leases[lease.id]
            self.deleted.append(lease.id)
        return amount

    def _renew(self, op: RenewOp) -> int:
        renewed = 0
        for lease in self.leases.values():
            if lease.owner == op.owner:
                lease.expires_at = op.expires_at
                renewed += 1
        return renewed

    def write(self) -> None:
        connection = self._connection
        if self.usage:
            self._inserts.usage.execute(connection, self.usage)
        if self.charges:
            self._inserts.ledger.execute(connection, self.charges)
        write_deltas(connection, self.balance_delta, self.spending_delta)
        changed = [
            {"p_id": lease.id, "p_amount": lease.amount, "p_expires": lease.expires_at}
            for lease in self.leases.values()
            if (lease.amount, lease.expires_at) != lease.stored
        ]
        if changed:
            connection.execute(_SET_LEASE, changed)
        if self.deleted:
            connection.execute(_DELETE_LEASES, {"p_ids": self.deleted})


def write_deltas(
    connection: sa.Connection, balance_delta: dict[int, int], spending_delta: dict[int, int]
) -> None:
    """Add the deltas in the database: accounts first, then keys, each in id order."""
    changed = [{"p_account": k, "p_delta": d} for k, d in sorted(balance_delta.items()) if d]
    if changed:
        connection.execute(ADD_BALANCE, changed)
    changed = [{"p_key": k, "p_delta": d} for k, d in sorted(spending_delta.items()) if d]
    if changed:
        connection.execute(ADD_SPENDING, changed)
