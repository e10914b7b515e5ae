"""One contract, every SQL database: accounts, prepaid balances, credit leases, the ledger and
usage rows, on SQLite (a file) and PostgreSQL (a fresh database on the local server), each
built by the packaged migrations.

The books must always balance: for every account, free balance + its leases == its ledger
sum, the ledger sum == top-ups - the cost of its usage rows, and a key's spending (as the
database counts it) == its settled costs + what is leased for it.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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
    Charge,
    KeyLimits,
    LeaseRecord,
    LeaseResult,
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
LEASE_TTL = timedelta(minutes=10)
OWNER = "replica-1"


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


def lease(
    store: SqlStore,
    owner: AccountRecord,
    by: ApiKeyRecord,
    want: int,
    need: int = 0,
    *,
    lease_id: int | None = None,
    holder: str = OWNER,
    now: datetime = T0,
    ttl: timedelta = LEASE_TTL,
) -> LeaseResult:
    return store.lease_credit(
        account_id=owner.id,
        key_id=by.id,
        owner=holder,
        lease_id=lease_id,
        want_nano=want,
        need_nano=need,
        now=now,
        expires_at=now + ttl,
    ).result()


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


def record(
    store: SqlStore, row: UsageRecord, lease_id: int | None = None, *, postpaid: bool = False
) -> bool:
    return store.record(Charge(row, lease_id, postpaid)).result()


def balance(store: SqlStore, owner: AccountRecord) -> int:
    """The whole balance, as users see it (free + leased)."""
    found = store.get_account_by_id(owner.id)
    assert found is not None
    return found.balance_nano


def free(store: SqlStore, owner: AccountRecord) -> int:
    found = store.get_account_by_id(owner.id)
    assert found is not None
    return found.balance_nano - found.leased_nano


def leased(store: SqlStore, owner: AccountRecord) -> int:
    found = store.get_account_by_id(owner.id)
    assert found is not None
    assert found.leased_nano == sum(x.amount_nano for x in store.leases(account_id=owner.id))
    return found.leased_nano


def spent(store: SqlStore, by: ApiKeyRecord) -> int:
    """Settled spending of the key."""
    grant = store.find_grant(by.secret_hash)
    assert grant is not None
    return grant.spent_nano


def key_spending(store: SqlStore, by: ApiKeyRecord) -> int:
    """The key's spending as the database counts it: settled + leased."""
    return spent(store, by) + sum(x.amount_nano for x in store.leases() if x.key_id == by.id)


def assert_books_balance(store: SqlStore, *owners: AccountRecord) -> None:
    for owner in owners:
        found = store.get_account_by_id(owner.id)
        assert found is not None
        assert found.balance_nano == store.ledger_total(owner.id)
        charges = [e for e in store.ledger(owner.id) if e.kind == "charge"]
        assert -sum(e.amount_nano for e in charges) == store.usage_cost_total(owner.id)


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


def test_migration_from_0002_gives_back_live_holds(url: str) -> None:
    # A request was in flight when the old version stopped: its hold must not be lost money.
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "0002")
            old = sa.MetaData()
            old.reflect(connection, only=["accounts", "api_keys", "holds", "ledger", "usage"])
            accounts_0002, keys_0002 = old.tables["accounts"], old.tables["api_keys"]
            holds_0002, ledger_0002 = old.tables["holds"], old.tables["ledger"]
            usage_0002 = old.tables["usage"]
            at = {"created_at": T0}
            for name, free_0002 in (("acme", 6 * YUAN), ("other", YUAN)):
                connection.execute(
                    accounts_0002.insert().values(
                        name=name, role="user", balance_nano=free_0002, **at
                    )
                )
            names = sa.select(accounts_0002.c.name, accounts_0002.c.id)
            ids = dict(connection.execute(names).all())
            for digest, owner, spent_0002 in (("1", "acme", 4 * YUAN), ("2", "other", 0)):
                connection.execute(
                    keys_0002.insert().values(
                        name=f"k{digest}",
                        prefix="sk-mp-x",
                        secret_hash=digest * 64,
                        role="user",
                        account_id=ids[owner],
                        spent_nano=spent_0002,
                        **at,
                    )
                )
            key_names = sa.select(keys_0002.c.name, keys_0002.c.id)
            key_ids = dict(connection.execute(key_names).all())
            # acme: topped up 10, one request settled at 1, two holds of 1.5 in flight (so
            # its balance is 6 and its key's spending 4).
            for amount, request_id in ((10 * YUAN, None), (-YUAN, "done")):
                connection.execute(
                    ledger_0002.insert().values(
                        account_id=ids["acme"],
                        amount_nano=amount,
                        kind="topup" if request_id is None else "charge",
                        request_id=request_id,
                        **at,
                    )
                )
            connection.execute(
                ledger_0002.insert().values(
                    account_id=ids["other"], amount_nano=YUAN, kind="topup", **at
                )
            )
            for request_id in ("live-1", "live-2"):
                connection.execute(
                    holds_0002.insert().values(
                        request_id=request_id,
                        account_id=ids["acme"],
                        key_id=key_ids["k1"],
                        amount_nano=3 * YUAN // 2,
                        expires_at=T0 + LEASE_TTL,
                        **at,
                    )
                )
            connection.execute(
                usage_0002.insert().values(
                    request_id="done",
                    account_id=ids["acme"],
                    key_id=key_ids["k1"],
                    model="m",
                    prompt_tokens=1,
                    completion_tokens=2,
                    reasoning_tokens=0,
                    cached_tokens=0,
                    cost_nano=YUAN,
                    latency_ms=1.0,
                    status="ok",
                    streamed=False,
                    cancelled=False,
                    **at,
                )
            )
    finally:
        engine.dispose()
    migrate(url)
    with SqlStore(url) as store:
        acme, other = store.get_account("acme"), store.get_account("other")
        assert acme is not None
        assert other is not None
        assert (acme.balance_nano, acme.leased_nano) == (10 * YUAN - YUAN, 0)
        assert other.balance_nano == YUAN
        assert_books_balance(store, acme, other)
        assert spent(store, store.list_grants()[0].key) == YUAN
        assert spent(store, store.list_grants()[1].key) == 0
        assert store.leases() == []
        done = store.get_usage("done")
        assert done is not None
        assert (done.estimated, done.anomaly) == (False, None)
    engine = make_engine(url)
    try:
        tables = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert "holds" not in tables
    assert "credit_leases" in tables


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


