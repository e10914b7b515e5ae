"""Event streams in batches: a list of events per step instead of one.

An upstream's read holds many events; handed on one at a time, each costs a generator step at
every stage and a wake-up of the writer behind them. Handed on as a list, a read costs one
step per stage and leaves in one write. `batched` turns a stream of single events into
batches of one (for backends that produce events one by one, such as the local engine);
`flat` turns batches back into single events for consumers that want them (`collect`). Both
close the stream they read on every path, so the work behind it stops at once: closed before
their first step too (`Closes`), where a generator's own `finally` would never run.
"""

from __future__ import annotations

import collections.abc
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from contextlib import aclosing
from typing import Any, TypeVar

from modelport.core.events import Event

T = TypeVar("T")


class Closes(collections.abc.AsyncGenerator[T, None]):
    """`generator`, whose `aclose` also awaits `then()` when it is closed before its first
    step. An async generator closed before it started never runs its body, so neither its
    `finally` nor the `async with aclosing(source)` that would close what it reads: a stream
    handed to a consumer that fails or leaves before reading it (a client gone while the
    response headers went out) would leave the work behind it running, or unsettled, until
    garbage collection. Wrap such a generator with the cleanup its body would have done."""

    __slots__ = ("_generator", "_started", "_then")

    def __init__(self, generator: AsyncGenerator[T, None], then: Callable[[], Awaitable[Any]]):
        self._generator = generator
        self._then = then
        self._started = False

    def __anext__(self) -> Coroutine[Any, Any, T]:
        self._started = True
        return self._generator.__anext__()

    def asend(self, value: None, /) -> Coroutine[Any, Any, T]:
        self._started = True
        return self._generator.asend(value)

    def athrow(self, typ: Any, val: Any = None, tb: Any = None, /) -> Coroutine[Any, Any, T]:
        return self._generator.athrow(typ, val, tb)

    async def aclose(self) -> None:
        started, self._started = self._started, True  # `then` runs once, whoever closes
        try:
            await self._generator.aclose()
        finally:
            if not started:
                await self._then()


def batched(events: AsyncGenerator[Event, None]) -> AsyncGenerator[list[Event], None]:
    """Each event as a batch of one."""
    return Closes(_batched(events), events.aclose)


async def _batched(events: AsyncGenerator[Event, None]) -> AsyncGenerator[list[Event], None]:
    async with aclosing(events):
        async for event in events:
            yield [event]


def flat(batches: AsyncGenerator[list[Event], None]) -> AsyncGenerator[Event, None]:
    """The events of each batch, one at a time."""
    return Closes(_flat(batches), batches.aclose)


async def _flat(batches: AsyncGenerator[list[Event], None]) -> AsyncGenerator[Event, None]:
    async with aclosing(batches):
        async for batch in batches:
            for event in batch:
                yield event
