"""Group commit for the request hot path: holds and settlements, many per transaction.

Every billed request writes twice (a hold at admission, a settlement at the end). One
transaction each costs a lock, a commit and a handful of statements, and on SQLite only one
writer runs at a time: at a few thousand requests a second that is the bottleneck. So a
writer thread takes whatever holds and settlements are waiting and applies them together in
one transaction, with set-wise statements (`executemany` inserts, one `DELETE … IN`, one
update per account and per key), then answers each request's future. A request waits for the
commit of its batch, so what it was told is durable. When nothing else is waiting, a batch is
one operation and costs what a plain transaction does.

Correctness does not rest on the batching: inside the transaction the involved accounts and
keys are locked (PostgreSQL: `SELECT … FOR UPDATE`, accounts then keys, each in id order, so
replicas never deadlock; SQLite: the transaction holds the database's write lock) and read,
each hold is decided in submission order against the running balance and key spending, and
the totals are written back. Settlements are applied before holds, so money a batch releases
can serve the holds of the same batch. If a batch fails as a whole (a database error), each of
its operations is retried alone, so one bad operation fails only its own request.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from modelport.store.base import HoldResult, StoreError, UsageRecord
from modelport.store.schema import accounts, api_keys, holds, ledger
from modelport.store.schema import usage as usage_rows

log = logging.getLogger("modelport.store")

MAX_BATCH = 256

_IDS: sa.BindParameter[Any] = sa.bindparam("p_ids", expanding=True)
_TAKEN_HOLDS = sa.select(holds.c.request_id).where(holds.c.request_id.in_(_IDS))
_TAKEN_USAGE = sa.select(usage_rows.c.request_id).where(usage_rows.c.request_id.in_(_IDS))
_RELEASE = (
    holds.delete()
    .where(holds.c.request_id.in_(_IDS))
    .returning(holds.c.request_id, holds.c.account_id, holds.c.key_id, holds.c.amount_nano)
)
_ACCOUNTS = (
    sa.select(accounts.c.id, accounts.c.balance_nano)
    .where(accounts.c.id.in_(_IDS))
    .order_by(accounts.c.id)
)
_KEYS = (
    sa.select(api_keys.c.id, api_keys.c.spent_nano, api_keys.c.spend_limit_nano)
    .where(api_keys.c.id.in_(_IDS))
    .order_by(api_keys.c.id)
)
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


@dataclass(frozen=True, slots=True)
class HoldOp:
    request_id: str
    account_id: int
    key_id: int
    amount_nano: int
    created_at: datetime
    expires_at: datetime


Op = HoldOp | UsageRecord
Transaction = Callable[[], AbstractContextManager[sa.Connection]]


class BatchWriter:
    """One writer thread per store; `submit` from any thread, `close` to stop it."""

    def __init__(
        self,
        transaction: Transaction,
        *,
        lock_rows: bool,
        translate: Callable[[Exception], Exception] = lambda error: error,
    ) -> None:
        self._transaction = transaction
        self._translate = translate  # database errors into the store's own
        self._lock_rows = lock_rows  # SELECT … FOR UPDATE (PostgreSQL)
        self._queue: queue.SimpleQueue[tuple[Op, Future[Any]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False

    def submit(self, op: Op) -> Future[Any]:
        """A future of the op's result: `HoldResult` for a hold, `bool` for a settlement."""
        future: Future[Any] = Future()
        if self._closed:
            future.set_exception(RuntimeError("the store is closed"))
            return future
        self._ensure_started()
        self._queue.put((op, future))
        return future

    def close(self) -> None:
        with self._start_lock:
            self._closed = True
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()

    def _ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run, name="modelport-store-writer", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            # A future cancelled while it waited is not applied (no one will hear of it).
            live = [(op, future) for op, future in batch if future.set_running_or_notify_cancel()]
            if live:
                self._apply(live)
            if stop:
                return

    def _apply(self, batch: list[tuple[Op, Future[Any]]]) -> None:
        try:
            results = self._transact([op for op, _ in batch])
        except Exception as error:
            if len(batch) == 1:
                batch[0][1].set_exception(self._translate(error))
                return
            log.warning("a batch of %d writes failed (%s); retrying each alone", len(batch), error)
            for item in batch:
                self._apply([item])
            return
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(result)

    def _transact(self, ops: list[Op]) -> list[Any]:
        with self._transaction() as connection:
            return apply_ops(connection, ops, lock_rows=self._lock_rows)