def test_an_adjustment_takes_only_the_free_balance(store: SqlStore) -> None:
    acme = account(store, balance=10 * YUAN)
    ci = key(store, acme)
    assert lease(store, acme, ci, 6 * YUAN).granted_nano == 6 * YUAN
    found = store.get_account_by_id(acme.id)
    assert found is not None
    assert (found.balance_nano, found.leased_nano) == (10 * YUAN, 6 * YUAN)
    with pytest.raises(StoreConflict, match="6 CNY of its balance .* leased to requests"):
        store.top_up(acme.id, -5 * YUAN, reason="too much", created_at=T0)
    assert (balance(store, acme), leased(store, acme), len(store.ledger(acme.id))) == (
        10 * YUAN,
        6 * YUAN,
        1,
    )
    after = store.top_up(acme.id, -4 * YUAN, reason="all that is free", created_at=T0)
    assert (after.balance_nano, after.leased_nano) == (6 * YUAN, 6 * YUAN)
    # A top-up lands in the free balance; the account record counts both.
    after = store.top_up(acme.id, YUAN, reason="more", created_at=T0)
    assert (after.balance_nano, after.leased_nano, free(store, acme)) == (7 * YUAN, 6 * YUAN, YUAN)
    assert store.list_accounts() == [after]
    assert store.get_account("acme") == after
    grant = store.find_grant(ci.secret_hash)
    assert grant is not None
    assert grant.account == after
    assert_books_balance(store, acme)


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


# ---------------------------------------------------------------------------- leases


def test_a_lease_moves_credit_from_the_free_balance_to_the_key(store: SqlStore) -> None:
    acme = account(store, balance=10 * YUAN)
    other = account(store, "other", balance=YUAN)
    ci = key(store, acme)
    later = T0 + timedelta(seconds=5)
    granted = lease(store, acme, ci, 4 * YUAN, YUAN, now=later)
    assert granted == LeaseResult(
        granted_nano=4 * YUAN,
        lease_id=granted.lease_id,
        reason="ok",
        balance_nano=6 * YUAN,
        key_headroom_nano=None,
    )
    assert granted.lease_id is not None
    assert store.leases() == [
        LeaseRecord(
            id=granted.lease_id,
            account_id=acme.id,
            key_id=ci.id,
            owner=OWNER,
            amount_nano=4 * YUAN,
            created_at=later,
            expires_at=later + LEASE_TTL,
        )
    ]
    # The account still has all its money, 4 of it leased; the key has spent nothing yet.
    assert (balance(store, acme), leased(store, acme), free(store, acme)) == (
        10 * YUAN,
        4 * YUAN,
        6 * YUAN,
    )
    assert (spent(store, ci), key_spending(store, ci)) == (0, 4 * YUAN)
    assert store.leases(account_id=other.id) == []
    assert store.leases(owner="elsewhere") == []
    assert [x.id for x in store.leases(account_id=acme.id, owner=OWNER)] == [granted.lease_id]
    assert_books_balance(store, acme, other)


def test_a_lease_is_cut_to_what_is_free_but_not_below_need(store: SqlStore) -> None:
    acme = account(store, balance=10 * YUAN)
    ci = key(store, acme)
    first = lease(store, acme, ci, 7 * YUAN, YUAN)
    assert (first.granted_nano, first.balance_nano) == (7 * YUAN, 3 * YUAN)
    cut = lease(store, acme, ci, 5 * YUAN, 3 * YUAN)  # exactly need is enough
    assert (cut.granted_nano, cut.reason, cut.balance_nano) == (3 * YUAN, "ok", 0)
    refused = lease(store, acme, ci, 5 * YUAN, 1)
    assert refused == LeaseResult(granted_nano=0, lease_id=None, reason="balance", balance_nano=0)
    assert (balance(store, acme), leased(store, acme)) == (10 * YUAN, 10 * YUAN)
    assert len(store.leases()) == 2


