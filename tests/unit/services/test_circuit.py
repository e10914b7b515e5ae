"""Circuit breaking and concurrency caps: the state machine on a clock the test moves, and
routing through it with scripted backends (a backend that fails stops getting requests, a
half-open circuit lets one request through, a cap sends the rest elsewhere)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest
from tests.unit.services.test_inference import GOOD, ScriptedBackend, card, request

from modelport.backends.base import CallContext, Route
from modelport.core.catalog import Catalog
from modelport.core.collect import collect
from modelport.core.errors import CircuitOpen, InvalidRequest, Overloaded, UpstreamError
from modelport.core.events import Event, Start, Stop, TextDelta
from modelport.core.types import ChatRequest
from modelport.services.circuit import ADMITTED, CLOSED, HALF_OPEN, OPEN, PROBE, REFUSED, Guard
from modelport.services.inference import InferenceService


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def guard(clock: Clock, **fields: float | int | None) -> Guard:
    return Guard("b", clock=clock, **fields)  # type: ignore[arg-type]


def test_failures_in_a_row_open_the_circuit_and_a_success_resets_the_count() -> None:
    clock = Clock()
    g = guard(clock, failures=3, cooldown=10)
    for _ in range(2):
        assert g.admit() == ADMITTED
        g.failed()
        g.release()
    g.admit()
    g.succeeded()  # the count starts again
    g.release()
    for _ in range(2):
        g.admit()
        g.failed()
        g.release()
    assert g.state == CLOSED
    g.admit()
    g.failed()
    g.release()
    assert g.state == OPEN and g.open
    assert g.admit() == REFUSED
    assert g.retry_after() == 10
    clock.now += 4
    assert g.retry_after() == 6 and g.admit() == REFUSED


def test_after_the_cool_down_one_request_probes_and_decides() -> None:
    clock = Clock()
    g = guard(clock, failures=1, cooldown=5)
    g.admit()
    g.failed()
    g.release()
    clock.now += 5
    assert not g.open
    assert g.admit() == PROBE and g.state == HALF_OPEN
    assert g.admit() == REFUSED  # one probe at a time
    g.failed()
    g.release(probe=True)
    assert g.state == OPEN and g.admit() == REFUSED  # a whole cool-down again
    clock.now += 5
    assert g.admit() == PROBE
    g.succeeded()
    g.release(probe=True)
    assert g.state == CLOSED
    assert g.admit() == ADMITTED and g.admit() == ADMITTED


def test_a_probe_whose_client_left_lets_the_next_request_probe() -> None:
    clock = Clock()
    g = guard(clock, failures=1, cooldown=1)
    g.admit()
    g.failed()
    g.release()
    clock.now += 1
    assert g.admit() == PROBE
    g.release(probe=True)  # no outcome
    assert g.state == HALF_OPEN and g.admit() == PROBE


def test_zero_failures_never_opens_and_the_cap_counts_requests_in_flight() -> None:
    g = guard(Clock(), failures=0, max_concurrency=2)
    for _ in range(50):
        g.failed()
    assert g.state == CLOSED
    assert g.admit() == ADMITTED and g.admit() == ADMITTED
    assert g.admit() == REFUSED and g.at_capacity
    g.release()
    assert g.admit() == ADMITTED and g.in_flight == 2


def test_active_probes_open_a_dead_backend_and_shorten_the_rest_of_an_open_one() -> None:
    clock = Clock()
    g = guard(clock, failures=2, cooldown=30)
    g.probe_failed()
    g.probe_failed()
    assert g.state == OPEN
    clock.now += 20
    g.probe_failed()  # still down: it rests a whole cool-down from now
    assert g.retry_after() == 30
    g.probe_succeeded()  # up again: a request may probe it at once
    assert g.state == HALF_OPEN and g.admit() == PROBE


# ----------------------------------------------------------------------------- routing


def service(*routes: Route) -> InferenceService:
    return InferenceService(Catalog((card("acme/m"),)), {"acme/m": list(routes)})


async def run(svc: InferenceService) -> list[Event]:
    prepared_card, prepared = svc.prepare(request("acme/m"))
    generation = await svc.start(prepared, CallContext("r", prepared_card))
    events = [event async for event in generation.events]
    await generation.events.aclose()
    return events


FAILING: list[Event | Exception] = [UpstreamError("HTTP 500")]


@pytest.mark.asyncio
async def test_a_failing_primary_stops_getting_requests_after_its_threshold() -> None:
    primary = ScriptedBackend("primary", FAILING)
    secondary = ScriptedBackend("secondary", GOOD)
    svc = service(
        Route(primary, priority=0, circuit_failures=3, circuit_cooldown=60),
        Route(secondary, priority=1),
    )
    for _ in range(10):
        events = await run(svc)
        assert isinstance(events[-1], Stop)
    assert (primary.calls, secondary.calls) == (3, 10)
    assert svc.unready() == []  # the model still has a backend


@pytest.mark.asyncio
async def test_the_only_backend_open_is_a_503_with_retry_after_and_unready() -> None:
    only = ScriptedBackend("only", FAILING)
    svc = service(Route(only, circuit_failures=2, circuit_cooldown=30))
    for _ in range(2):
        with pytest.raises(UpstreamError):
            await run(svc)
    with pytest.raises(CircuitOpen) as refused:
        await run(svc)
    assert refused.value.status == 503
    assert refused.value.retry_after == pytest.approx(30, abs=1)
    assert only.calls == 2
    assert svc.unready() == ["acme/m"]


@pytest.mark.asyncio
async def test_a_failure_after_the_start_counts_and_the_clients_errors_do_not() -> None:
    broken: list[Event | Exception] = [
        Start("acme/m", "b"),
        TextDelta(0, "x"),
        UpstreamError("cut"),
    ]
    refused: list[Event | Exception] = [InvalidRequest("bad tool schema")]
    mid = ScriptedBackend("mid", broken)
    svc = service(Route(mid, circuit_failures=2, circuit_cooldown=30))
    for _ in range(2):
        events = await run(svc)
        assert events[-1].__class__.__name__ == "Error"
    with pytest.raises(CircuitOpen):
        await run(svc)
    picky = ScriptedBackend("picky", refused)
    svc = service(Route(picky, circuit_failures=1, circuit_cooldown=30))
    for _ in range(3):
        with pytest.raises(InvalidRequest):
            await run(svc)
    assert picky.calls == 3  # the request was at fault, not the backend


class Slow:
    """Streams until released; counts what it was asked."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0
        self.release = asyncio.Event()

    async def stream(self, request: ChatRequest, ctx: CallContext) -> AsyncGenerator[Event, None]:
        self.calls += 1
        yield Start("acme/m", self.name)
        await self.release.wait()
        yield TextDelta(0, "done")
        yield Stop("stop")


