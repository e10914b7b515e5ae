"""Event streams in batches: a list of events per step instead of one.

An upstream's read holds many events; handed on one at a time, each costs a generator step at
every stage and a wake-up of the writer behind them. Handed on as a list, a read costs one
step per stage and leaves in one write. `batched` turns a stream of single events into
batches of one (for backends that produce events one by one, such as the local engine);
`flat` turns batches back into single events for consumers that want them (`collect`). Both
close the stream they read on every path, so the work behind it stops at once.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

from modelport.core.events import Event


async def batched(events: AsyncGenerator[Event, None]) -> AsyncGenerator[list[Event], None]:
    """Each event as a batch of one."""
    async with aclosing(events):
        async for event in events:
            yield [event]


async def flat(batches: AsyncGenerator[list[Event], None]) -> AsyncGenerator[Event, None]:
    """The events of each batch, one at a time."""
    async with aclosing(batches):
        async for batch in batches:
            for event in batch:
                yield event
