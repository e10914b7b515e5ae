"""The metering stage (services/metering.py) and the credit book (services/credit.py) on a real
SQLite store, around scripted backends: what is held, what each way of ending is charged, the
output cut at the admitted limit, and credit that never stays stuck (docs/billing.md)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncGenerator, Iterator, Sequence
from concurrent.futures import Future
from contextlib import aclosing, closing
from pathlib import Path

import msgspec
import pytest

from modelport.backends.base import CallContext, Route
from modelport.core.catalog import Catalog, ModelCard, OpenAICompatBackend, Pricing
from modelport.core.collect import collect
from modelport.core.errors import (
    ContextLengthExceeded,
    InsufficientBalance,
    MalformedModelOutput,
    PermissionDenied,
    UpstreamError,
)
from modelport.core.events import Error, Event, Start, Stop, TextDelta, Usage
from modelport.core.types import ChatRequest, Message, TextPart
from modelport.services import accounts
from modelport.services.credit import LEASE_HOLDS, CreditBook
from modelport.services.inference import InferenceService
from modelport.services.keys import Principal
from modelport.services.limits import InProcessRateLimiter
from modelport.services.metering import Metering
from modelport.store import migrate
from modelport.store.base import LeaseResult, UsageRecord
from modelport.store.sql import SqlStore

pytestmark = pytest.mark.asyncio

IN, OUT = 500, 1750  # nano-yuan per prompt / completion token
CONTEXT = 1000
PROMPT = 40  # what the scripted backend counts for every prompt
CARD = ModelCard(
    id="acme/priced",
    name="priced",
    description="d",
    context_length=CONTEXT,
    pricing=Pricing(input_per_1k="0.0005", output_per_1k="0.00175"),
    backends=(OpenAICompatBackend(url="http://127.0.0.1:9/v1"),),
)


class Backend:
    """A scripted backend with an exact tokenizer of its own: one token per word."""

    name = "scripted"

    def __init__(self, events: Sequence[Event | Exception], *, pause: float = 0.0) -> None:
        self.events = events
        self.pause = pause
        self.closed = False
        self.generated = 0

    async def stream(self, request: ChatRequest, ctx: CallContext) -> AsyncGenerator[Event, None]:
        try:
            for event in self.events:
                if isinstance(event, Exception):
                    raise event
                if isinstance(event, TextDelta):
                    self.generated += 1
                    if self.pause:
                        await asyncio.sleep(self.pause)
                yield event
        finally:
            self.closed = True

    async def count_tokens(self, request: ChatRequest, *, local_only: bool = False) -> int:
        return PROMPT

    async def count_text(self, text: str, *, local_only: bool = False) -> int:
        return len(text.split())


def words(n: int) -> list[Event]:
    return [TextDelta(0, f" w{i}") for i in range(n)]


def answer(n: int, usage: Usage | None, finish: str = "stop") -> list[Event]:
    tail: list[Event] = [usage] if usage is not None else []
    return [Start(CARD.id, "scripted"), *words(n), *tail, Stop(finish)]  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    url = f"sqlite:///{tmp_path / 'modelport.db'}"
    migrate(url)
    with SqlStore(url, linger=0.001) as opened:
        STORES[id(opened)] = str(tmp_path / "modelport.db")
        yield opened


def principal(
    store: SqlStore, balance: str = "1", *, admin: bool = False, limit: str | None = None
) -> Principal:
    name = f"user{len(store.list_accounts())}"
    account = accounts.create_user(store, name, balance=balance, admin=admin)
    record, _ = accounts.create_account_key(store, f"{name}-key", user=name, limit=limit)
    [grant] = store.list_grants(account_id=account.id)
    return Principal(
        key_id=record.id,
        name=record.name,
        role=account.role,
        account_id=account.id,
        account_name=name,
        limits=grant.limits,
    )


def metering(store: SqlStore, backend: Backend) -> Metering:
    inference = InferenceService(Catalog((CARD,)), {CARD.id: [Route(backend)]})
    book = CreditBook(store, owner="test", ttl=60)
    return Metering(inference, store, book, InProcessRateLimiter())


def chat(max_tokens: int | None = 100) -> ChatRequest:
    return ChatRequest(
        model=CARD.id, messages=(Message("user", (TextPart("hi"),)),), max_output_tokens=max_tokens
    )


def balance(store: SqlStore, who: Principal) -> int:
    account = store.get_account_by_id(who.account_id)
    assert account is not None
    return account.balance_nano


async def rows(store: SqlStore, meter: Metering) -> list[UsageRecord]:
    """Every usage row written so far, oldest first (after the write-behind is flushed)."""
    await meter.flush()
    with closing(sqlite3.connect(store_path(store))) as db:
        ids = [row[0] for row in db.execute("SELECT request_id FROM usage ORDER BY created_at")]
    return [row for row in map(store.get_usage, ids) if row is not None]


def store_path(store: SqlStore) -> str:
    return STORES[id(store)]


STORES: dict[int, str] = {}


async def run(meter: Metering, who: Principal, request: ChatRequest) -> list[Event]:
    generation = await meter.start(who, request)
    async with aclosing(generation.events) as events:
        return [event async for event in events]


# --------------------------------------------------------------------------- admission


async def test_the_hold_is_the_prompt_and_the_clamped_output(store: SqlStore) -> None:
    who = principal(store, "100")
    meter = metering(store, Backend(answer(2, Usage(PROMPT, 2))))
    # max_tokens far beyond the context: held (and relayed) as what the context leaves.
    events = await run(meter, who, chat(10**9))
    assert isinstance(events[-1], Stop)
    assert meter.credit.held(who.key_id) == 0
    [row] = await rows(store, meter)
    assert row.cost_nano == PROMPT * IN + 2 * OUT
    poor = principal(store, "0.0001")
    with pytest.raises(InsufficientBalance) as refused:
        await meter.start(poor, chat(10**9))
    worst = PROMPT * IN + (CONTEXT - PROMPT) * OUT
    assert f"{worst / 10**9:.8f}".rstrip("0") in refused.value.message


async def test_a_key_may_use_only_its_models(store: SqlStore) -> None:
    who = principal(store)
    restricted = msgspec.structs.replace(
        who, limits=msgspec.structs.replace(who.limits, allowed_models=("other/model",))
    )
    with pytest.raises(PermissionDenied):
        await metering(store, Backend(answer(1, None))).start(restricted, chat())


async def test_concurrent_first_requests_take_one_lease(store: SqlStore) -> None:
    who = principal(store, "100")
    meter = metering(store, Backend(answer(1, Usage(PROMPT, 1))))
    await asyncio.gather(*(run(meter, who, chat(10)) for _ in range(20)))
    assert len(store.leases(account_id=who.account_id)) == 1
    hold = PROMPT * IN + 10 * OUT
    [lease] = store.leases(account_id=who.account_id)
    await meter.flush()
    assert lease.amount_nano <= LEASE_HOLDS * hold


class Untokenized(Backend):
    """A backend whose tokenizer modelport does not have: prompts are estimated."""

    count_tokens = None  # type: ignore[assignment]
    count_text = None  # type: ignore[assignment]


class Counting(Backend):
    def __init__(self, events: Sequence[Event | Exception], prompt: int) -> None:
        super().__init__(events)
        self.prompt = prompt

    async def count_tokens(self, request: ChatRequest, *, local_only: bool = False) -> int:
        return self.prompt


def said(text: str, messages: int = 1) -> ChatRequest:
    turns = tuple(Message("user", (TextPart(text),)) for _ in range(messages))
    return ChatRequest(model=CARD.id, messages=turns, max_output_tokens=10)


async def test_a_prompt_that_cannot_fit_is_refused_before_any_backend_sees_it(
    store: SqlStore,
) -> None:
    who = principal(store, "100")
    # Counted exactly: the context full leaves no room for output.
    backend = Counting(answer(1, None), prompt=CONTEXT)
    with pytest.raises(ContextLengthExceeded) as refused:
        await metering(store, backend).start(who, chat())
    assert (refused.value.prompt_tokens, refused.value.limit) == (CONTEXT, CONTEXT)
    assert refused.value.param == "messages"
    assert backend.closed is False  # never started
    # No tokenizer: refused when even the floor (32 bytes a token, one per message) is over
    # the context: a 2 MB prompt, or 5,000 empty-ish turns, for a 1,000-token model.
    for request in (said("x" * 2_000_000), said("hi", messages=5_000)):
        backend = Untokenized(answer(1, None))
        meter = metering(store, backend)
        with pytest.raises(ContextLengthExceeded, match="at least"):
            await meter.start(who, request)
        assert backend.closed is False
        assert meter.credit.held(who.key_id) == 0
    # A prompt the estimate puts over the context but that could fit is the upstream's to
    # judge: forwarded (8,000 bytes: 2,000 tokens estimated, at least 250).
    backend = Untokenized(answer(1, Usage(900, 1)))
    events = await run(metering(store, backend), who, said("word " * 1600))
    assert isinstance(events[-1], Stop) and backend.closed


# --------------------------------------------------------------------------- settlement


async def test_a_failed_whole_answer_is_settled_before_its_error_is_raised(
    store: SqlStore,
) -> None:
    # A 502 after the first event (a malformed tool call, a dropped upstream): before the
    # route answers, the hold is released and the usage row is on its way.
    who = principal(store, "0.0005")
    failing = [Start(CARD.id, "scripted"), *words(3), Error(MalformedModelOutput("broken call"))]
    meter = metering(store, Backend(failing))
    for _ in range(3):  # would run out of credit if holds stayed stuck
        generation = await meter.start(who, chat(100))
        with pytest.raises(MalformedModelOutput):
            async with aclosing(generation.events) as events:
                await collect(events)
        assert meter.credit.held(who.key_id) == 0
    found = await rows(store, meter)
    assert [r.status for r in found] == ["error"] * 3
    assert {r.cost_nano for r in found} == {PROMPT * IN + 3 * OUT}
    assert balance(store, who) == 500_000 - 3 * (PROMPT * IN + 3 * OUT)


async def test_a_failure_before_the_first_event_charges_nothing(store: SqlStore) -> None:
    who = principal(store)
    meter = metering(store, Backend([UpstreamError("down")]))
    with pytest.raises(UpstreamError):
        await meter.start(who, chat())
    [row] = await rows(store, meter)
    assert (row.status, row.cost_nano) == ("error", 0)
    assert balance(store, who) == 10**9


async def test_a_client_that_leaves_pays_the_running_usage(store: SqlStore) -> None:
    who = principal(store)
    events: list[Event] = [Start(CARD.id, "scripted")]
    for i in range(50):
        events += [TextDelta(0, f" w{i}"), Usage(PROMPT, i + 1)]
    events.append(Stop("stop"))
    meter = metering(store, Backend(events))
    generation = await meter.start(who, chat(100))
    async with aclosing(generation.events) as stream:
        async for event in stream:
            if isinstance(event, TextDelta) and event.text == " w4":
                break  # five pieces relayed: the client leaves
    [row] = await rows(store, meter)
    assert (row.status, row.cancelled, row.completion_tokens) == ("cancelled", True, 5)
    assert row.cost_nano == PROMPT * IN + 5 * OUT


@pytest.mark.parametrize("read_as", ["batches", "events"])
async def test_a_stream_closed_before_its_first_read_is_settled_and_frees_its_backend(
    store: SqlStore, read_as: str
) -> None:
    """The client was gone by the time the response began: the stream the door was handed is
    closed unread. Its backend stops, its place behind the backend's cap comes back, and the
    request is settled as cancelled (the prompt, no output), not left held."""
    who = principal(store)
    backend = Backend(answer(30, Usage(PROMPT, 30)))
    inference = InferenceService(Catalog((CARD,)), {CARD.id: [Route(backend, max_concurrency=1)]})
    meter = Metering(
        inference, store, CreditBook(store, owner="test", ttl=60), InProcessRateLimiter()
    )
    before = balance(store, who)
    for _ in range(3):  # with the cap at 1, a place not given back would refuse the next one
        generation = await meter.start(who, chat(100))
        unread = generation.in_batches() if read_as == "batches" else generation.events
        await unread.aclose()
        assert backend.closed
        backend.closed = False
    settled = await rows(store, meter)
    assert [(row.status, row.cancelled, row.completion_tokens) for row in settled] == [
        ("cancelled", True, 0)
    ] * 3
    assert all(row.cost_nano == PROMPT * IN for row in settled)
    await meter.aclose()
    assert store.leases() == []  # nothing left held
    assert balance(store, who) == before - 3 * PROMPT * IN
    assert meter.in_flight == {}


async def test_requests_in_flight_are_counted_per_model_until_each_is_settled(
    store: SqlStore,
) -> None:
    """What the admin's models page shows: admitted, not yet settled, on every path."""
    who = principal(store)
    meter = metering(store, Backend(answer(3, Usage(PROMPT, 3))))
    generation = await meter.start(who, chat())
    assert meter.in_flight == {CARD.id: 1}
    async with aclosing(generation.events) as events:
        async for _ in events:
            pass
    assert meter.in_flight == {}
    failing = metering(store, Backend([UpstreamError("down")]))
    with pytest.raises(UpstreamError):
        await failing.start(who, chat())
    assert failing.in_flight == {}
    leaving = metering(store, Backend(answer(50, Usage(PROMPT, 50))))
    generation = await leaving.start(who, chat())
    async with aclosing(generation.events) as events:
        await anext(events)  # the client leaves after the first batch
    await rows(store, leaving)  # settled behind the closed stream
    assert leaving.in_flight == {}


