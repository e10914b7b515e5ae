"""One contract, every SQL database: accounts, prepaid balances, holds, the ledger and usage
rows, on SQLite (a file) and PostgreSQL (a fresh database on the local server), each built by
the packaged migrations.

The books must always balance: for every account, balance == ledger sum - active holds, and
the ledger sum == top-ups - the cost of its usage rows.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier as BarrierType
from pathlib import Path
from typing import Literal

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from tests.support.postgres import postgres_url_or_skip

from modelport.core.money import NANO_PER_YUAN
from modelport.store import migrate
from modelport.store.base import (
    AccountRecord,
    ApiKeyRecord,
    HoldResult,
    KeyLimits,
    Role,
    StoreConflict,
    StoreError,
    UsageRecord,
    UsageTotal,
)
from modelport.store.engine import make_engine
from modelport.store.migrator import alembic_config
from modelport.store.schema import UtcDateTime, metadata
from modelport.store.sql import SqlStore

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
YUAN = NANO_PER_YUAN
HOLD_TTL = timedelta(minutes=10)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'modelport.db'}"
    else:
        with postgres_url_or_skip() as fresh:
            yield fresh


@pytest.fixture
def store(url: str) -> Iterator[SqlStore]:
    migrate(url)
    with SqlStore(url) as opened:
        yield opened


def account(store: SqlStore, name: str = "acme", balance: int = 0) -> AccountRecord:
    created = store.create_account(name=name, role="user", created_at=T0)
    if balance:
        return store.top_up(created.id, balance, reason="opening", created_at=T0)
    return created


def key(
    store: SqlStore,
    owner: AccountRecord,
    digest: str = "a" * 64,
    limits: KeyLimits = KeyLimits(),  # noqa: B008 (frozen: sharing the default is safe)
) -> ApiKeyRecord:
    return store.create_account_key(
        account_id=owner.id,
        name=f"key-{digest[:4]}",
        prefix="sk-mp-abcdef",
        secret_hash=digest,
        role="user",
        limits=limits,
        created_at=T0,
    )


def hold(
    store: SqlStore, request_id: str, owner: AccountRecord, by: ApiKeyRecord, amount: int
) -> HoldResult:
    return store.place_hold(
        request_id=request_id,
        account_id=owner.id,
        key_id=by.id,
        amount_nano=amount,
        created_at=T0,
        expires_at=T0 + HOLD_TTL,
    )


def usage(
    request_id: str,
    owner: AccountRecord,
    by: ApiKeyRecord,
    cost: int,
    *,
    model: str = "qwen3-8b",
    at: datetime = T0,
    prompt: int = 10,
    completion: int = 20,
) -> UsageRecord:
    return UsageRecord(
        request_id=request_id,
        account_id=owner.id,
        key_id=by.id,
        model=model,
        backend="local",
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_nano=cost,
        created_at=at,
    )


def balance(store: SqlStore, owner: AccountRecord) -> int:
    found = store.get_account_by_id(owner.id)
    assert found is not None
    return found.balance_nano


def spent(store: SqlStore, by: ApiKeyRecord) -> int:
    grant = store.find_grant(by.secret_hash)
    assert grant is not None
    return grant.spent_nano


# ---------------------------------------------------------------------------- schema


def test_migrations_build_exactly_the_schema_module(url: str) -> None:
    migrate(url)
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), metadata)
    finally:
        engine.dispose()
    assert differences == []


KEYS_0001 = [
    ("ops", "admin", T0 + timedelta(days=2)),
    ("root", "admin", T0),
    ("ci", "user", T0 + timedelta(days=1)),
    ("bot", "user", T0 + timedelta(days=3)),
]


@pytest.mark.parametrize(
    "roles", [("admin", "user"), ("admin",), ()], ids=["admin+user", "admin-only", "no-keys"]
)
def test_migration_moves_existing_keys_into_accounts(url: str, roles: tuple[Role, ...]) -> None:
    engine = make_engine(url)
    keys_0001 = sa.table(
        "api_keys",
        sa.column("name"),
        sa.column("prefix"),
        sa.column("secret_hash"),
        sa.column("role"),
        sa.column("created_at", UtcDateTime),
    )
    existing = [(name, role, at) for name, role, at in KEYS_0001 if role in roles]
    try:
        with engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "0001")
            for name, role, at in existing:
                connection.execute(
                    keys_0001.insert().values(
                        name=name, prefix="sk-mp-x", secret_hash=name * 16, role=role, created_at=at
                    )
                )
    finally:
        engine.dispose()
    migrate(url)
    with SqlStore(url) as store:
        expected = []
        if "admin" in roles:
            expected.append(("admin", "admin", T0))  # created with its first key
        if "user" in roles:
            expected.append(("default", "user", T0 + timedelta(days=1)))
        found = store.list_accounts()
        assert [(a.name, a.role, a.created_at) for a in found] == expected
        assert all(a.balance_nano == 0 for a in found)
        owners = {g.key.name: g.account.name for g in store.list_grants()}
        assert owners == {
            name: "admin" if role == "admin" else "default" for name, role, _ in existing
        }
        grant = store.find_grant("root" * 16)
        if "admin" in roles:
            assert grant is not None
            assert grant.limits == KeyLimits()
            assert grant.spent_nano == 0
        # The account-less interface keeps filling the same accounts.
        added = store.create_key(
            name="new", prefix="sk-mp-y", secret_hash="f" * 64, role="user", created_at=T0
        )
        assert store.list_keys()[-1] == added
        assert [a.name for a in store.list_accounts()].count("default") == 1


# ---------------------------------------------------------------------------- accounts


def test_accounts_are_created_found_and_listed(store: SqlStore) -> None:
    acme = store.create_account(name="acme", role="user", created_at=T0)
    ops = store.create_account(name="ops", role="admin", created_at=T0 + timedelta(hours=1))
    assert (acme.name, acme.role, acme.balance_nano, acme.created_at) == ("acme", "user", 0, T0)
    assert store.get_account("acme") == acme
    assert store.get_account_by_id(ops.id) == ops
    assert store.get_account("nobody") is None
    assert store.get_account_by_id(ops.id + 100) is None
    assert store.list_accounts() == [acme, ops]
    with pytest.raises(StoreConflict, match="acme"):
        store.create_account(name="acme", role="admin", created_at=T0)
    assert store.list_accounts() == [acme, ops]


def test_top_ups_and_adjustments_are_ledger_entries(store: SqlStore) -> None:
    acme = account(store)
    later = T0 + timedelta(minutes=5)
    assert store.top_up(acme.id, 5 * YUAN, reason="wire 42", created_at=T0).balance_nano == 5 * YUAN
    after = store.top_up(acme.id, -2 * YUAN, reason="goodwill reversal", created_at=later)
    assert after.balance_nano == 3 * YUAN
    entries = store.ledger(acme.id)
    assert [(e.kind, e.amount_nano, e.reason, e.request_id) for e in entries] == [
        ("topup", 5 * YUAN, "wire 42", None),
        ("adjustment", -2 * YUAN, "goodwill reversal", None),
    ]
    assert [e.created_at for e in entries] == [T0, later]
    assert store.ledger_total(acme.id) == 3 * YUAN
    assert store.ledger_total() == 3 * YUAN


def test_an_adjustment_below_zero_is_refused_and_changes_nothing(store: SqlStore) -> None:
    acme = account(store, balance=YUAN)
    with pytest.raises(StoreConflict, match="below zero"):
        store.top_up(acme.id, -YUAN - 1, reason="too much", created_at=T0)
    assert balance(store, acme) == YUAN
    assert len(store.ledger(acme.id)) == 1
    assert store.top_up(acme.id, -YUAN, reason="all of it", created_at=T0).balance_nano == 0


def test_topping_up_an_unknown_account_is_an_error(store: SqlStore) -> None:
    with pytest.raises(StoreError, match="no account") as raised:
        store.top_up(404, YUAN, reason="x", created_at=T0)
    assert not isinstance(raised.value, StoreConflict)
    assert store.ledger_total() == 0


# ---------------------------------------------------------------------------- keys


def test_key_limits_round_trip(store: SqlStore) -> None:
    acme, other = account(store), account(store, "other")
    limits = KeyLimits(
        expires_at=T0 + timedelta(days=30),
        allowed_models=("qwen3-8b", "qwen3-coder"),
        spend_limit_nano=7 * YUAN,
        rpm=60,
        tpm=100_000,
    )
    limited = key(store, acme, "1" * 64, limits)
    plain = key(store, acme, "2" * 64)
    elsewhere = key(store, other, "3" * 64)
    grant = store.find_grant(limited.secret_hash)
    assert grant is not None
    assert (grant.key, grant.account, grant.limits, grant.spent_nano) == (limited, acme, limits, 0)
    assert store.find_grant("9" * 64) is None
    assert [g.key.id for g in store.list_grants(account_id=acme.id)] == [limited.id, plain.id]
    assert [g.key.id for g in store.list_grants()] == [limited.id, plain.id, elsewhere.id]

    nothing_allowed = KeyLimits(allowed_models=())  # distinct from None (every model)
    assert store.set_key_limits(plain.id, nothing_allowed) == 1
    assert store.set_key_limits(limited.id, KeyLimits()) == 1
    assert store.set_key_limits(9999, KeyLimits()) == 0
    by_id = {g.key.id: g.limits for g in store.list_grants()}
    assert by_id == {limited.id: KeyLimits(), plain.id: nothing_allowed, elsewhere.id: KeyLimits()}


def test_account_keys_refuse_duplicate_secrets_and_unknown_accounts(store: SqlStore) -> None:
    acme = account(store)
    key(store, acme, "1" * 64)
    with pytest.raises(StoreConflict, match="secret"):
        key(store, acme, "1" * 64)
    ghost = AccountRecord(
        id=acme.id + 100, name="ghost", role="user", balance_nano=0, created_at=T0
    )
    with pytest.raises(StoreError, match="no account") as raised:
        key(store, ghost, "2" * 64)
    assert not isinstance(raised.value, StoreConflict)
    assert len(store.list_grants()) == 1


def test_keys_without_an_account_go_to_the_default_account_of_their_role(store: SqlStore) -> None:
    def create(name: str, role: Role) -> ApiKeyRecord:
        return store.create_key(
            name=name, prefix="sk-mp-x", secret_hash=name * 16, role=role, created_at=T0
        )

    created = [create("root", "admin"), create("ci01", "user"), create("ci02", "user")]
    assert [(a.name, a.role) for a in store.list_accounts()] == [
        ("admin", "admin"),
        ("default", "user"),
    ]
    owners = [(g.key.name, g.account.name) for g in store.list_grants()]
    assert owners == [("root", "admin"), ("ci01", "default"), ("ci02", "default")]
    assert store.list_keys() == created


def test_concurrent_first_keys_share_one_default_account(store: SqlStore) -> None:
    threads = 8
    start = threading.Barrier(threads, timeout=60)

    def create(index: int) -> ApiKeyRecord:
        start.wait()
        return store.create_key(
            name=f"k{index}",
            prefix="sk-mp-x",
            secret_hash=f"{index:064d}",
            role="user",
            created_at=T0,
        )

    with ThreadPoolExecutor(threads) as pool:
        created = list(pool.map(create, range(threads)))
    assert [a.name for a in store.list_accounts()] == ["default"]
    assert {g.account.name for g in store.list_grants()} == {"default"}
    assert len({k.id for k in created}) == threads


# ---------------------------------------------------------------------------- holds


def test_a_covered_hold_takes_money_from_balance_and_key(store: SqlStore) -> None:
    acme = account(store, balance=10 * YUAN)
    other = account(store, "other", balance=YUAN)
    ci = key(store, acme)
    assert hold(store, "r1", acme, ci, 4 * YUAN) == HoldResult(True, "ok", 6 * YUAN)
    assert balance(store, acme) == 6 * YUAN
    assert spent(store, ci) == 4 * YUAN
    assert store.active_holds() == 1
    assert store.active_holds(acme.id) == 1
    assert store.active_holds(other.id) == 0


def test_a_hold_the_balance_does_not_cover_changes_nothing(store: SqlStore) -> None:
    acme = account(store, balance=10 * YUAN)
    ci = key(store, acme)
    assert hold(store, "r1", acme, ci, 10 * YUAN + 1) == HoldResult(False, "balance", 10 * YUAN)
    assert hold(store, "r2", acme, ci, 10 * YUAN) == HoldResult(True, "ok", 0)  # exactly covered
    assert balance(store, acme) == 0
    assert spent(store, ci) == 10 * YUAN
    assert store.active_holds() == 1


def test_a_key_spending_limit_caps_holds(store: SqlStore) -> None:
    acme = account(store, balance=10 * YUAN)
    capped = key(store, acme, "1" * 64, KeyLimits(spend_limit_nano=5 * YUAN))
    free = key(store, acme, "2" * 64)
    assert hold(store, "r1", acme, capped, 3 * YUAN).placed
    assert hold(store, "r2", acme, capped, 3 * YUAN) == HoldResult(False, "key_limit", 7 * YUAN)
    assert hold(store, "r3", acme, capped, 2 * YUAN).placed  # up to the limit exactly
    assert hold(store, "r4", acme, free, 3 * YUAN).placed  # another key, no limit
    assert balance(store, acme) == 2 * YUAN
    assert (spent(store, capped), spent(store, free)) == (5 * YUAN, 3 * YUAN)
    assert store.active_holds() == 3


def test_a_second_hold_for_a_request_is_a_duplicate(store: SqlStore) -> None:
    acme = account(store, balance=10 * YUAN)
    ci = key(store, acme)
    assert hold(store, "r1", acme, ci, YUAN).placed
    assert hold(store, "r1", acme, ci, YUAN) == HoldResult(False, "duplicate", 9 * YUAN)
    assert store.settle(usage("r1", acme, ci, YUAN))
    # Settled is still taken: a late retry must not hold money nobody will settle.
    assert hold(store, "r1", acme, ci, YUAN) == HoldResult(False, "duplicate", 9 * YUAN)
    assert (balance(store, acme), spent(store, ci), store.active_holds()) == (9 * YUAN, YUAN, 0)


def test_a_zero_hold_is_placed_even_on_an_empty_account(store: SqlStore) -> None:
    acme = account(store)
    capped = key(store, acme, limits=KeyLimits(spend_limit_nano=0))
    assert hold(store, "free", acme, capped, 0) == HoldResult(True, "ok", 0)
    assert hold(store, "free", acme, capped, 0).reason == "duplicate"
    assert store.active_holds() == 1
    assert store.settle(usage("free", acme, capped, 0))
    assert store.active_holds() == 0
    assert store.ledger(acme.id) == []  # nothing charged, nothing written
    assert store.get_usage("free") is not None


def test_holds_for_unknown_accounts_or_keys_are_errors(store: SqlStore) -> None:
    acme = account(store, balance=YUAN)
    ci = key(store, acme)
    ghost = AccountRecord(
        id=acme.id + 100, name="ghost", role="user", balance_nano=0, created_at=T0
    )
    with pytest.raises(StoreError):
        hold(store, "r1", ghost, ci, 0)
    with pytest.raises(StoreError):
        store.place_hold(
            request_id="r2",
            account_id=acme.id,
            key_id=ci.id + 100,
            amount_nano=1,
            created_at=T0,
            expires_at=T0 + HOLD_TTL,
        )
    with pytest.raises(StoreError):  # naive timestamps are refused
        store.place_hold(
            request_id="r3",
            account_id=acme.id,
            key_id=ci.id,
            amount_nano=1,
            created_at=datetime(2025, 1, 1),
            expires_at=datetime(2025, 1, 1),
        )
    assert (balance(store, acme), spent(store, ci), store.active_holds()) == (YUAN, 0, 0)


# ---------------------------------------------------------------------------- settling


def test_settle_charges_the_cost_and_returns_the_rest_of_the_hold(store: SqlStore) -> None:
    acme = account(store, balance=10 * YUAN)
    ci = key(store, acme)
    assert hold(store, "r1", acme, ci, 4 * YUAN).placed
    cost = 1_234_567_891  # 1.234567891 CNY: exact to the nano-yuan
    assert store.settle(usage("r1", acme, ci, cost))
    assert balance(store, acme) == 10 * YUAN - cost
    assert spent(store, ci) == cost
    assert store.active_holds() == 0
    charge = store.ledger(acme.id)[-1]
    assert (charge.kind, charge.amount_nano, charge.request_id, charge.created_at) == (
        "charge",
        -cost,
        "r1",
        T0,
    )


def test_settle_is_idempotent(store: SqlStore) -> None:
    acme = account(store, balance=10 * YUAN)
    ci = key(store, acme)
    assert hold(store, "r1", acme, ci, 4 * YUAN).placed
    assert store.settle(usage("r1", acme, ci, YUAN)) is True
    before = (balance(store, acme), spent(store, ci), store.ledger(acme.id))
    assert store.settle(usage("r1", acme, ci, 3 * YUAN)) is False
    assert (balance(store, acme), spent(store, ci), store.ledger(acme.id)) == before
    recorded = store.get_usage("r1")
    assert recorded is not None
    assert recorded.cost_nano == YUAN


def test_usage_rows_keep_every_field(store: SqlStore) -> None:
    acme = account(store, balance=YUAN)
    ci = key(store, acme)
    shanghai = timezone(timedelta(hours=8))
    full = UsageRecord(
        request_id="0123456789abcdef01234567",
        account_id=acme.id,
        key_id=ci.id,
        model="qwen3-coder",
        backend="vllm-a",
        prompt_tokens=1200,
        completion_tokens=345,
        reasoning_tokens=67,
        cached_tokens=1024,
        cost_nano=987_654,
        latency_ms=1234.5,
        ttft_ms=87.25,
        finish_reason="tool_calls",
        native_finish_reason="tool_calls",
        status="error",
        error_code="upstream_timeout",
        streamed=True,
        cancelled=True,
        created_at=datetime(2025, 3, 2, 1, 30, 0, 654321, tzinfo=shanghai),
    )
    bare = UsageRecord(
        request_id="bare", account_id=acme.id, key_id=ci.id, model="m", backend=None, created_at=T0
    )
    assert store.settle(full)
    assert store.settle(bare)
    found = store.get_usage(full.request_id)
    assert found == full
    assert found is not None
    assert found.created_at.utcoffset() == timedelta(0)
    assert store.get_usage("bare") == bare
    assert store.get_usage("missing") is None


def test_a_cost_above_the_hold_is_still_charged_in_full(store: SqlStore) -> None:
    # The estimate was too low: the balance may go below zero, and a top-up still lands.
    acme = account(store, balance=YUAN)
    ci = key(store, acme, limits=KeyLimits(spend_limit_nano=YUAN))
    assert hold(store, "r1", acme, ci, YUAN).placed
    assert store.settle(usage("r1", acme, ci, 3 * YUAN))
    assert (balance(store, acme), spent(store, ci)) == (-2 * YUAN, 3 * YUAN)
    assert hold(store, "r2", acme, ci, 0).placed
    assert store.top_up(acme.id, YUAN, reason="top-up", created_at=T0).balance_nano == -YUAN
    assert store.ledger_total(acme.id) == -YUAN


def test_expired_holds_are_released_and_a_late_settle_still_charges(store: SqlStore) -> None:
    acme = account(store, balance=10 * YUAN)
    ci = key(store, acme)
    assert hold(store, "r1", acme, ci, 4 * YUAN).placed
    assert hold(store, "r2", acme, ci, 2 * YUAN).placed
    assert store.release_expired_holds(T0 + HOLD_TTL - timedelta(microseconds=1)) == 0
    assert store.active_holds() == 2
    assert store.release_expired_holds(T0 + HOLD_TTL) == 2
    assert store.release_expired_holds(T0 + 2 * HOLD_TTL) == 0
    assert (balance(store, acme), spent(store, ci), store.active_holds()) == (10 * YUAN, 0, 0)
    # The process that held "r1" was only slow: its request is charged when it reports.
    assert store.settle(usage("r1", acme, ci, 3 * YUAN))
    assert (balance(store, acme), spent(store, ci)) == (7 * YUAN, 3 * YUAN)
    assert store.ledger_total(acme.id) == 7 * YUAN


def test_release_touches_only_expired_holds(store: SqlStore) -> None:
    acme = account(store, balance=10 * YUAN)
    ci = key(store, acme)
    assert hold(store, "old", acme, ci, YUAN).placed
    assert store.place_hold(
        request_id="new",
        account_id=acme.id,
        key_id=ci.id,
        amount_nano=2 * YUAN,
        created_at=T0 + HOLD_TTL,
        expires_at=T0 + 2 * HOLD_TTL,
    ).placed
    assert store.release_expired_holds(T0 + HOLD_TTL) == 1
    assert (balance(store, acme), spent(store, ci), store.active_holds()) == (8 * YUAN, 2 * YUAN, 1)
    assert store.settle(usage("new", acme, ci, YUAN))
    assert (balance(store, acme), spent(store, ci)) == (9 * YUAN, YUAN)


# ---------------------------------------------------------------------------- reports


def test_usage_totals_by_day_model_and_key(store: SqlStore) -> None:
    acme, other = account(store, balance=100 * YUAN), account(store, "other", balance=YUAN)
    a, b, c = key(store, acme, "1" * 64), key(store, acme, "2" * 64), key(store, other, "3" * 64)
    day1 = datetime(2025, 3, 1, 0, 0, tzinfo=UTC)
    # 07:59 in Shanghai on the 2nd is still the 1st in UTC.
    late_day1 = datetime(2025, 3, 2, 7, 59, tzinfo=timezone(timedelta(hours=8)))
    day2 = datetime(2025, 3, 2, 0, 0, tzinfo=UTC)
    rows = [
        usage("u1", acme, a, 100, model="m1", at=day1, prompt=1, completion=2),
        usage("u2", acme, b, 200, model="m2", at=late_day1, prompt=10, completion=20),
        usage("u3", acme, a, 400, model="m1", at=day2, prompt=100, completion=200),
        usage("u4", other, c, 800, model="m2", at=day2, prompt=1000, completion=2000),
    ]
    for row in rows:
        assert store.settle(row)

    def total(group: str, requests: int, prompt: int, cost: int) -> UsageTotal:
        return UsageTotal(
            group=group,
            requests=requests,
            prompt_tokens=prompt,
            completion_tokens=2 * prompt,
            reasoning_tokens=0,
            cost_nano=cost,
        )

    assert store.usage_totals(by="day") == [
        total("2025-03-01", 2, 11, 300),
        total("2025-03-02", 2, 1100, 1200),
    ]
    assert store.usage_totals(by="model") == [total("m1", 2, 101, 500), total("m2", 2, 1010, 1000)]
    assert store.usage_totals(by="key") == [
        total(str(a.id), 2, 101, 500),
        total(str(b.id), 1, 10, 200),
        total(str(c.id), 1, 1000, 800),
    ]
    assert store.usage_totals(by="model", account_id=acme.id) == [
        total("m1", 2, 101, 500),
        total("m2", 1, 10, 200),
    ]
    assert store.usage_totals(by="day", key_id=a.id) == [
        total("2025-03-01", 1, 1, 100),
        total("2025-03-02", 1, 100, 400),
    ]
    # since is inclusive, until exclusive
    assert store.usage_totals(by="day", since=day2) == [total("2025-03-02", 2, 1100, 1200)]
    assert store.usage_totals(by="model", since=late_day1, until=day2) == [total("m2", 1, 10, 200)]
    assert store.usage_totals(by="key", account_id=other.id, until=day2) == []
    assert store.usage_cost_total() == 1500
    assert store.usage_cost_total(acme.id) == 700
    assert store.ledger_total() == 101 * YUAN - 1500


def test_the_books_balance_through_a_random_day_of_trading(store: SqlStore) -> None:
    rng = random.Random(20250301)
    owners = [account(store, "acme", balance=20 * YUAN), account(store, "other", balance=5 * YUAN)]
    pairs = [(o, key(store, o, f"{o.id}{i}".ljust(64, "0"))) for o in owners for i in (1, 2)]
    topped_up = {owners[0].id: 20 * YUAN, owners[1].id: 5 * YUAN}
    in_flight: dict[str, tuple[AccountRecord, ApiKeyRecord, int, datetime]] = {}
    released: dict[str, tuple[AccountRecord, ApiKeyRecord]] = {}  # may still settle, late
    settled: dict[str, UsageRecord] = {}
    now = T0
    for step in range(80):
        now += timedelta(seconds=rng.randint(1, 120))
        action = rng.choice(["hold", "hold", "hold", "settle", "settle", "expire", "top_up"])
        if action == "hold":
            owner, by = rng.choice(pairs)
            amount = rng.choice([0, 1, YUAN // 3, YUAN, 3 * YUAN])
            expires_at = now + timedelta(minutes=rng.randint(1, 5))
            before = balance(store, owner)
            result = store.place_hold(
                request_id=f"r{step}",
                account_id=owner.id,
                key_id=by.id,
                amount_nano=amount,
                created_at=now,
                expires_at=expires_at,
            )
            assert result.placed == (amount == 0 or before >= amount)
            if result.placed:
                in_flight[f"r{step}"] = (owner, by, amount, expires_at)
            else:
                assert (result.reason, result.balance_nano) == ("balance", before)
        elif action == "settle" and (in_flight or released or settled):
            request_id = rng.choice(sorted([*in_flight, *released, *settled]))
            if request_id in in_flight:
                owner, by, _, _ = in_flight.pop(request_id)
            elif request_id in released:
                owner, by = released.pop(request_id)
            else:
                owner, by = pairs[0]  # a repeat changes nothing, whatever it says
            row = usage(request_id, owner, by, rng.randint(0, 2 * YUAN), at=now)
            assert store.settle(row) == (request_id not in settled)
            settled.setdefault(request_id, row)
        elif action == "expire":
            expired = [r for r, (*_, expires_at) in in_flight.items() if expires_at <= now]
            assert store.release_expired_holds(now) == len(expired)
            for request_id in expired:
                owner, by, _, _ = in_flight.pop(request_id)
                released[request_id] = (owner, by)
        elif action == "top_up":
            owner, amount = rng.choice(owners), rng.randint(1, 3 * YUAN)
            store.top_up(owner.id, amount, reason="top-up", created_at=now)
            topped_up[owner.id] += amount
        for owner in owners:
            ledger_sum = store.ledger_total(owner.id)
            assert ledger_sum == topped_up[owner.id] - store.usage_cost_total(owner.id)
            held = [a for o, _, a, _ in in_flight.values() if o.id == owner.id]
            assert balance(store, owner) == ledger_sum - sum(held)
            assert store.active_holds(owner.id) == len(held)
        for _, by in pairs:
            held_by_key = sum(a for _, k, a, _ in in_flight.values() if k.id == by.id)
            costs = sum(row.cost_nano for row in settled.values() if row.key_id == by.id)
            assert spent(store, by) == costs + held_by_key
    assert store.ledger_total() == sum(topped_up.values()) - store.usage_cost_total()
    assert len(settled) > 10  # the walk did something
    assert any(r in settled for r in released) or released  # and some holds expired


# ---------------------------------------------------------------------------- races


@pytest.mark.parametrize("limit", ["balance", "key_limit"])
def test_racing_holds_never_overdraw(
    store: SqlStore, limit: Literal["balance", "key_limit"]
) -> None:
    threads, covered = 100, 10
    amount = 1_000_001  # a little over 1/1000 CNY, so sums are not round
    acme = account(store, balance=covered * amount if limit == "balance" else threads * amount)
    spend_limit = covered * amount if limit == "key_limit" else None
    ci = key(store, acme, limits=KeyLimits(spend_limit_nano=spend_limit))
    start = threading.Barrier(threads, timeout=60)

    def request(index: int) -> HoldResult:
        request_id = f"race-{index}"
        start.wait()
        result = hold(store, request_id, acme, ci, amount)
        if result.placed:
            assert store.settle(usage(request_id, acme, ci, amount))
        return result

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(request, range(threads)))

    assert sum(result.placed for result in results) == covered
    assert {result.reason for result in results if not result.placed} == {limit}
    left = balance(store, acme)
    assert left == (0 if limit == "balance" else (threads - covered) * amount)
    assert left >= 0
    assert spent(store, ci) == covered * amount
    assert store.active_holds() == 0
    charges = [entry for entry in store.ledger(acme.id) if entry.kind == "charge"]
    assert len(charges) == covered
    assert -sum(entry.amount_nano for entry in charges) == store.usage_cost_total(acme.id)
    assert store.usage_cost_total(acme.id) == covered * amount


def _racing_process(
    url: str,
    process: int,
    threads: int,
    account_id: int,
    key_id: int,
    amount: int,
    ready: BarrierType,
    results: Queue[tuple[int, list[str]]],
) -> None:
    """One server process: its own store, `threads` requests at once, each settled in full."""
    with SqlStore(url) as store:
        start = threading.Barrier(threads, timeout=60)

        def request(index: int) -> bool:
            request_id = f"p{process}-{index}"
            start.wait()
            placed = store.place_hold(
                request_id=request_id,
                account_id=account_id,
                key_id=key_id,
                amount_nano=amount,
                created_at=T0,
                expires_at=T0 + HOLD_TTL,
            ).placed
            if placed:
                settled = UsageRecord(
                    request_id=request_id,
                    account_id=account_id,
                    key_id=key_id,
                    model="m",
                    backend=None,
                    cost_nano=amount,
                    created_at=T0,
                )
                assert store.settle(settled)
            return placed

        ready.wait()
        placed, errors = 0, []
        with ThreadPoolExecutor(threads) as pool:
            for future in [pool.submit(request, index) for index in range(threads)]:
                try:
                    placed += future.result()
                except Exception as error:  # reported to the test, which fails on any
                    errors.append(repr(error))
    results.put((placed, errors))


def test_racing_processes_never_overdraw(store: SqlStore, url: str) -> None:
    # Several server processes on one database: the in-process lock does not apply.
    processes, threads, covered, amount = 4, 25, 10, 1_000_001
    acme = account(store, balance=covered * amount)
    ci = key(store, acme)
    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(processes, timeout=60)
    results: Queue[tuple[int, list[str]]] = context.Queue()
    workers = [
        context.Process(
            target=_racing_process,
            args=(url, index, threads, acme.id, ci.id, amount, ready, results),
        )
        for index in range(processes)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=90) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    assert [error for _, errors in outcomes for error in errors] == []
    assert sum(placed for placed, _ in outcomes) == covered
    assert balance(store, acme) == 0
    assert spent(store, ci) == store.usage_cost_total() == covered * amount
    assert store.ledger_total(acme.id) == 0
    assert store.active_holds() == 0
