"""core/alarms.py: deadlines on one loop timer, under asyncio and uvloop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from modelport.core.alarms import Alarms, alarms_for

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Any:
    def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
        loop = LOOPS[request.param]()
        try:
            loop.run_until_complete(main())
        finally:
            loop.close()

    return run


def test_alarms_ring_in_time_order_and_not_before_they_are_due(run: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        alarms = alarms_for(loop)
        rang: list[tuple[str, float]] = []
        start = loop.time()
        for name, delay in (("late", 0.06), ("early", 0.02), ("middle", 0.04)):
            alarms.set(name, start + delay, lambda n=name: rang.append((n, loop.time())))
        await asyncio.sleep(0.1)
        assert [name for name, _ in rang] == ["early", "middle", "late"]
        for (_, at), delay in zip(rang, (0.02, 0.04, 0.06), strict=True):
            assert at - start >= delay - 0.002  # a millisecond clock may round down once
        assert len(alarms) == 0

    run(main)


def test_a_cleared_alarm_never_rings_and_the_rest_still_do(run: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        alarms = alarms_for(loop)
        rang: list[str] = []
        now = loop.time()
        alarms.set("kept", now + 0.03, rang.append, "kept")
        alarms.set("cleared", now + 0.01, rang.append, "cleared")
        alarms.clear("cleared")
        alarms.clear("never set")
        await asyncio.sleep(0.06)
        assert rang == ["kept"]

    run(main)


def test_setting_a_key_again_replaces_its_alarm(run: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        alarms = alarms_for(loop)
        rang: list[str] = []
        alarms.set("k", loop.time() + 0.01, rang.append, "first")
        alarms.set("k", loop.time() + 0.03, rang.append, "second")
        await asyncio.sleep(0.02)
        assert rang == []
        await asyncio.sleep(0.03)
        assert rang == ["second"]

    run(main)


def test_an_alarm_set_while_the_timer_waits_for_a_later_one_rings_on_time(run: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        alarms = alarms_for(loop)
        rang: list[str] = []
        alarms.set("slow", loop.time() + 10, rang.append, "slow")
        await asyncio.sleep(0)
        alarms.set("quick", loop.time() + 0.01, rang.append, "quick")
        await asyncio.sleep(0.04)
        assert rang == ["quick"]
        alarms.clear("slow")

    run(main)


def test_a_callback_that_clears_or_sets_alarms_and_one_that_fails(run: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        failures: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _, context: failures.append(context))
        alarms = alarms_for(loop)
        rang: list[str] = []
        now = loop.time()

        def first() -> None:
            rang.append("first")
            alarms.clear("second")  # due at the same ring: it must not run
            alarms.set("later", loop.time() + 0.05, rang.append, "later")

        def broken() -> None:
            raise RuntimeError("boom")

        alarms.set("first", now + 0.01, first)
        alarms.set("second", now + 0.01, rang.append, "second")
        alarms.set("broken", now + 0.01, broken)
        alarms.set("other", now + 0.02, rang.append, "other")
        await asyncio.sleep(0.1)
        assert rang == ["first", "other", "later"]
        assert [type(f["exception"]) for f in failures] == [RuntimeError]

    run(main)


def test_many_alarms_set_and_cleared_use_one_timer() -> None:
    loop = asyncio.new_event_loop()
    try:

        async def main() -> None:
            alarms = Alarms(loop)
            for i in range(1000):
                alarms.set(i, loop.time() + 30, print)
                alarms.clear(i)
            # asyncio keeps its timers in loop._scheduled: one, however many alarms.
            assert len(loop._scheduled) == 1  # type: ignore[attr-defined]

        loop.run_until_complete(main())
    finally:
        loop.close()


def test_each_loop_has_its_own_alarms_and_closed_loops_are_forgotten() -> None:
    first = asyncio.new_event_loop()
    second = uvloop.new_event_loop()
    try:
        one = alarms_for(first)
        assert alarms_for(first) is one
        two = alarms_for(second)
        assert two is not one and alarms_for(first) is one
        first.close()
        third = asyncio.new_event_loop()
        try:
            alarms_for(third)
            from modelport.core import alarms as module

            assert first not in module._by_loop
        finally:
            third.close()
    finally:
        first.close()
        second.close()