async def test_output_beyond_the_limit_is_cut_and_not_billed(store: SqlStore) -> None:
    who = principal(store)
    backend = Backend(answer(200, Usage(PROMPT, 200)))
    meter = metering(store, backend)
    events = await run(meter, who, chat(3))
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert len(text.split()) == 3
    assert events[-1] == Stop("length", "output_limit")
    usage = next(e for e in events if isinstance(e, Usage))
    assert usage.completion_tokens == 3
    assert backend.closed
    [row] = await rows(store, meter)
    assert row.cost_nano == PROMPT * IN + 3 * OUT
    assert row.anomaly is not None and "output_cut_at_limit" in row.anomaly


@pytest.mark.parametrize(
    "reported",
    [Usage(10**6, 10**6), Usage(PROMPT, 0), Usage(-5, 3), None],
    ids=["inflated", "zero", "negative", "missing"],
)
async def test_implausible_or_missing_usage_is_counted_by_the_gateway(
    store: SqlStore, reported: Usage | None
) -> None:
    who = principal(store)
    meter = metering(store, Backend(answer(30, reported)))
    events = await run(meter, who, chat(100))
    usage = next(e for e in events if isinstance(e, Usage))
    assert (usage.prompt_tokens, usage.completion_tokens) == (PROMPT, 30)
    assert usage.cost_nano == PROMPT * IN + 30 * OUT
    await meter.flush()
    assert balance(store, who) == 10**9 - usage.cost_nano


