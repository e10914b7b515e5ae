"""Admission and settlement (services/billing.py) on a real SQLite store: what is held before a
request runs, who is refused and why, and what each way of ending is charged
(docs/billing.md, "Admission and settlement")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from modelport.core.catalog import ModelCard, Pricing
from modelport.core.errors import InsufficientBalance, PermissionDenied, UpstreamError
from modelport.core.events import Stop, Usage
from modelport.core.types import ChatRequest, Message, TextPart
from modelport.services import accounts
from modelport.services.billing import BillingService
from modelport.services.keys import Principal
from modelport.services.limits import InProcessRateLimiter
from modelport.store import migrate
from modelport.store.sql import SqlStore

NANO = 10**9
PRICED = ModelCard(
    id="acme/priced",
    name="priced",
    description="d",
    context_length=1000,
    pricing=Pricing(input_per_1k="0.0005", output_per_1k="0.00175"),  # 500 / 1,750 per token
)
FREE = ModelCard(id="acme/free", name="free", description="d", context_length=1000)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    url = f"sqlite:///{tmp_path / 'modelport.db'}"
    migrate(url)
    with SqlStore(url) as opened:
        yield opened


def principal(
    store: SqlStore,
    balance: str = "1",
    *,
    admin: bool = False,
    limit: str | None = None,
    models: tuple[str, ...] | None = None,
) -> Principal:
    """A fresh account with `balance` CNY and one key with `limits`, as authentication sees it."""
    name = f"user{len(store.list_accounts())}"
    account = accounts.create_user(store, name, balance=balance, admin=admin)
    record, _secret = accounts.create_account_key(
        store, f"{name}-key", user=name, limit=limit, models=models
    )
    [grant] = store.list_grants(account_id=account.id)
    return Principal(
        key_id=record.id,
        name=record.name,
        role=account.role,
        account_id=account.id,
        account_name=name,
        limits=grant.limits,
    )


def service(
    store: SqlStore, prompt: int = 40, *, exact: bool = True, ttl: float = 60
) -> BillingService:
    async def count(card: ModelCard, request: ChatRequest) -> tuple[int, bool]:
        return prompt, exact

    async def count_output(card: ModelCard, text: str) -> int:
        return len(text.split())  # a stand-in tokenizer: one token per word

    return BillingService(store, InProcessRateLimiter(), count, count_output, hold_ttl=ttl)


def chat(max_tokens: int | None = 100, model: str = PRICED.id) -> ChatRequest:
    return ChatRequest(
        model=model,
        messages=(Message("user", (TextPart("hi"),)),),
        max_output_tokens=max_tokens,
    )


def balance(store: SqlStore, who: Principal) -> int:
    account = store.get_account_by_id(who.account_id)
    assert account is not None
    return account.balance_nano


_ids = iter(range(10**6))


def rid() -> str:
    return f"req{next(_ids)}"


# --------------------------------------------------------------------------- the policy


@pytest.mark.parametrize(
    ("finished", "usage", "charged"),
    [
        pytest.param(True, Usage(10, 4), 10 * 500 + 4 * 1750, id="finished"),
        pytest.param(True, Usage(10, 0), 10 * 500, id="finished-without-output"),
        pytest.param(False, Usage(10, 3), 10 * 500 + 3 * 1750, id="failed-after-tokens"),
        pytest.param(False, Usage(10, 0), 0, id="failed-before-any-token"),
        pytest.param(False, None, 0, id="failed-with-nothing-known"),
    ],
)
def test_cost_follows_the_policy(finished: bool, usage: Usage | None, charged: int) -> None:
    assert BillingService.cost(PRICED, usage, finished=finished) == charged


def test_reasoning_is_billed_as_output() -> None:
    with_reasoning = Usage(10, 30, reasoning_tokens=25)
    assert BillingService.cost(PRICED, with_reasoning, finished=True) == 10 * 500 + 30 * 1750


# --------------------------------------------------------------------------- admission


@pytest.mark.asyncio
async def test_an_exact_prompt_and_max_tokens_make_the_hold(store: SqlStore) -> None:
    who = principal(store)
    admission = await service(store, 40).admit(
        who, PRICED, chat(100), request_id=rid(), streamed=False
    )
    assert admission.hold_nano == 40 * 500 + 100 * 1750
    assert balance(store, who) == NANO - admission.hold_nano
    assert store.active_holds(who.account_id) == 1


@pytest.mark.asyncio
async def test_an_estimated_prompt_is_padded(store: SqlStore) -> None:
    who = principal(store)
    billing = service(store, 40, exact=False)
    admission = await billing.admit(who, PRICED, chat(100), request_id=rid(), streamed=False)
    assert admission.hold_nano == (50 + 16) * 500 + 100 * 1750


@pytest.mark.asyncio
async def test_without_max_tokens_the_output_limit_or_the_context_left_is_held(
    store: SqlStore,
) -> None:
    who = principal(store)
    billing = service(store, 40)
    limited = msgspec.structs.replace(PRICED, max_output_tokens=300)
    admission = await billing.admit(who, limited, chat(None), request_id=rid(), streamed=False)
    assert admission.hold_nano == 40 * 500 + 300 * 1750
    admission = await billing.admit(who, PRICED, chat(None), request_id=rid(), streamed=False)
    assert admission.hold_nano == 40 * 500 + (1000 - 40) * 1750


@pytest.mark.asyncio
async def test_a_free_model_holds_nothing(store: SqlStore) -> None:
    who = principal(store, "0")
    billing = service(store)
    admission = await billing.admit(who, FREE, chat(100, FREE.id), request_id=rid(), streamed=False)
    assert admission.hold_nano == 0
    await billing.settle(
        admission,
        usage=Usage(10, 4),
        stop=Stop("stop"),
        error=None,
        cancelled=False,
        backend="b",
        ttft=None,
    )
    assert balance(store, who) == 0


@pytest.mark.asyncio
async def test_a_balance_below_the_worst_case_is_refused_and_holds_nothing(
    store: SqlStore,
) -> None:
    who = principal(store, "0.0001")
    with pytest.raises(InsufficientBalance) as refused:
        await service(store, 40).admit(who, PRICED, chat(100), request_id=rid(), streamed=False)
    assert refused.value.status == 402
    assert refused.value.code == "insufficient_balance"
    assert "0.000195 CNY" in refused.value.message and "0.0001 CNY" in refused.value.message
    assert balance(store, who) == 100_000
    assert store.active_holds(who.account_id) == 0


@pytest.mark.asyncio
async def test_a_key_past_its_spending_limit_is_refused(store: SqlStore) -> None:
    who = principal(store, "1", limit="0.0003")
    billing = service(store, 40)
    await billing.admit(who, PRICED, chat(100), request_id=rid(), streamed=False)
    with pytest.raises(InsufficientBalance) as refused:
        await billing.admit(who, PRICED, chat(100), request_id=rid(), streamed=False)
    assert refused.value.code == "key_limit_exceeded"


@pytest.mark.asyncio
async def test_a_key_is_refused_models_it_may_not_use_before_anything_is_held(
    store: SqlStore,
) -> None:
    who = principal(store, "1", models=("acme/other",))
    with pytest.raises(PermissionDenied):
        await service(store).admit(who, PRICED, chat(100), request_id=rid(), streamed=False)
    assert balance(store, who) == NANO


@pytest.mark.asyncio
async def test_an_admin_account_is_never_refused_for_its_balance(store: SqlStore) -> None:
    who = principal(store, "0", admin=True)
    billing = service(store, 40)
    admission = await billing.admit(who, PRICED, chat(10**5), request_id=rid(), streamed=False)
    await billing.settle(
        admission,
        usage=Usage(10, 4),
        stop=Stop("stop"),
        error=None,
        cancelled=False,
        backend="b",
        ttft=None,
    )
    assert balance(store, who) == -(10 * 500 + 4 * 1750)
    assert [e.kind for e in store.ledger(who.account_id)] == ["charge"]


# --------------------------------------------------------------------------- settlement


@pytest.mark.asyncio
async def test_settlement_charges_once_and_releases_the_hold(store: SqlStore) -> None:
    who = principal(store)
    billing = service(store, 40)
    admission = await billing.admit(who, PRICED, chat(100), request_id=rid(), streamed=True)
    for _ in range(2):
        billed = await billing.settle(
            admission,
            usage=Usage(30, 20),
            stop=Stop("length"),
            error=None,
            cancelled=False,
            backend="b",
            ttft=0.01,
        )
        assert billed is not None and billed.cost_nano == 30 * 500 + 20 * 1750
    assert balance(store, who) == NANO - (30 * 500 + 20 * 1750)
    assert store.active_holds(who.account_id) == 0
    row = store.get_usage(admission.request_id)
    assert row is not None
    assert (row.status, row.finish_reason, row.streamed) == ("ok", "length", True)
    assert [e.kind for e in store.ledger(who.account_id)] == ["topup", "charge"]


@pytest.mark.asyncio
async def test_a_cancelled_request_pays_for_what_was_generated(store: SqlStore) -> None:
    who = principal(store)
    billing = service(store, 40)
    admission = await billing.admit(who, PRICED, chat(100), request_id=rid(), streamed=True)
    await billing.settle(
        admission,
        usage=Usage(40, 7),
        stop=None,
        error=None,
        cancelled=True,
        backend="b",
        ttft=None,
    )
    row = store.get_usage(admission.request_id)
    assert row is not None
    assert (row.status, row.cancelled, row.cost_nano) == ("cancelled", True, 40 * 500 + 7 * 1750)
    assert balance(store, who) == NANO - row.cost_nano


@pytest.mark.asyncio
async def test_a_failure_before_any_token_is_recorded_and_free(store: SqlStore) -> None:
    who = principal(store)
    billing = service(store, 40)
    admission = await billing.admit(who, PRICED, chat(100), request_id=rid(), streamed=False)
    await billing.settle(
        admission,
        usage=None,
        stop=None,
        error=UpstreamError("down"),
        cancelled=False,
        backend=None,
        ttft=None,
    )
    row = store.get_usage(admission.request_id)
    assert row is not None
    assert (row.status, row.error_code, row.cost_nano) == ("error", "upstream_error", 0)
    assert balance(store, who) == NANO
    assert store.active_holds() == 0


@pytest.mark.asyncio
async def test_holds_left_by_a_dead_process_are_given_back(store: SqlStore) -> None:
    who = principal(store)
    billing = service(store, 40, ttl=0)
    await billing.admit(who, PRICED, chat(100), request_id=rid(), streamed=False)
    assert balance(store, who) < NANO
    assert await billing.release_expired_holds() == 1
    assert balance(store, who) == NANO
    assert store.active_holds() == 0


@pytest.mark.asyncio
async def test_a_stream_cut_before_its_usage_is_billed_from_what_was_counted(
    store: SqlStore,
) -> None:
    # The backend never reported usage (the stream ended before its last chunk): the prompt
    # as counted for the hold and the relayed text, counted, are billed.
    caller = principal(store, balance="10")
    billing = service(store, prompt=40)
    admission = await billing.admit(caller, PRICED, chat(), request_id="req-cut", streamed=True)
    billed = await billing.settle(
        admission,
        usage=None,
        stop=None,
        error=None,
        cancelled=True,
        backend="b",
        ttft=0.1,
        generated="three words here",
    )
    assert billed is not None
    assert (billed.prompt_tokens, billed.completion_tokens) == (40, 3)
    assert billed.cost_nano == PRICED.pricing.cost_nano(40, 3)
    row = store.get_usage("req-cut")
    assert row is not None and row.status == "cancelled" and row.cost_nano == billed.cost_nano
