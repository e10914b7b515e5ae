"""Top-up codes in the store (`SqlStore.create_codes`, `list_codes`, `redeem_code`) on SQLite
and PostgreSQL: made in one transaction, stored as hashes, spent once with the credit in the
same transaction, even when many threads with stores of their own race for one code."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.support.postgres import postgres_url_or_skip

from modelport.services.codes import generate_code, hash_code
from modelport.store import migrate
from modelport.store.base import AccountRecord, NewTopupCode, StoreConflict, StoreError
from modelport.store.sql import SqlStore

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
NANO = 10**9


def _new(code: str, *, amount: int = 50 * NANO, **changes: object) -> NewTopupCode:
    values: dict[str, object] = {
        "code_hash": hash_code(code),
        "batch": "promo",
        "amount_nano": amount,
        "created_at": T0,
        "created_by": "cli",
        **changes,
    }
    return NewTopupCode(**values)  # type: ignore[arg-type]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'modelport.db'}"
    migrate(url)
    return url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with postgres_url_or_skip() as url:
        migrate(url)
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest) -> Iterator[SqlStore]:
    """The store on each database (PostgreSQL: skipped when no server answers)."""
    url = request.getfixturevalue(f"{request.param}_url")
    with SqlStore(url) as opened:
        yield opened


def _user(store: SqlStore, name: str = "ann") -> AccountRecord:
    return store.create_account(name=name, role="user", created_at=T0)


def _redeem(
    store: SqlStore, code: str, account: AccountRecord, now: datetime = T0
) -> AccountRecord | None:
    result = store.redeem_code(hash_code(code), account_id=account.id, reason="code test", now=now)
    return None if result is None else result[1]


def test_codes_are_created_in_order_and_listed_by_batch(store: SqlStore) -> None:
    codes = [generate_code() for _ in range(3)]
    created = store.create_codes([_new(code) for code in codes])
    assert [record.code_hash for record in created] == [hash_code(code) for code in codes]
    assert [record.id for record in created] == sorted(record.id for record in created)
    other = store.create_codes([_new(generate_code(), batch="other", expires_at=T0 + timedelta(1))])
    assert store.list_codes(batch="promo") == created
    assert store.list_codes(batch="other") == other
    assert store.list_codes() == created + other
    assert store.list_codes(batch="none") == []
    first = created[0]
    assert (first.batch, first.amount_nano, first.created_by) == ("promo", 50 * NANO, "cli")
    assert first.created_at == T0 and first.expires_at is None
    assert first.state(T0) == "unused"
    assert other[0].state(T0 + timedelta(days=2)) == "expired"
    assert store.create_codes([]) == []


def test_only_the_hash_is_stored(sqlite_url: str, tmp_path: Path) -> None:
    code = generate_code()
    with SqlStore(sqlite_url) as store:
        store.create_codes([_new(code)])
    with sqlite3.connect(tmp_path / "modelport.db") as connection:
        rows = connection.execute("SELECT * FROM topup_codes").fetchall()
    dump = repr(rows)
    assert hash_code(code) in dump
    assert code not in dump and code.replace("-", "") not in dump
    assert code.split("-")[1] + code.split("-")[2] not in dump


def test_a_batch_is_one_transaction(store: SqlStore) -> None:
    taken = generate_code()
    store.create_codes([_new(taken)])
    with pytest.raises(StoreConflict):
        store.create_codes([_new(generate_code(), batch="second"), _new(taken, batch="second")])
    assert store.list_codes(batch="second") == []


def test_a_code_is_redeemed_once_with_its_ledger_entry(store: SqlStore) -> None:
    ann, bob = _user(store), _user(store, "bob")
    code = generate_code()
    store.create_codes([_new(code)])
    result = store.redeem_code(hash_code(code), account_id=ann.id, reason="code MPC-X", now=T0)
    assert result is not None
    record, account = result
    assert account.balance_nano == 50 * NANO
    assert (record.redeemed_at, record.redeemed_by, record.redeemed_by_name) == (T0, ann.id, "ann")
    assert record.state(T0) == "redeemed"
    [entry] = store.ledger(ann.id)
    assert (entry.kind, entry.amount_nano, entry.reason) == ("topup", 50 * NANO, "code MPC-X")
    # A second time, by anyone: nothing changes.
    assert _redeem(store, code, ann) is None
    assert _redeem(store, code, bob) is None
    assert store.ledger_total(ann.id) == 50 * NANO
    assert store.ledger(bob.id) == []
    [listed] = store.list_codes()
    assert listed == record


def test_expired_and_unknown_codes_are_not_redeemed(store: SqlStore) -> None:
    ann = _user(store)
    code = generate_code()
    store.create_codes([_new(code, expires_at=T0 + timedelta(hours=1))])
    assert _redeem(store, code, ann, now=T0 + timedelta(hours=1)) is None  # at the expiry: gone
    assert _redeem(store, generate_code(), ann) is None
    assert store.get_account_by_id(ann.id) == ann
    assert store.ledger(ann.id) == []
    found = _redeem(store, code, ann, now=T0 + timedelta(minutes=59))
    assert found is not None and found.balance_nano == 50 * NANO


def test_a_credit_past_the_cap_spends_nothing(store: SqlStore) -> None:
    ann = _user(store)
    store.top_up(ann.id, 80 * NANO, reason="start", created_at=T0)
    code = generate_code()
    store.create_codes([_new(code)])
    with pytest.raises(StoreConflict, match="may not exceed 100"):
        store.redeem_code(
            hash_code(code), account_id=ann.id, reason="r", now=T0, max_balance_nano=100 * NANO
        )
    [unspent] = store.list_codes()
    assert unspent.redeemed_at is None
    assert store.ledger_total(ann.id) == 80 * NANO
    result = store.redeem_code(
        hash_code(code), account_id=ann.id, reason="r", now=T0, max_balance_nano=130 * NANO
    )
    assert result is not None and result[1].balance_nano == 130 * NANO


def test_an_unknown_account_spends_nothing(store: SqlStore) -> None:
    code = generate_code()
    store.create_codes([_new(code)])
    with pytest.raises(StoreError, match="no account"):
        store.redeem_code(hash_code(code), account_id=999, reason="r", now=T0)
    assert store.list_codes()[0].redeemed_at is None


def _race(url: str, stores: int = 8) -> None:
    """`stores` threads, each with its own SqlStore on `url`, redeem one code at once."""
    with SqlStore(url) as setup:
        ann = _user(setup)
        code = generate_code()
        setup.create_codes([_new(code)])
    barrier = threading.Barrier(stores)
    outcomes: list[object] = []
    lock = threading.Lock()

    def attempt() -> None:
        with SqlStore(url) as own:
            own.get_account_by_id(ann.id)  # connect before the start
            barrier.wait()
            try:
                result: object = _redeem(own, code, ann)
            except Exception as error:  # a failure is an outcome the test reports
                result = error
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=attempt) for _ in range(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(outcomes) == stores, outcomes
    won = [outcome for outcome in outcomes if isinstance(outcome, AccountRecord)]
    assert len(won) == 1, outcomes
    assert outcomes.count(None) == stores - 1, outcomes
    with SqlStore(url) as check:
        after = check.get_account_by_id(ann.id)
        assert after is not None and after.balance_nano == 50 * NANO
        assert [entry.amount_nano for entry in check.ledger(ann.id)] == [50 * NANO]
        assert check.ledger_total() == 50 * NANO
        [record] = check.list_codes()
        assert record.redeemed_by == ann.id


def test_concurrent_redemptions_on_sqlite_succeed_once(sqlite_url: str) -> None:
    _race(sqlite_url)


def test_concurrent_redemptions_on_postgresql_succeed_once(postgres_url: str) -> None:
    _race(postgres_url)