async def test_a_prepaid_charge_never_exceeds_its_hold(store: SqlStore) -> None:
    # Believable per token (within the bounds), yet more than the hold: charged the hold.
    who = principal(store)
    meter = metering(store, Backend(answer(2, Usage(PROMPT + 200, 2))))
    events = await run(meter, who, chat(2))
    usage = next(e for e in events if isinstance(e, Usage))
    hold = PROMPT * IN + 2 * OUT
    assert usage.cost_nano == hold
    [row] = await rows(store, meter)
    assert row.anomaly == "capped_at_hold"


async def test_an_admin_account_is_postpaid(store: SqlStore) -> None:
    who = principal(store, "0", admin=True)
    meter = metering(store, Backend(answer(2, Usage(PROMPT, 2))))
    await run(meter, who, chat(10))
    await meter.flush()
    assert balance(store, who) == -(PROMPT * IN + 2 * OUT)


async def test_a_key_at_its_spending_limit_is_refused(store: SqlStore) -> None:
    who = principal(store, "1", limit="0.0001")  # 100,000: less than one hold
    with pytest.raises(InsufficientBalance) as refused:
        await metering(store, Backend(answer(1, None))).start(who, chat(100))
    assert refused.value.code == "key_limit_exceeded"


async def test_closing_gives_every_lease_back(store: SqlStore) -> None:
    who = principal(store)
    meter = metering(store, Backend(answer(2, Usage(PROMPT, 2))))
    await run(meter, who, chat(10))
    await meter.aclose()
    assert store.leases() == []
    assert balance(store, who) == 10**9 - (PROMPT * IN + 2 * OUT)
    assert store.ledger_total(who.account_id) == balance(store, who)