def test_a_refused_lease_changes_nothing(store: SqlStore) -> None:
    acme = account(store, balance=2 * YUAN)
    ci = key(store, acme)
    first = lease(store, acme, ci, YUAN)
    before = (store.leases(), store.get_account_by_id(acme.id), store.find_grant(ci.secret_hash))
    refused = lease(
        store, acme, ci, 5 * YUAN, 2 * YUAN, lease_id=first.lease_id, now=T0 + LEASE_TTL
    )
    assert (refused.granted_nano, refused.reason, refused.balance_nano) == (0, "balance", YUAN)
    # Not even the expiry moved: a refusal is no renewal.
    assert (
        store.leases(),
        store.get_account_by_id(acme.id),
        store.find_grant(ci.secret_hash),
    ) == before


def test_a_key_spending_limit_caps_leases(store: SqlStore) -> None:
    acme = account(store, balance=10 * YUAN)
    capped = key(store, acme, "1" * 64, KeyLimits(spend_limit_nano=5 * YUAN))
    unlimited = key(store, acme, "2" * 64)
    first = lease(store, acme, capped, 3 * YUAN)
    assert (first.granted_nano, first.key_headroom_nano) == (3 * YUAN, 2 * YUAN)
    refused = lease(store, acme, capped, 4 * YUAN, 3 * YUAN)
    assert refused == LeaseResult(
        granted_nano=0,
        lease_id=None,
        reason="key_limit",
        balance_nano=7 * YUAN,
        key_headroom_nano=2 * YUAN,
    )
    cut = lease(store, acme, capped, 4 * YUAN, YUAN)  # up to the limit exactly
    assert (cut.granted_nano, cut.key_headroom_nano, cut.balance_nano) == (2 * YUAN, 0, 5 * YUAN)
    assert lease(store, acme, capped, 1, 0).reason == "key_limit"  # nothing left: no grant
    assert lease(store, acme, unlimited, 3 * YUAN).granted_nano == 3 * YUAN  # another key
    # Settled spending counts against the limit as leased spending did.
    assert record(store, usage("r1", acme, capped, 3 * YUAN), first.lease_id)
    assert (spent(store, capped), key_spending(store, capped)) == (3 * YUAN, 5 * YUAN)
    assert lease(store, acme, capped, 1).reason == "key_limit"
    assert (balance(store, acme), free(store, acme)) == (7 * YUAN, 2 * YUAN)


def test_a_lease_is_extended_and_renewed(store: SqlStore) -> None:
    acme = account(store, balance=10 * YUAN)
    ci = key(store, acme)
    first = lease(store, acme, ci, YUAN)
    later = T0 + timedelta(minutes=3)
    extended = lease(store, acme, ci, 2 * YUAN, lease_id=first.lease_id, now=later)
    assert (extended.lease_id, extended.granted_nano, extended.balance_nano) == (
        first.lease_id,
        2 * YUAN,
        7 * YUAN,
    )
    [held] = store.leases()
    assert (held.id, held.amount_nano, held.created_at, held.expires_at) == (
        first.lease_id,
        3 * YUAN,
        T0,
        later + LEASE_TTL,
    )
    assert (leased(store, acme), key_spending(store, ci)) == (3 * YUAN, 3 * YUAN)


def test_extending_a_lease_that_is_gone_or_not_the_callers_makes_a_new_one(
    store: SqlStore,
) -> None:
    acme = account(store, balance=10 * YUAN)
    other = account(store, "other", balance=10 * YUAN)
    ci, elsewhere = key(store, acme, "1" * 64), key(store, other, "2" * 64)
    first = lease(store, acme, ci, YUAN)
    assert first.lease_id is not None
    assert store.release_expired_leases(T0 + LEASE_TTL) == 1
    renewed = lease(store, acme, ci, YUAN, lease_id=first.lease_id)
    assert renewed.lease_id not in (None, first.lease_id)
    foreign = lease(store, other, elsewhere, YUAN, lease_id=renewed.lease_id)
    theirs = lease(store, acme, ci, YUAN, lease_id=renewed.lease_id, holder="replica-2")
    assert len({renewed.lease_id, foreign.lease_id, theirs.lease_id}) == 3
    assert [(x.account_id, x.owner, x.amount_nano) for x in store.leases()] == [
        (acme.id, OWNER, YUAN),
        (other.id, OWNER, YUAN),
        (acme.id, "replica-2", YUAN),
    ]
    # Ids are never reused, even where the newest lease was deleted.
    assert store.return_credit(theirs.lease_id or 0, None).result() == YUAN
    newest = lease(store, acme, ci, YUAN)
    assert newest.lease_id is not None
    assert theirs.lease_id is not None
    assert newest.lease_id > theirs.lease_id
    assert_books_balance(store, acme, other)


def test_a_lease_with_need_zero_still_needs_money(store: SqlStore) -> None:
    acme = account(store)
    capped = key(store, acme, limits=KeyLimits(spend_limit_nano=0))
    assert lease(store, acme, capped, YUAN).reason == "balance"
    assert store.leases() == []
    # Wanting nothing is granted nothing: a lease of 0, even on an empty account at its limit.
    empty = lease(store, acme, capped, 0)
    assert (empty.granted_nano, empty.reason, empty.balance_nano) == (0, "ok", 0)
    assert [x.amount_nano for x in store.leases()] == [0]
    store.top_up(acme.id, YUAN, reason="top-up", created_at=T0)
    assert lease(store, acme, capped, YUAN).reason == "key_limit"