# One operation alone (the usual case when the server is not busy) takes the direct path:
# conditional updates that check and move the money in one statement each.
_TAKEN_ONE = sa.select(
    sa.or_(
        sa.exists().where(holds.c.request_id == sa.bindparam("p_request")),
        sa.exists().where(usage_rows.c.request_id == sa.bindparam("p_request")),
    )
)
_TAKE = (
    accounts.update()
    .where(
        accounts.c.id == sa.bindparam("p_account"),
        accounts.c.balance_nano >= sa.bindparam("p_amount"),
    )
    .values(balance_nano=accounts.c.balance_nano - sa.bindparam("p_amount"))
    .returning(accounts.c.balance_nano)
)
_SPEND = (
    api_keys.update()
    .where(
        api_keys.c.id == sa.bindparam("p_key"),
        sa.or_(
            api_keys.c.spend_limit_nano.is_(None),
            api_keys.c.spent_nano + sa.bindparam("p_amount") <= api_keys.c.spend_limit_nano,
        ),
    )
    .values(spent_nano=api_keys.c.spent_nano + sa.bindparam("p_amount"))
)
_BALANCE = sa.select(accounts.c.balance_nano).where(accounts.c.id == sa.bindparam("p_account"))
_KEY_EXISTS = sa.select(api_keys.c.id).where(api_keys.c.id == sa.bindparam("p_key"))
_RELEASE_ONE = (
    holds.delete()
    .where(holds.c.request_id == sa.bindparam("p_request"))
    .returning(holds.c.account_id, holds.c.key_id, holds.c.amount_nano)
)


def apply_ops(connection: sa.Connection, ops: list[Op], *, lock_rows: bool) -> list[Any]:
    """Apply holds and settlements in one transaction; results in the order of `ops`."""
    if len(ops) == 1:
        op = ops[0]
        if isinstance(op, HoldOp):
            return [_hold_one(connection, op)]
        return [_settle_one(connection, op)]
    settles = [op for op in ops if isinstance(op, UsageRecord)]
    hold_ops = [op for op in ops if isinstance(op, HoldOp)]
    account_ids = {op.account_id for op in ops}
    key_ids = {op.key_id for op in ops}
    balances, spent, limits = _lock(connection, account_ids, key_ids, lock_rows)
    settled = _settle(connection, settles, balances, spent) if settles else {}
    held = _hold(connection, hold_ops, balances, spent, limits) if hold_ops else {}
    results: list[Any] = []
    seen_settles: set[str] = set()
    for op in ops:
        if isinstance(op, UsageRecord):
            first = op.request_id not in seen_settles
            seen_settles.add(op.request_id)
            results.append(settled.get(op.request_id, False) and first)
        else:
            results.append(held[id(op)])
    return results


def _hold_one(connection: sa.Connection, op: HoldOp) -> HoldResult:
    if op.amount_nano < 0:
        raise ValueError(f"a hold cannot be negative ({op.amount_nano})")
    params = {
        "p_request": op.request_id,
        "p_account": op.account_id,
        "p_key": op.key_id,
        "p_amount": op.amount_nano,
    }
    if connection.execute(_TAKEN_ONE, params).scalar():
        return HoldResult(False, "duplicate", _balance(connection, op))
    if op.amount_nano:
        # The account first, then the key: the lock order every write follows.
        balance = connection.execute(_TAKE, params).scalar_one_or_none()
        if balance is None:
            return HoldResult(False, "balance", _balance(connection, op))
        if connection.execute(_SPEND, params).rowcount != 1:
            # Put the money back in the same transaction: nothing was held.
            connection.execute(ADD_BALANCE, {"p_account": op.account_id, "p_delta": op.amount_nano})
            if connection.execute(_KEY_EXISTS, params).first() is None:
                raise StoreError(f"no key {op.key_id} to hold for")
            return HoldResult(False, "key_limit", int(balance) + op.amount_nano)
    else:
        balance = _balance(connection, op)
        if connection.execute(_KEY_EXISTS, params).first() is None:
            raise StoreError(f"no key {op.key_id} to hold for")
    connection.execute(
        holds.insert(),
        {
            "request_id": op.request_id,
            "account_id": op.account_id,
            "key_id": op.key_id,
            "amount_nano": op.amount_nano,
            "created_at": op.created_at,
            "expires_at": op.expires_at,
        },
    )
    return HoldResult(True, "ok", int(balance))


