"""Batches and flat streams close what they read on every path, closed unread included."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import pytest

from modelport.core.batches import Closes, batched, flat
from modelport.core.events import Event, TextDelta


class Source:
    """Events that say whether they were closed, read or unread."""

    def __init__(self) -> None:
        self.closed = False

    def events(self) -> AsyncGenerator[Event, None]:
        async def closed_unread() -> None:
            self.closed = True

        return Closes(self._events(), closed_unread)

    async def _events(self) -> AsyncGenerator[Event, None]:
        try:
            for i in range(3):
                yield TextDelta(0, str(i))
        finally:
            self.closed = True


@pytest.mark.asyncio
@pytest.mark.parametrize("steps", [0, 1])
async def test_closing_a_flat_or_batched_stream_closes_its_source_read_or_not(steps: int) -> None:
    for wrap in (batched, lambda events: flat(batched(events))):
        source = Source()
        stream = wrap(source.events())
        for _ in range(steps):
            await anext(stream)
        await stream.aclose()
        assert source.closed
        await stream.aclose()  # a second close is harmless


@pytest.mark.asyncio
async def test_closes_runs_its_cleanup_once_and_only_when_closed_unread() -> None:
    cleanups: list[str] = []

    async def cleanup() -> None:
        cleanups.append("cleaned")

    async def numbers() -> AsyncGenerator[int, None]:
        yield 1
        yield 2

    unread = Closes(numbers(), cleanup)
    await unread.aclose()
    await unread.aclose()
    assert cleanups == ["cleaned"]
    read = Closes(numbers(), cleanup)
    assert [n async for n in read] == [1, 2]
    await read.aclose()
    assert cleanups == ["cleaned"]  # its own body closed what it had to