def test_bad_leases_are_errors(store: SqlStore) -> None:
    acme, other = account(store, balance=YUAN), account(store, "other", balance=YUAN)
    ci = key(store, acme)
    ghost = AccountRecord(
        id=other.id + 100, name="ghost", role="user", balance_nano=0, created_at=T0
    )
    with pytest.raises(StoreError, match="no account"):
        lease(store, ghost, ci, 1)
    with pytest.raises(StoreError, match="no key"):
        lease(store, other, ci, 1)  # not the account's key
    with pytest.raises(ValueError, match="need"):
        lease(store, acme, ci, 1, 2)
    with pytest.raises(ValueError, match="need"):
        lease(store, acme, ci, 1, -1)
    with pytest.raises(StoreError):  # naive timestamps are refused
        lease(store, acme, ci, 1, now=datetime(2025, 1, 1))
    assert (free(store, acme), key_spending(store, ci), store.leases()) == (YUAN, 0, [])


# ---------------------------------------------------------------------------- charges


def test_a_charge_comes_out_of_its_lease(store: SqlStore) -> None:
    acme = account(store, balance=10 * YUAN)
    ci = key(store, acme)
    held = lease(store, acme, ci, 4 * YUAN)
    cost = 1_234_567_891  # 1.234567891 CNY: exact to the nano-yuan
    assert record(store, usage("r1", acme, ci, cost), held.lease_id)
    assert (balance(store, acme), leased(store, acme), free(store, acme)) == (
        10 * YUAN - cost,
        4 * YUAN - cost,
        6 * YUAN,
    )
    assert (spent(store, ci), key_spending(store, ci)) == (cost, 4 * YUAN)
    charge = store.ledger(acme.id)[-1]
    assert (charge.kind, charge.amount_nano, charge.request_id, charge.created_at) == (
        "charge",
        -cost,
        "r1",
        T0,
    )
    assert_books_balance(store, acme)


def test_a_charge_is_recorded_once(store: SqlStore) -> None:
    acme = account(store, balance=10 * YUAN)
    ci = key(store, acme)
    held = lease(store, acme, ci, 4 * YUAN)
    assert record(store, usage("r1", acme, ci, YUAN), held.lease_id) is True
    before = (store.get_account_by_id(acme.id), store.leases(), store.ledger(acme.id))
    assert record(store, usage("r1", acme, ci, 3 * YUAN), held.lease_id) is False
    assert record(store, usage("r1", acme, ci, 3 * YUAN), None, postpaid=True) is False
    # Twice in one batch: the first is recorded, the second changes nothing.
    twice = [store.record(Charge(usage("r2", acme, ci, c), held.lease_id)) for c in (1, 2)]
    assert [f.result() for f in twice] == [True, False]
    assert store.get_usage("r2") == usage("r2", acme, ci, 1)
    assert store.leases()[0].amount_nano == before[1][0].amount_nano - 1
    assert (store.ledger(acme.id)[:-1], store.get_usage("r1")) == (
        before[2],
        usage("r1", acme, ci, YUAN),
    )
    assert_books_balance(store, acme)


def test_usage_rows_keep_every_field(store: SqlStore) -> None:
    acme = account(store, balance=YUAN)
    ci = key(store, acme)
    held = lease(store, acme, ci, YUAN)
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
        estimated=True,
        anomaly="completion_above_limit",
    )
    bare = UsageRecord(
        request_id="bare", account_id=acme.id, key_id=ci.id, model="m", backend=None, created_at=T0
    )
    assert record(store, full, held.lease_id)
    assert record(store, bare)
    found = store.get_usage(full.request_id)
    assert found == full
    assert found is not None
    assert found.created_at.utcoffset() == timedelta(0)
    assert store.get_usage("bare") == bare
    assert store.get_usage("missing") is None
    assert [e.request_id for e in store.ledger(acme.id) if e.kind == "charge"] == [full.request_id]


def test_negative_costs_and_counts_are_refused_at_once(store: SqlStore) -> None:
    acme = account(store, balance=YUAN)
    ci = key(store, acme)
    for field in ("cost_nano", "prompt_tokens", "completion_tokens", "reasoning_tokens"):
        row = UsageRecord(
            request_id=field,
            account_id=acme.id,
            key_id=ci.id,
            model="m",
            backend=None,
            created_at=T0,
            **{field: -1},  # type: ignore[arg-type]
        )
        with pytest.raises(ValueError, match="negative"):
            store.record(Charge(row, None))
    with pytest.raises(ValueError, match="negative"):
        store.return_credit(1, -1)
    store.flush().result()
    assert store.usage_cost_total() == 0
    assert store.get_usage("cost_nano") is None