def _balance(connection: sa.Connection, op: HoldOp) -> int:
    """The account's balance as it stands; StoreError for an unknown account."""
    found = connection.execute(_BALANCE, {"p_account": op.account_id}).scalar_one_or_none()
    if found is None:
        raise StoreError(f"no account {op.account_id} to hold for")
    return int(found)


def _settle_one(connection: sa.Connection, op: UsageRecord) -> bool:
    if op.cost_nano < 0:
        raise ValueError(f"a cost cannot be negative ({op.cost_nano})")
    if connection.execute(_TAKEN_USAGE, {"p_ids": [op.request_id]}).first() is not None:
        return False
    connection.execute(usage_rows.insert(), _usage_values(op))
    balance_delta: defaultdict[int, int] = defaultdict(int)
    spending_delta: defaultdict[int, int] = defaultdict(int)
    balance_delta[op.account_id] -= op.cost_nano
    spending_delta[op.key_id] += op.cost_nano
    held = connection.execute(_RELEASE_ONE, {"p_request": op.request_id}).first()
    if held is not None:
        balance_delta[held.account_id] += int(held.amount_nano)
        spending_delta[held.key_id] -= int(held.amount_nano)
    write_deltas(connection, balance_delta, spending_delta, None, None)
    if op.cost_nano > 0:
        connection.execute(
            ledger.insert(),
            {
                "account_id": op.account_id,
                "amount_nano": -op.cost_nano,
                "kind": "charge",
                "request_id": op.request_id,
                "reason": None,
                "created_at": op.created_at,
            },
        )
    return True


def _lock(
    connection: sa.Connection, account_ids: set[int], key_ids: set[int], lock_rows: bool
) -> tuple[dict[int, int], dict[int, int], dict[int, int | None]]:
    account_query, key_query = _ACCOUNTS, _KEYS
    if lock_rows:
        account_query = account_query.with_for_update()
        key_query = key_query.with_for_update()
    balances = {
        row.id: int(row.balance_nano)
        for row in connection.execute(account_query, {"p_ids": sorted(account_ids)})
    }
    spent: dict[int, int] = {}
    limits: dict[int, int | None] = {}
    for row in connection.execute(key_query, {"p_ids": sorted(key_ids)}):
        spent[row.id] = int(row.spent_nano)
        limits[row.id] = None if row.spend_limit_nano is None else int(row.spend_limit_nano)
    return balances, spent, limits


def _settle(
    connection: sa.Connection,
    settles: list[UsageRecord],
    balances: dict[int, int],
    spent: dict[int, int],
) -> dict[str, bool]:
    """Usage rows, released holds, charges; request id -> newly settled."""
    ids = list(dict.fromkeys(op.request_id for op in settles))
    taken = set(connection.execute(_TAKEN_USAGE, {"p_ids": ids}).scalars())
    fresh: dict[str, UsageRecord] = {}
    for op in settles:
        if op.request_id not in taken and op.request_id not in fresh:
            if op.cost_nano < 0:
                raise ValueError(f"a cost cannot be negative ({op.cost_nano})")
            fresh[op.request_id] = op
    if not fresh:
        return {}
    connection.execute(usage_rows.insert(), [_usage_values(op) for op in fresh.values()])
    balance_delta: defaultdict[int, int] = defaultdict(int)
    spending_delta: defaultdict[int, int] = defaultdict(int)
    for row in connection.execute(_RELEASE, {"p_ids": list(fresh)}):
        balance_delta[row.account_id] += int(row.amount_nano)
        spending_delta[row.key_id] -= int(row.amount_nano)
    charges = []
    for op in fresh.values():
        balance_delta[op.account_id] -= op.cost_nano
        spending_delta[op.key_id] += op.cost_nano
        if op.cost_nano > 0:
            charges.append(
                {
                    "account_id": op.account_id,
                    "amount_nano": -op.cost_nano,
                    "kind": "charge",
                    "request_id": op.request_id,
                    "reason": None,
                    "created_at": op.created_at,
                }
            )
    write_deltas(connection, balance_delta, spending_delta, balances, spent)
    if charges:
        connection.execute(ledger.insert(), charges)
    return dict.fromkeys(fresh, True)