@pytest.mark.asyncio
async def test_the_cap_sends_the_excess_to_the_next_backend_else_refuses_it() -> None:
    capped = Slow("capped")
    spill = ScriptedBackend("spill", GOOD)
    svc = service(Route(capped, priority=0, max_concurrency=2), Route(spill, priority=1))
    card_, prepared = svc.prepare(request("acme/m"))
    held = [await svc.start(prepared, CallContext(str(i), card_)) for i in range(2)]
    assert capped.calls == 2
    events = await run(svc)  # the third goes to the next backend
    assert spill.calls == 1 and isinstance(events[-1], Stop)
    capped.release.set()
    for generation in held:
        assert (await collect(generation.events)).text == "done"
        await generation.events.aclose()
    events = await run(svc)  # places given back: the capped backend serves again
    assert capped.calls == 3

    alone = Slow("alone")
    svc = service(Route(alone, max_concurrency=1))
    card_, prepared = svc.prepare(request("acme/m"))
    first = await svc.start(prepared, CallContext("a", card_))
    with pytest.raises(Overloaded) as full:
        await run(svc)
    assert full.value.retry_after == 1 and not isinstance(full.value, CircuitOpen)
    assert isinstance(await anext(first.events), Start)
    await first.events.aclose()  # the client left: its place comes back
    alone.release.set()
    assert isinstance((await run(svc))[-1], Stop)
    unread = await svc.start(prepared, CallContext("c", card_))
    await unread.events.aclose()  # closed before its first read: its place comes back too
    assert isinstance((await run(svc))[-1], Stop)