class SlowLeaseStore:
    """A store whose lease answers come from another thread a little later, as the writer
    thread's do; every lease is granted in full."""

    def __init__(self) -> None:
        self.leases_taken = 0

    def lease_credit(self, **fields: int) -> Future[LeaseResult]:
        self.leases_taken += 1
        future: Future[LeaseResult] = Future()
        future.set_running_or_notify_cancel()

        def answer() -> None:
            time.sleep(0.02)
            future.set_result(LeaseResult(fields["want_nano"], self.leases_taken, 10**9))

        threading.Thread(target=answer).start()
        return future


async def test_a_request_arriving_as_a_lease_is_granted_is_served_from_it() -> None:
    # A request that reaches admission between the store's answer and the taker resuming
    # once spun the event loop forever on the finished take.
    store = SlowLeaseStore()
    book = CreditBook(store, owner="test", ttl=60)  # type: ignore[arg-type]
    first = asyncio.ensure_future(book.hold(1, 3, 100))
    await asyncio.sleep(0.1)
    second = await asyncio.wait_for(book.hold(1, 3, 100), 2)
    assert (await first).lease is second.lease
    assert store.leases_taken == 1
    assert book.held(3) == 200


@pytest.mark.parametrize(
    ("tail", "code"),
    [
        ([UpstreamError("reset mid-answer")], "upstream_error"),
        ([RuntimeError("a bug in a backend")], "internal_error"),
        ([], "internal_error"),  # ended without a finish
    ],
    ids=["raised", "crashed", "unfinished"],
)
async def test_a_stream_that_breaks_ends_in_one_error_and_is_settled(
    store: SqlStore, tail: list[Exception], code: str
) -> None:
    who = principal(store)
    meter = metering(store, Backend([Start(CARD.id, "scripted"), *words(3), *tail]))
    events = await run(meter, who, chat(100))
    assert isinstance(events[-1], Error)
    assert events[-1].error.code == code
    assert sum(isinstance(e, Error | Stop) for e in events) == 1
    [row] = await rows(store, meter)
    assert (row.status, row.completion_tokens) == ("error", 3)
    assert row.cost_nano == PROMPT * IN + 3 * OUT
