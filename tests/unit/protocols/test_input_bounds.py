"""Hostile request bodies are a 400 naming the field, never another exception (issue 13):
invalid UTF-8 inside a string, nesting deeper than the interpreter follows, integers beyond
64 bits, amounts beyond what a balance may hold, values echoed back clipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelport.core.errors import InvalidRequest, ModelNotFound
from modelport.protocols.anthropic.decode import decode_messages_request
from modelport.protocols.openai.decode import decode_chat_request
from modelport.services import accounts
from modelport.services.catalog import resolve_model
from modelport.store import migrate
from modelport.store.sql import SqlStore

BAD_UTF8 = b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"\xff\xfe"}]}'
DEEP = b'{"model":"m","max_tokens":5,"messages":' + b"[" * 100_000 + b"]" * 100_000 + b"}"


@pytest.mark.parametrize("decode", [decode_chat_request, decode_messages_request])
@pytest.mark.parametrize(
    ("body", "says"), [(BAD_UTF8, "not valid UTF-8"), (DEEP, "nested too deeply")]
)
def test_undecodable_bodies_are_invalid_requests(decode: object, body: bytes, says: str) -> None:
    with pytest.raises(InvalidRequest, match=says):
        decode(body)  # type: ignore[operator]


def openai(**fields: object) -> bytes:
    import json

    return json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    ).encode()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", 2**63),
        ("max_tokens", 2**64),
        ("max_completion_tokens", 10**30),
        ("seed", 2**64),
        ("seed", -(2**70)),
        ("top_k", 2**31),
        ("n", 2**63),
    ],
)
def test_integers_beyond_64_bits_are_refused_naming_the_field(field: str, value: int) -> None:
    with pytest.raises(InvalidRequest) as refused:
        decode_chat_request(openai(**{field: value}))
    assert refused.value.param == field


def test_large_counts_within_64_bits_are_accepted_for_the_clamp() -> None:
    request, _ = decode_chat_request(openai(max_tokens=2**62, seed=-(2**63)))
    assert request.max_output_tokens == 2**62


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_tokens", 2**64), ("thinking", {"type": "enabled", "budget_tokens": 10**30})],
)
def test_anthropic_integers_beyond_64_bits_are_refused(field: str, value: object) -> None:
    import json

    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    body[field] = value
    with pytest.raises(InvalidRequest) as refused:
        decode_messages_request(json.dumps(body).encode())
    assert refused.value.param is not None and refused.value.param.startswith(field)


@pytest.fixture
def store(tmp_path: Path) -> SqlStore:
    url = f"sqlite:///{tmp_path / 'modelport.db'}"
    migrate(url)
    return SqlStore(url)


@pytest.mark.parametrize("amount", ["1e400", "1e20", str(2**63 - 1), "1000000001"])
def test_amounts_beyond_a_billion_cny_are_refused(store: SqlStore, amount: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        accounts.create_user(store, "rich", balance=amount)
    assert refused.value.param == "balance"
    accounts.create_user(store, "user", balance="1")
    with pytest.raises(InvalidRequest) as refused:
        accounts.top_up(store, "user", amount, reason="test")
    assert refused.value.param == "amount"


def test_a_balance_never_grows_past_what_the_books_hold(store: SqlStore) -> None:
    accounts.create_user(store, "user", balance="1000000000")
    for _ in range(3):
        accounts.top_up(store, "user", "1000000000", reason="big")
    with pytest.raises(InvalidRequest, match="may not exceed"):
        accounts.top_up(store, "user", "1", reason="one more")


@pytest.mark.parametrize(("field", "value"), [("rpm", 2**70), ("tpm", 10**10), ("rpm", 0)])
def test_rate_limits_beyond_range_are_refused(store: SqlStore, field: str, value: int) -> None:
    accounts.create_user(store, "user")
    with pytest.raises(InvalidRequest) as refused:
        accounts.create_account_key(store, "k", user="user", **{field: value})  # type: ignore[arg-type]
    assert refused.value.param == field


def test_echoed_values_are_clipped(store: SqlStore) -> None:
    from modelport.core.catalog import Catalog

    with pytest.raises(ModelNotFound) as missing:
        resolve_model(Catalog(()), "x" * 1_000_000)
    assert len(missing.value.message) < 300
    with pytest.raises(InvalidRequest) as refused:
        accounts.create_user(store, "user", balance="9" * 1_000_000 + "x")
    assert len(refused.value.message) < 300
