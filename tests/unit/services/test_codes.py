"""The top-up codes service: codes are random and easy to type, their bounds are 400s naming the
field, a code is spent once, and failures are throttled per account."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from modelport.core.errors import InvalidRequest, RateLimited
from modelport.http.app import _route_table
from modelport.http.openapi import build_document
from modelport.services import accounts, codes
from modelport.services.auth_throttle import AuthThrottle
from modelport.store import migrate
from modelport.store.sql import SqlStore

CODE = re.compile(r"MPC(-[23456789ABCDEFGHJKLMNPQRSTUVWXYZ]{4}){4}")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    url = f"sqlite:///{tmp_path / 'modelport.db'}"
    migrate(url)
    with SqlStore(url) as sql:
        yield sql


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _redeem(
    store: SqlStore, account_id: int, code: str, throttle: AuthThrottle | None = None, **kw: Any
) -> codes.Redemption:
    return asyncio.run(codes.redeem(store, account_id, code, throttle=throttle, **kw))


# -- codes ------------------------------------------------------------------------------------


def test_codes_are_random_typable_and_80_bits() -> None:
    made = {codes.generate_code() for _ in range(2000)}
    assert len(made) == 2000
    assert all(CODE.fullmatch(code) for code in made)
    assert codes.CODE_BITS >= 80
    assert len(codes.ALPHABET) == 32 == len(set(codes.ALPHABET))
    assert not set("01IO") & set(codes.ALPHABET)
    used = {ch for code in made for ch in code[4:].replace("-", "")}
    assert used == set(codes.ALPHABET)


@pytest.mark.parametrize(
    "typed",
    [
        "MPC-7K2Q-XW9D-4HNR-T3EB",
        "mpc-7k2q-xw9d-4hnr-t3eb",
        " mpc 7k2q xw9d 4hnr t3eb ",
        "MPC7K2QXW9D4HNRT3EB",
        "7K2Q-XW9D-4HNR-T3EB",
        "7k2qxw9d4hnrt3eb",
        "ＭＰＣ－７Ｋ２Ｑ－ＸＷ９Ｄ－４ＨＮＲ－Ｔ３ＥＢ",  # typed with a full-width input method
        "MPC—7K2Q–XW9D-4HNR\tT3EB\n",
    ],
)
def test_case_spaces_and_dashes_do_not_matter(typed: str) -> None:
    assert codes.normalize_code(typed) == "MPC-7K2Q-XW9D-4HNR-T3EB"


@pytest.mark.parametrize(
    "typed",
    [
        "",
        "MPC",
        "MPC-7K2Q-XW9D-4HNR-T3E",  # one short
        "MPC-7K2Q-XW9D-4HNR-T3EBB",  # one long
        "MPC-7K2Q-XW9D-4HNR-T3E0",  # 0 is not in the alphabet
        "MPC-7K2Q-XW9D-4HNR-T3EI",
        "XYZ-7K2Q-XW9D-4HNR-T3EB",
        "MPC-7K2Q-XW9D-4HNR-T3EB" + " " * 1000,
        "MPC-7K2Q-XW9D-4HNR-T3É",
    ],
)
def test_what_cannot_be_a_code_is_refused(typed: str) -> None:
    assert codes.normalize_code(typed) is None


def test_the_hash_is_of_the_canonical_code() -> None:
    code = codes.generate_code()
    typed = codes.normalize_code(code.lower().replace("-", " "))
    assert typed is not None
    assert codes.hash_code(typed) == codes.hash_code(code)
    assert len(codes.hash_code(code)) == 64
    assert codes.code_prefix(code) == code[:8]


# -- creating ---------------------------------------------------------------------------------


def test_a_batch_is_made_and_shown_once(store: SqlStore) -> None:
    expires = datetime.now(UTC) + timedelta(days=30)
    made = codes.create_codes(
        store, 20, "50", expires_at=expires, batch=" spring ", created_by="cli"
    )
    assert len(made) == 20
    assert len({code for _, code in made}) == 20
    for record, code in made:
        assert CODE.fullmatch(code)
        assert record.code_hash == codes.hash_code(code)
        assert (record.batch, record.amount_nano, record.created_by) == (
            "spring",
            50 * 10**9,
            "cli",
        )
        assert record.expires_at == expires
    assert [r.id for r in store.list_codes(batch="spring")] == [r.id for r, _ in made]
    default = codes.create_codes(store, 1, "0.5", created_by="cli")
    assert default[0][0].batch  # a label from the time
    assert default[0][0].expires_at is None


@pytest.mark.parametrize(
    ("count", "amount", "expires", "batch", "field"),
    [
        (0, "5", None, None, "count"),
        (1001, "5", None, None, "count"),
        (-1, "5", None, None, "count"),
        (True, "5", None, None, "count"),
        (1, "0", None, None, "amount"),
        (1, "-5", None, None, "amount"),
        (1, "abc", None, None, "amount"),
        (1, "1000000001", None, None, "amount"),  # above the largest amount there is
        (1, "0.0000000001", None, None, "amount"),  # finer than a nano-yuan
        (1, "5", timedelta(hours=-1), None, "expires_at"),
        (1, "5", "naive", None, "expires_at"),
        (1, "5", None, "x" * 101, "batch"),
        (1, "5", None, "tab\there", "batch"),
    ],
)
def test_bounds_are_400s_naming_the_field(
    store: SqlStore, count: Any, amount: str, expires: Any, batch: str | None, field: str
) -> None:
    expires_at = None
    if isinstance(expires, timedelta):
        expires_at = datetime.now(UTC) + expires
    elif expires == "naive":
        expires_at = datetime(2099, 1, 1)
    with pytest.raises(InvalidRequest) as refused:
        codes.create_codes(
            store, count, amount, expires_at=expires_at, batch=batch, created_by="cli"
        )
    assert refused.value.status == 400
    assert refused.value.param == field
    assert store.list_codes() == []


def test_the_largest_amount_is_allowed(store: SqlStore) -> None:
    top = str(accounts.MAX_AMOUNT_NANO // 10**9)
    [(record, _)] = codes.create_codes(store, 1, top, created_by="cli")
    assert record.amount_nano == accounts.MAX_AMOUNT_NANO


# -- redeeming --------------------------------------------------------------------------------


def test_a_code_is_redeemed_once_into_the_ledger(store: SqlStore) -> None:
    ann = accounts.create_user(store, "ann", balance="1")
    [(_, code)] = codes.create_codes(store, 1, "50", batch="b", created_by="cli")
    typed = code.lower().replace("-", " ")
    redeemed = _redeem(store, ann.id, typed)
    assert redeemed.account.balance_nano == 51 * 10**9
    assert redeemed.code.amount_nano == 50 * 10**9
    entry = store.ledger(ann.id)[-1]
    assert (entry.kind, entry.reason) == ("topup", f"code {code[:8]}")
    with pytest.raises(InvalidRequest, match=f"^{codes.INVALID_CODE}$") as again:
        _redeem(store, ann.id, code)
    assert again.value.param == "code"
    assert accounts.get_user(store, "ann").balance_nano == 51 * 10**9


def test_wrong_spent_and_expired_codes_get_the_same_answer(store: SqlStore) -> None:
    ann = accounts.create_user(store, "ann")
    soon = datetime.now(UTC) + timedelta(minutes=5)
    [(_, expiring)] = codes.create_codes(store, 1, "5", expires_at=soon, created_by="cli")
    [(_, spent)] = codes.create_codes(store, 1, "5", created_by="cli")
    _redeem(store, ann.id, spent)
    later = soon + timedelta(seconds=1)
    answers = []
    for code, now in (
        (codes.generate_code(), None),  # never made
        ("not a code at all", None),
        (spent, None),
        (expiring, later),
    ):
        with pytest.raises(InvalidRequest) as refused:
            _redeem(store, ann.id, code, now=now)
        error = refused.value
        answers.append((error.status, error.message, error.param, error.code))
    assert len(set(answers)) == 1, answers
    assert answers[0] == (400, codes.INVALID_CODE, "code", "invalid_request")


def test_failures_are_throttled_per_account(store: SqlStore) -> None:
    ann = accounts.create_user(store, "ann")
    bob = accounts.create_user(store, "bob")
    [(_, good)] = codes.create_codes(store, 1, "5", created_by="cli")
    clock = Clock()
    throttle = AuthThrottle(3, 900, clock=clock)
    for _ in range(3):
        with pytest.raises(InvalidRequest):
            _redeem(store, ann.id, codes.generate_code(), throttle)
    # Past the limit, even a good code is refused before any lookup: guessing stops here.
    with pytest.raises(RateLimited) as limited:
        _redeem(store, ann.id, good, throttle)
    assert limited.value.status == 429
    assert limited.value.code == codes.TOO_MANY_CODE_FAILURES
    assert limited.value.retry_after is not None and 0 < limited.value.retry_after <= 900
    assert "top-up codes" in limited.value.message
    assert [r.redeemed_at for r in store.list_codes()] == [None]
    # Another account is not affected; and after the window this one may try again.
    with pytest.raises(InvalidRequest):
        _redeem(store, bob.id, codes.generate_code(), throttle)
    clock.now += 901
    assert _redeem(store, ann.id, good, throttle).account.balance_nano == 5 * 10**9


def test_the_default_throttle_allows_ten_failures_in_fifteen_minutes() -> None:
    throttle = codes.new_throttle()
    assert (throttle.limit, throttle.window) == (10, 900)


def test_a_balance_past_the_cap_leaves_the_code_unspent(store: SqlStore) -> None:
    rich = accounts.create_user(store, "rich", balance=str(accounts.MAX_AMOUNT_NANO // 10**9))
    store.top_up(
        rich.id,
        accounts.MAX_BALANCE_NANO - rich.balance_nano,
        reason="x",
        created_at=rich.created_at,
    )
    [(_, code)] = codes.create_codes(store, 1, "1", created_by="cli")
    with pytest.raises(InvalidRequest, match="may not exceed") as refused:
        _redeem(store, rich.id, code)
    assert refused.value.param == "code"
    assert store.list_codes()[0].redeemed_at is None


# -- JSON views match the OpenAPI document ----------------------------------------------------

DOCUMENT = build_document(_route_table())


def _conforms(name: str, value: Any) -> None:
    root = {"$ref": "#/components/schemas/" + name, "components": DOCUMENT["components"]}
    jsonschema.Draft202012Validator(root).validate(value)


def test_the_views_conform_to_the_document(store: SqlStore) -> None:
    ann = accounts.create_user(store, "ann")
    soon = datetime.now(UTC) + timedelta(days=1)
    made = codes.create_codes(store, 2, "2.5", expires_at=soon, created_by="api key 1")
    _conforms("CreatedCodes", codes.created_json(made))
    redeemed = _redeem(store, ann.id, made[0][1])
    _conforms("RedeemedCode", codes.redemption_json(redeemed))
    listed = [codes.code_json(record) for record in store.list_codes()]
    _conforms("TopupCodeList", {"data": listed})
    assert [item["state"] for item in listed] == ["redeemed", "unused"]
    assert listed[0]["redeemed_by"] == "ann"
    assert "code" not in listed[0]
    later = soon + timedelta(seconds=1)
    assert codes.code_json(store.list_codes()[1], later)["state"] == "expired"
