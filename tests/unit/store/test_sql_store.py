"""SqlStore on SQLite in a temporary data directory: migrations, keys, metadata, and how the
writer gathers write-behind charges into batches."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import msgspec
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from modelport.store import migrate
from modelport.store.base import (
    ApiKeyRecord,
    Charge,
    KeyLimits,
    Role,
    StoreConflict,
    StoreError,
    UsageRecord,
)
from modelport.store.batch import MAX_BATCH
from modelport.store.migrator import alembic_config
from modelport.store.schema import metadata
from modelport.store.sql import SqlStore

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'data' / 'modelport.db'}"


@pytest.fixture
def store(url: str) -> Iterator[SqlStore]:
    migrate(url)
    with SqlStore(url) as opened:
        yield opened


def _key(
    store: SqlStore,
    name: str = "ci",
    digest: str = "a" * 64,
    role: Role = "user",
    created_at: datetime = T0,
) -> ApiKeyRecord:
    return store.create_key(
        name=name, prefix="sk-mp-abcdef", secret_hash=digest, role=role, created_at=created_at
    )


def test_migrate_creates_the_data_directory_and_is_idempotent(tmp_path: Path, url: str) -> None:
    migrate(url)
    migrate(url)  # a second run on a current database changes nothing and does not fail
    database = tmp_path / "data" / "modelport.db"
    assert database.is_file()
    with sqlite3.connect(database) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        versions = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    assert {"api_keys", "app_meta", "accounts", "credit_leases", "ledger", "usage"} <= tables
    assert "holds" not in tables
    assert versions == [(ScriptDirectory.from_config(alembic_config()).get_current_head(),)]


def test_migrations_build_exactly_the_schema_module(url: str) -> None:
    migrate(url)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_sqlite_connections_use_wal_and_a_busy_timeout(store: SqlStore) -> None:
    _key(store)  # opens a pooled connection through the store's engine
    engine = store._engine
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000


def test_create_and_find_round_trip(store: SqlStore) -> None:
    created = _key(store, role="admin")
    assert created.id >= 1
    assert created.name == "ci"
    assert created.role == "admin"
    assert created.created_at == T0
    assert created.created_at.tzinfo is not None
    assert created.revoked_at is None
    assert store.find_key_by_hash("a" * 64) == created
    assert store.find_key_by_hash("b" * 64) is None


def test_timestamps_come_back_in_utc(store: SqlStore) -> None:
    shanghai = timezone(timedelta(hours=8))
    created = _key(store, created_at=datetime(2025, 3, 1, 20, 0, tzinfo=shanghai))
    found = store.find_key_by_hash(created.secret_hash)
    assert found is not None
    assert found.created_at == datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    assert found.created_at.utcoffset() == timedelta(0)


def test_naive_timestamps_are_refused(store: SqlStore) -> None:
    with pytest.raises(StoreError):
        _key(store, created_at=datetime(2025, 1, 1))


def test_secret_hash_is_unique(store: SqlStore) -> None:
    _key(store, name="first")
    with pytest.raises(StoreConflict):
        _key(store, name="second")
    assert [key.name for key in store.list_keys(include_revoked=True)] == ["first"]


def test_revoke_hides_the_key_from_the_default_listing(store: SqlStore) -> None:
    first = _key(store, name="first", digest="1" * 64)
    second = _key(store, name="second", digest="2" * 64)
    later = T0 + timedelta(days=1)
    assert store.revoke_key(first.id, later) == 1
    assert store.revoke_key(first.id, later + timedelta(days=1)) == 0  # already revoked
    assert store.revoke_key(9999, later) == 0
    assert [key.id for key in store.list_keys()] == [second.id]
    everything = store.list_keys(include_revoked=True)
    assert [key.id for key in everything] == [first.id, second.id]
    assert everything[0].revoked_at == later
    found = store.find_key_by_hash(first.secret_hash)
    assert found is not None
    assert found.revoked


def test_meta_values(store: SqlStore) -> None:
    assert store.get_meta("flag") is None
    assert store.set_meta("flag", "one") is True
    assert store.get_meta("flag") == "one"
    assert store.set_meta("flag", "two", replace=False) is False
    assert store.get_meta("flag") == "one"
    assert store.set_meta("flag", "three") is True
    assert store.get_meta("flag") == "three"


def test_data_survives_reopening(url: str) -> None:
    migrate(url)
    with SqlStore(url) as store:
        created = _key(store)
    migrate(url)
    with SqlStore(url) as reopened:
        assert reopened.list_keys() == [created]


def test_unusable_urls_raise_store_errors_without_the_password(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="invalid database URL"):
        migrate("not a url")
    with pytest.raises(StoreError) as raised:
        migrate("nosuchdb://user:hunter2@localhost/x")
    assert "hunter2" not in str(raised.value)


def _charges(store: SqlStore, count: int) -> list[Charge]:
    account = store.create_account(name="acme", role="user", created_at=T0)
    store.top_up(account.id, 10**12, reason="opening", created_at=T0)
    key = store.create_account_key(
        account_id=account.id,
        name="ci",
        prefix="sk-mp-x",
        secret_hash="c" * 64,
        role="user",
        limits=KeyLimits(),
        created_at=T0,
    )
    granted = store.lease_credit(
        account_id=account.id,
        key_id=key.id,
        owner="test",
        lease_id=None,
        want_nano=10**12,
        need_nano=0,
        now=T0,
        expires_at=T0 + timedelta(hours=1),
    ).result()
    return [
        Charge(
            UsageRecord(
                request_id=f"r{index}",
                account_id=account.id,
                key_id=key.id,
                model="m",
                backend=None,
                cost_nano=index,
                created_at=T0,
            ),
            granted.lease_id,
        )
        for index in range(count)
    ]


def test_charges_linger_until_something_is_waited_for(url: str) -> None:
    migrate(url)
    with SqlStore(url, linger=30.0) as store:
        [first, second] = _charges(store, 2)
        recorded = store.record(first)
        time.sleep(0.2)
        assert not recorded.done()  # gathering more
        assert store.get_usage("r0") is None
        also = store.record(second)
        store.flush().result(timeout=10)  # someone waits: applied at once, together
        assert recorded.result(timeout=0) is True
        assert also.result(timeout=0) is True
        assert store.get_usage("r1") is not None


def test_a_full_batch_does_not_wait_for_the_linger(url: str) -> None:
    migrate(url)
    with SqlStore(url, linger=30.0) as store:
        charges = _charges(store, MAX_BATCH + 1)
        started = time.monotonic()
        recorded = [store.record(charge) for charge in charges]
        assert recorded[MAX_BATCH - 1].result(timeout=10) is True
        assert time.monotonic() - started < 10


def test_without_linger_a_charge_is_written_at_once(url: str) -> None:
    migrate(url)
    with SqlStore(url, linger=0) as store:
        [charge] = _charges(store, 1)
        assert store.record(charge).result(timeout=10) is True


def test_model_activity_counts_a_window_and_takes_medians_of_the_finished_requests(
    url: str,
) -> None:
    """The figures of a model's public page: requests and tokens in the window, success rate,
    and medians of latency, time to first token and output speed."""
    migrate(url)
    with SqlStore(url) as store:
        charges = _charges(store, 5)
        shapes = [  # (model, status, latency ms, ttft ms, completion tokens, age)
            ("m", "ok", 1000.0, 200.0, 81, timedelta(minutes=1)),
            ("m", "ok", 2000.0, 400.0, 161, timedelta(minutes=2)),
            ("m", "ok", 3000.0, 600.0, 1, timedelta(minutes=3)),  # one token: no speed
            ("m", "error", 50.0, None, 0, timedelta(minutes=4)),
            ("m", "ok", 10.0, 5.0, 3, timedelta(days=2)),  # before the window
        ]
        for charge, (model, status, latency, ttft, completion, age) in zip(
            charges, shapes, strict=True
        ):
            usage = msgspec.structs.replace(
                charge.usage,
                model=model,
                status=status,
                latency_ms=latency,
                ttft_ms=ttft,
                prompt_tokens=10,
                completion_tokens=completion,
                created_at=T0 - age,
            )
            assert store.record(Charge(usage, charge.lease_id)).result(timeout=10) is True
        [activity] = store.model_activity(T0 - timedelta(days=1))
    assert activity.model == "m"
    assert (activity.requests, activity.succeeded) == (4, 3)
    assert (activity.prompt_tokens, activity.completion_tokens) == (40, 243)
    assert activity.median_latency_ms == 2000.0  # of the three that finished
    assert activity.median_ttft_ms == 400.0
    # 80 tokens in 0.8 s and 160 in 1.6 s after the first: 100 tokens/s both.
    assert activity.median_tokens_per_s == pytest.approx(100.0)
    assert activity.sampled == 3


def test_usage_page_lists_newest_first_filters_and_continues_after_a_cursor(url: str) -> None:
    migrate(url)
    with SqlStore(url) as store:
        charges = _charges(store, 7)
        for index, charge in enumerate(charges):
            usage = msgspec.structs.replace(
                charge.usage,
                model="a" if index % 2 == 0 else "b",
                created_at=T0 + timedelta(seconds=index // 2),  # pairs share a time
            )
            assert store.record(Charge(usage, charge.lease_id)).result(timeout=10) is True
        account = charges[0].usage.account_id
        everything = store.usage_page(account, limit=100)
        assert [r.request_id for r in everything] == ["r6", "r5", "r4", "r3", "r2", "r1", "r0"]
        first = store.usage_page(account, limit=3)
        last = first[-1]
        rest = store.usage_page(account, limit=100, before=(last.created_at, last.request_id))
        assert [r.request_id for r in first + rest] == [r.request_id for r in everything]
        assert [r.request_id for r in store.usage_page(account, model="b")] == ["r5", "r3", "r1"]
        later = store.usage_page(account, since=T0 + timedelta(seconds=2))
        assert [r.request_id for r in later] == ["r6", "r5", "r4"]
        assert store.usage_page(account, key_id=10**6) == []