def test_a_postpaid_charge_may_take_the_balance_below_zero(store: SqlStore) -> None:
    ops = store.create_account(name="ops", role="admin", created_at=T0)
    root = key(store, ops, limits=KeyLimits(spend_limit_nano=YUAN))
    assert record(store, usage("r1", ops, root, 3 * YUAN), None, postpaid=True)
    assert (balance(store, ops), spent(store, root)) == (-3 * YUAN, 3 * YUAN)
    # A postpaid charge its lease covers comes out of the lease like any other.
    store.top_up(ops.id, 5 * YUAN, reason="top-up", created_at=T0)
    assert lease(store, ops, key(store, ops, "b" * 64), YUAN).granted_nano == YUAN
    [held] = store.leases()
    second = store.list_grants()[-1].key
    assert record(store, usage("r2", ops, second, YUAN // 2), held.id, postpaid=True)
    assert (balance(store, ops), leased(store, ops)) == (2 * YUAN - YUAN // 2, YUAN // 2)
    # One it does not cover comes wholly out of the balance, the lease untouched.
    assert record(store, usage("r3", ops, second, YUAN), held.id, postpaid=True)
    assert (free(store, ops), leased(store, ops)) == (YUAN - YUAN, YUAN // 2)
    assert store.top_up(ops.id, YUAN, reason="top-up", created_at=T0).balance_nano == (
        YUAN + YUAN // 2
    )
    assert_books_balance(store, ops)


def test_a_charge_whose_lease_was_swept_falls_back_on_the_free_balance(store: SqlStore) -> None:
    acme = account(store, balance=10 * YUAN)
    ci = key(store, acme)
    held = lease(store, acme, ci, 8 * YUAN)
    assert store.release_expired_leases(T0 + LEASE_TTL) == 1  # the process was only slow
    assert (free(store, acme), key_spending(store, ci)) == (10 * YUAN, 0)
    lease(store, acme, ci, 7 * YUAN, holder="replica-2")  # someone else leases most of it
    assert record(store, usage("r1", acme, ci, 2 * YUAN), held.lease_id)
    assert (free(store, acme), spent(store, ci)) == (YUAN, 2 * YUAN)
    assert store.get_usage("r1") == usage("r1", acme, ci, 2 * YUAN)
    # More than is free: billed what there was, never below zero, and the row says why.
    assert record(store, usage("r2", acme, ci, 3 * YUAN), held.lease_id)
    assert (free(store, acme), spent(store, ci), balance(store, acme)) == (0, 3 * YUAN, 7 * YUAN)
    capped = store.get_usage("r2")
    assert capped is not None
    assert (capped.cost_nano, capped.anomaly) == (YUAN, "lease_lost")
    assert store.ledger(acme.id)[-1].amount_nano == -YUAN
    # Nothing free at all: a row with cost 0 and no ledger charge.
    assert record(store, usage("r3", acme, ci, YUAN), None)
    nothing = store.get_usage("r3")
    assert nothing is not None
    assert (nothing.cost_nano, nothing.anomaly) == (0, "lease_lost")
    assert [e.request_id for e in store.ledger(acme.id) if e.kind == "charge"] == ["r1", "r2"]
    assert_books_balance(store, acme)


def test_a_short_lease_gives_what_it_has_then_the_free_balance(store: SqlStore) -> None:
    acme = account(store, balance=3 * YUAN)
    ci = key(store, acme)
    held = lease(store, acme, ci, YUAN)
    flagged = UsageRecord(
        request_id="r1",
        account_id=acme.id,
        key_id=ci.id,
        model="m",
        backend=None,
        cost_nano=5 * YUAN,
        created_at=T0,
        anomaly="capped_at_hold",
    )
    assert record(store, flagged, held.lease_id)
    found = store.get_usage("r1")
    assert found is not None
    assert (found.cost_nano, found.anomaly) == (3 * YUAN, "capped_at_hold,lease_lost")
    assert (balance(store, acme), free(store, acme), spent(store, ci)) == (0, 0, 3 * YUAN)
    assert [x.amount_nano for x in store.leases()] == [0]
    assert store.return_credit(held.lease_id or 0, None).result() == 0
    assert_books_balance(store, acme)


def test_a_lease_of_another_account_is_not_charged(store: SqlStore) -> None:
    acme, other = account(store, balance=10 * YUAN), account(store, "other", balance=10 * YUAN)
    ci, elsewhere = key(store, acme, "1" * 64), key(store, other, "2" * 64)
    theirs = lease(store, other, elsewhere, 5 * YUAN)
    assert record(store, usage("r1", acme, ci, YUAN), theirs.lease_id)
    assert (free(store, acme), leased(store, other)) == (9 * YUAN, 5 * YUAN)
    assert_books_balance(store, acme, other)


def test_a_failing_charge_fails_alone(store: SqlStore) -> None:
    acme = account(store, balance=10 * YUAN)
    ci = key(store, acme)
    held = lease(store, acme, ci, 5 * YUAN)
    ghost = UsageRecord(
        request_id="ghost",
        account_id=acme.id,
        key_id=ci.id + 100,
        model="m",
        backend=None,
        cost_nano=1,
        created_at=T0,
    )
    futures = [
        store.record(Charge(usage("r1", acme, ci, YUAN), held.lease_id)),
        store.record(Charge(ghost, None, postpaid=True)),
        store.record(Charge(usage("r2", acme, ci, YUAN), held.lease_id)),
    ]
    assert futures[0].result() is True
    with pytest.raises(StoreError):
        futures[1].result()
    assert futures[2].result() is True
    assert store.get_usage("ghost") is None
    assert (leased(store, acme), spent(store, ci)) == (3 * YUAN, 2 * YUAN)
    assert_books_balance(store, acme)


# ---------------------------------------------------------------- returns, renewals, sweeps


def test_credit_is_returned_in_part_or_whole(store: SqlStore) -> None:
    acme = account(store, balance=10 * YUAN)
    ci = key(store, acme, limits=KeyLimits(spend_limit_nano=6 * YUAN))
    held = lease(store, acme, ci, 5 * YUAN)
    assert held.lease_id is not None
    assert store.return_credit(held.lease_id, 2 * YUAN).result() == 2 * YUAN
    assert (free(store, acme), leased(store, acme), key_spending(store, ci)) == (
        7 * YUAN,
        3 * YUAN,
        3 * YUAN,
    )
    assert store.return_credit(held.lease_id, 5 * YUAN).result() == 3 * YUAN  # what it has
    assert [x.amount_nano for x in store.leases()] == [0]  # kept: a part was asked for
    assert store.return_credit(held.lease_id, None).result() == 0
    assert store.leases() == []
    again = lease(store, acme, ci, 4 * YUAN)
    assert again.lease_id is not None
    assert record(store, usage("r1", acme, ci, YUAN), again.lease_id)
    assert store.return_credit(again.lease_id, None).result() == 3 * YUAN
    assert store.return_credit(again.lease_id, None).result() == 0  # gone: nothing
    assert (balance(store, acme), free(store, acme), spent(store, ci)) == (9 * YUAN, 9 * YUAN, YUAN)
    assert lease(store, acme, ci, 6 * YUAN).granted_nano == 5 * YUAN  # the key's headroom
    assert_books_balance(store, acme)


@pytest.mark.parametrize("linger", [0.0, 0.5])
def test_a_return_is_applied_after_the_charges_submitted_before_it(url: str, linger: float) -> None:
    migrate(url)
    with SqlStore(url, linger=linger) as store:
        acme = account(store, balance=100 * YUAN)
        ci = key(store, acme)
        held = lease(store, acme, ci, 50 * YUAN)
        assert held.lease_id is not None
        charges = [
            store.record(Charge(usage(f"r{i}", acme, ci, YUAN + i), held.lease_id))
            for i in range(20)
        ]
        returned = store.return_credit(held.lease_id, None)
        costs = sum(YUAN + i for i in range(20))
        assert returned.result(timeout=5) == 50 * YUAN - costs
        assert all(charge.done() and charge.result() for charge in charges)
        assert (balance(store, acme), free(store, acme), spent(store, ci)) == (
            100 * YUAN - costs,
            100 * YUAN - costs,
            costs,
        )
        assert_books_balance(store, acme)


def test_renewing_moves_only_the_owners_leases(store: SqlStore) -> None:
    acme = account(store, balance=10 * YUAN)
    ci = key(store, acme)
    mine = [lease(store, acme, ci, YUAN).lease_id for _ in range(2)]
    theirs = lease(store, acme, ci, YUAN, holder="replica-2").lease_id
    later = T0 + 3 * LEASE_TTL
    assert store.renew_leases(OWNER, later).result() == 2
    assert store.renew_leases("nobody", later).result() == 0
    expiry = {x.id: x.expires_at for x in store.leases()}
    assert expiry == {mine[0]: later, mine[1]: later, theirs: T0 + LEASE_TTL}
    assert store.release_expired_leases(T0 + LEASE_TTL) == 1
    assert [x.id for x in store.leases()] == mine


def test_release_gives_back_only_expired_leases(store: SqlStore) -> None:
    acme, other = account(store, balance=10 * YUAN), account(store, "other", balance=10 * YUAN)
    ci, elsewhere = key(store, acme, "1" * 64), key(store, other, "2" * 64)
    old = lease(store, acme, ci, 4 * YUAN)
    lease(store, other, elsewhere, 2 * YUAN)
    new = lease(store, acme, ci, YUAN, now=T0 + LEASE_TTL)
    assert old.lease_id is not None
    assert record(store, usage("r1", acme, ci, YUAN), old.lease_id)
    assert store.release_expired_leases(T0 + LEASE_TTL - timedelta(microseconds=1)) == 0
    assert store.release_expired_leases(T0 + LEASE_TTL) == 2
    assert store.release_expired_leases(T0 + LEASE_TTL) == 0
    assert [x.id for x in store.leases()] == [new.lease_id]
    assert (free(store, acme), leased(store, acme), spent(store, ci)) == (8 * YUAN, YUAN, YUAN)
    assert (free(store, other), key_spending(store, elsewhere)) == (10 * YUAN, 0)
    assert_books_balance(store, acme, other)


def test_racing_sweepers_give_each_lease_back_once(store: SqlStore, url: str) -> None:
    acme = account(store, balance=100 * YUAN)
    ci = key(store, acme)
    for _ in range(40):
        lease(store, acme, ci, YUAN)
    sweepers = 4
    start = threading.Barrier(sweepers, timeout=60)

    def sweep(_: int) -> int:
        with SqlStore(url) as replica:
            start.wait()
            return replica.release_expired_leases(T0 + LEASE_TTL)

    with ThreadPoolExecutor(sweepers) as pool:
        released = list(pool.map(sweep, range(sweepers)))
    assert sum(released) == 40
    assert (free(store, acme), key_spending(store, ci), store.leases()) == (100 * YUAN, 0, [])


def test_flush_waits_for_what_was_written_behind_but_not_for_the_linger(url: str) -> None:
    migrate(url)
    with SqlStore(url, linger=30.0) as store:
        acme = account(store, balance=10 * YUAN)
        ci = key(store, acme)
        held = lease(store, acme, ci, 5 * YUAN)  # a lease is applied at once, too
        started = time.monotonic()
        recorded = [
            store.record(Charge(usage(f"r{i}", acme, ci, YUAN), held.lease_id)) for i in range(3)
        ]
        store.flush().result(timeout=10)
        assert time.monotonic() - started < 10
        assert all(f.done() for f in recorded)
        assert [store.get_usage(f"r{i}") is not None for i in range(3)] == [True] * 3
        assert (balance(store, acme), leased(store, acme)) == (7 * YUAN, 2 * YUAN)


def test_closing_the_store_applies_what_is_queued(url: str) -> None:
    migrate(url)
    store = SqlStore(url, linger=30.0)
    acme = account(store, balance=10 * YUAN)
    ci = key(store, acme)
    held = lease(store, acme, ci, 5 * YUAN)
    recorded: list[Future[bool]] = [
        store.record(Charge(usage(f"r{i}", acme, ci, YUAN), held.lease_id)) for i in range(4)
    ]
    started = time.monotonic()
    store.close()
    assert time.monotonic() - started < 10
    assert [f.result(timeout=0) for f in recorded] == [True] * 4
    with pytest.raises(RuntimeError, match="closed"):
        store.record(Charge(usage("late", acme, ci, YUAN), held.lease_id)).result()
    with SqlStore(url) as reopened:
        assert reopened.usage_cost_total() == 4 * YUAN
        assert (balance(reopened, acme), leased(reopened, acme)) == (6 * YUAN, YUAN)


def test_write_behind_futures_cannot_be_cancelled(url: str) -> None:
    migrate(url)
    with SqlStore(url, linger=30.0) as store:
        acme = account(store, balance=10 * YUAN)
        ci = key(store, acme)
        held = lease(store, acme, ci, 5 * YUAN)
        future = store.record(Charge(usage("r1", acme, ci, YUAN), held.lease_id))
        assert future.cancel() is False
        assert store.flush().result() is None
        assert future.result() is True


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
        assert record(store, row)

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


# ---------------------------------------------------------------------------- the books


def test_the_books_balance_through_a_random_day_of_trading(store: SqlStore) -> None:
    rng = random.Random(20250301)
    limits = {1: None, 2: 4 * YUAN}
    owners = [account(store, "acme", balance=20 * YUAN), account(store, "other", balance=5 * YUAN)]
    pairs = [
        (o, key(store, o, f"{o.id}{i}".ljust(64, "0"), KeyLimits(spend_limit_nano=limit)))
        for o in owners
        for i, limit in limits.items()
    ]
    key_limits = {k.id: limits[int(k.secret_hash[1])] for _, k in pairs}
    topped_up = {owners[0].id: 20 * YUAN, owners[1].id: 5 * YUAN}
    holders = ["replica-1", "replica-2"]
    recorded: dict[str, UsageRecord] = {}  # the first charge of each request id
    outcomes = {"ok": 0, "balance": 0, "key_limit": 0, "lease_lost": 0, "returned": 0}
    now = T0
    for step in range(200):
        now += timedelta(seconds=rng.randint(1, 90))
        action = rng.choice(
            ["lease"] * 3 + ["charge"] * 5 + ["return", "renew", "expire", "top_up"]
        )
        if action == "lease":
            owner, by = rng.choice(pairs)
            holder = rng.choice(holders)
            mine = [x.id for x in store.leases(owner=holder) if x.key_id == by.id]
            lease_id = rng.choice([None, *mine])
            want = rng.choice([0, 1, YUAN // 3, YUAN, 3 * YUAN, 8 * YUAN])
            need = rng.choice([0, min(want, YUAN // 2), want])
            free_before, spending_before = free(store, owner), key_spending(store, by)
            limit = key_limits[by.id]
            can = min(want, free_before, *(() if limit is None else (limit - spending_before,)))
            ttl = timedelta(minutes=rng.randint(1, 5))
            result = lease(
                store, owner, by, want, need, lease_id=lease_id, holder=holder, now=now, ttl=ttl
            )
            outcomes[result.reason] += 1
            if want == 0 or can >= max(need, 1):
                assert (result.reason, result.granted_nano) == ("ok", max(can, 0))
                assert result.lease_id is not None
                assert lease_id is None or result.lease_id == lease_id
                [held] = [x for x in store.leases() if x.id == result.lease_id]
                assert held.expires_at == now + ttl
            else:
                expected = "balance" if free_before < max(need, 1) else "key_limit"
                assert (result.reason, result.granted_nano, result.lease_id) == (expected, 0, None)
        elif action == "charge":
            # Written behind, several at a time, nobody waiting: checked at the next flush.
            for _ in range(rng.randint(1, 4)):
                owner, by = rng.choice(pairs)
                request_id = rng.choice([f"r{step}-{rng.random()}", *sorted(recorded)[-2:]])
                leases = [x.id for x in store.leases(account_id=owner.id) if x.key_id == by.id]
                lease_id = rng.choice([None, 10_000, *leases, *leases])
                cost = rng.choice([0, 1, YUAN // 7, YUAN, 2 * YUAN])
                row = usage(request_id, owner, by, cost, at=now)
                store.record(Charge(row, lease_id))
                recorded.setdefault(request_id, row)
        elif action == "return" and store.leases():
            lease_id = rng.choice([x.id for x in store.leases()])
            outcomes["returned"] += store.return_credit(
                lease_id, rng.choice([None, 1, YUAN])
            ).result()
        elif action == "renew":
            store.renew_leases(rng.choice(holders), now + timedelta(minutes=3)).result()
        elif action == "expire":
            store.release_expired_leases(now)
        elif action == "top_up":
            owner, amount = rng.choice(owners), rng.randint(1, 3 * YUAN)
            store.top_up(owner.id, amount, reason="top-up", created_at=now)
            topped_up[owner.id] += amount
        store.flush().result()
        rows = {r: store.get_usage(r) for r in recorded}
        assert all(row is not None for row in rows.values())
        for owner in owners:
            found = store.get_account_by_id(owner.id)
            assert found is not None
            ledger_sum = store.ledger_total(owner.id)
            assert ledger_sum == topped_up[owner.id] - store.usage_cost_total(owner.id)
            assert found.balance_nano == ledger_sum
            assert found.balance_nano - found.leased_nano >= 0  # prepaid: never below zero
            assert found.leased_nano == sum(
                x.amount_nano for x in store.leases(account_id=owner.id)
            )
        for _, by in pairs:
            costs = [row.cost_nano for row in rows.values() if row and row.key_id == by.id]
            assert spent(store, by) == sum(costs)
    assert store.ledger_total() == sum(topped_up.values()) - store.usage_cost_total()
    for request_id, first in recorded.items():
        found = store.get_usage(request_id)
        assert found is not None
        if found.anomaly == "lease_lost":
            outcomes["lease_lost"] += 1
            assert found.cost_nano < first.cost_nano
        else:
            assert found == first  # the first charge, billed as reported
    # The walk did something of everything.
    assert len(recorded) > 50
    assert all(count > 0 for count in outcomes.values()), outcomes


# ---------------------------------------------------------------------------- races


@pytest.mark.parametrize("limit", ["balance", "key_limit"])
def test_racing_leases_never_overdraw(
    store: SqlStore, limit: Literal["balance", "key_limit"]
) -> None:
    threads, covered = 100, 10
    amount = 1_000_001  # a little over 1/1000 CNY, so sums are not round
    acme = account(store, balance=covered * amount if limit == "balance" else threads * amount)
    spend_limit = covered * amount if limit == "key_limit" else None
    ci = key(store, acme, limits=KeyLimits(spend_limit_nano=spend_limit))
    start = threading.Barrier(threads, timeout=60)

    def request(index: int) -> LeaseResult:
        start.wait()
        result = lease(store, acme, ci, amount, amount, holder=f"worker-{index}")
        if result.granted_nano:
            assert result.lease_id is not None
            assert record(store, usage(f"race-{index}", acme, ci, amount), result.lease_id)
            assert store.return_credit(result.lease_id, None).result() == 0
        return result

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(request, range(threads)))

    assert sum(result.reason == "ok" for result in results) == covered
    assert {result.reason for result in results if result.reason != "ok"} == {limit}
    assert all(result.granted_nano in (0, amount) for result in results)
    left = balance(store, acme)
    assert left == (0 if limit == "balance" else (threads - covered) * amount)
    assert (free(store, acme), store.leases()) == (left, [])
    assert spent(store, ci) == covered * amount
    charges = [entry for entry in store.ledger(acme.id) if entry.kind == "charge"]
    assert len(charges) == covered
    assert store.usage_cost_total(acme.id) == covered * amount
    assert_books_balance(store, acme)


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
    """One server process: its own store and lease, `threads` requests at once, each leasing
    what it needs into the process's lease, charged in full out of it, the rest given back."""
    with SqlStore(url) as store:
        start = threading.Barrier(threads, timeout=60)
        owner = f"process-{process}"

        def request(index: int) -> bool:
            request_id = f"p{process}-{index}"
            start.wait()
            granted = store.lease_credit(
                account_id=account_id,
                key_id=key_id,
                owner=owner,
                lease_id=None,
                want_nano=amount,
                need_nano=amount,
                now=T0,
                expires_at=T0 + LEASE_TTL,
            ).result()
            if granted.reason != "ok":
                return False
            assert granted.lease_id is not None
            charged = UsageRecord(
                request_id=request_id,
                account_id=account_id,
                key_id=key_id,
                model="m",
                backend=None,
                cost_nano=amount,
                created_at=T0,
            )
            assert store.record(Charge(charged, granted.lease_id)).result()
            assert store.return_credit(granted.lease_id, None).result() == 0
            return True

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
    assert (balance(store, acme), store.leases()) == (0, [])
    assert spent(store, ci) == store.usage_cost_total() == covered * amount
    assert store.ledger_total(acme.id) == 0