def _hold(
    connection: sa.Connection,
    hold_ops: list[HoldOp],
    balances: dict[int, int],
    spent: dict[int, int],
    limits: dict[int, int | None],
) -> dict[int, HoldResult]:
    """Holds decided in order against the running balance and spending; id(op) -> result."""
    ids = list(dict.fromkeys(op.request_id for op in hold_ops))
    taken = set(connection.execute(_TAKEN_HOLDS, {"p_ids": ids}).scalars())
    taken |= set(connection.execute(_TAKEN_USAGE, {"p_ids": ids}).scalars())
    results: dict[int, HoldResult] = {}
    rows = []
    balance_delta: defaultdict[int, int] = defaultdict(int)
    spending_delta: defaultdict[int, int] = defaultdict(int)
    for op in hold_ops:
        if op.amount_nano < 0:
            raise ValueError(f"a hold cannot be negative ({op.amount_nano})")
        if op.account_id not in balances or op.key_id not in spent:
            raise StoreError(f"no account {op.account_id} or key {op.key_id} to hold for")
        balance = balances[op.account_id]
        if op.request_id in taken:
            results[id(op)] = HoldResult(False, "duplicate", balance)
            continue
        limit = limits[op.key_id]
        if op.amount_nano:
            if balance < op.amount_nano:
                results[id(op)] = HoldResult(False, "balance", balance)
                continue
            if limit is not None and spent[op.key_id] + op.amount_nano > limit:
                results[id(op)] = HoldResult(False, "key_limit", balance)
                continue
        balances[op.account_id] = balance - op.amount_nano
        spent[op.key_id] += op.amount_nano
        balance_delta[op.account_id] -= op.amount_nano
        spending_delta[op.key_id] += op.amount_nano
        taken.add(op.request_id)
        rows.append(
            {
                "request_id": op.request_id,
                "account_id": op.account_id,
                "key_id": op.key_id,
                "amount_nano": op.amount_nano,
                "created_at": op.created_at,
                "expires_at": op.expires_at,
            }
        )
        results[id(op)] = HoldResult(True, "ok", balances[op.account_id])
    if rows:
        connection.execute(holds.insert(), rows)
    # The running values were already advanced above; write only the deltas.
    write_deltas(connection, balance_delta, spending_delta, None, None)
    return results


def write_deltas(
    connection: sa.Connection,
    balance_delta: dict[int, int],
    spending_delta: dict[int, int],
    balances: dict[int, int] | None = None,
    spent: dict[int, int] | None = None,
) -> None:
    """Add the deltas in the database (and to the running values, when given): accounts
    first, then keys, each in id order."""
    changed = [(k, d) for k, d in sorted(balance_delta.items()) if d]
    if changed:
        connection.execute(ADD_BALANCE, [{"p_account": k, "p_delta": d} for k, d in changed])
        if balances is not None:
            for key, delta in changed:
                if key in balances:
                    balances[key] += delta
    changed = [(k, d) for k, d in sorted(spending_delta.items()) if d]
    if changed:
        connection.execute(ADD_SPENDING, [{"p_key": k, "p_delta": d} for k, d in changed])
        if spent is not None:
            for key, delta in changed:
                if key in spent:
                    spent[key] += delta


USAGE_FIELDS = UsageRecord.__struct_fields__


def _usage_values(record: UsageRecord) -> dict[str, Any]:
    return {field: getattr(record, field) for field in USAGE_FIELDS}
