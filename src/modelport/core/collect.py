"""`collect(events)`: fold a canonical event stream into one finished completion.

A non-streaming response is always `collect` over the same stream a streaming response encodes,
so there is exactly one generation path.
"""

from __future__ import annotations

from collections.abc import AsyncIterable

import msgspec

from modelport.core.events import (
    Error,
    Logprobs,
    ReasoningDelta,
    Start,
    Stop,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from modelport.core.types import FinishReason, TokenLogprob, ToolCallPart


class Completion(msgspec.Struct, frozen=True):
    model: str
    backend: str
    text: str | None
    reasoning: str | None
    tool_calls: tuple[ToolCallPart, ...]
    logprobs: tuple[TokenLogprob, ...] | None
    usage: Usage
    finish_reason: FinishReason
    native_finish_reason: str | None
    stop_sequence: str | None = None  # the client's stop string that ended the answer


async def collect(events: AsyncIterable[object]) -> Completion:
    """Fold `events` into a `Completion`. An `Error` event is raised as its exception."""
    model = backend = ""
    text: list[str] = []
    reasoning: list[str] = []
    calls: dict[int, list[str]] = {}  # block index -> [id, name, arguments...]
    logprobs: list[TokenLogprob] | None = None
    usage = Usage(0, 0)
    stop: Stop | None = None
    async for event in events:
        if isinstance(event, TextDelta):
            text.append(event.text)
        elif isinstance(event, ReasoningDelta):
            reasoning.append(event.text)
        elif isinstance(event, ToolCallDelta):
            calls[event.index].append(event.arguments)
        elif isinstance(event, ToolCallStart):
            calls[event.index] = [event.id, event.name]
        elif isinstance(event, Logprobs):
            logprobs = (logprobs or []) + list(event.entries)
        elif isinstance(event, Usage):
            usage = event
        elif isinstance(event, Start):
            model, backend = event.model, event.backend
        elif isinstance(event, Stop):
            stop = event
        elif isinstance(event, Error):
            raise event.error
    if stop is None:
        stop = Stop("error", "stream ended without a stop")
    tool_calls = tuple(
        ToolCallPart(id=parts[0], name=parts[1], arguments="".join(parts[2:]))
        for _, parts in sorted(calls.items())
    )
    return Completion(
        model=model,
        backend=backend,
        text="".join(text) if text else None,
        reasoning="".join(reasoning) if reasoning else None,
        tool_calls=tool_calls,
        logprobs=tuple(logprobs) if logprobs is not None else None,
        usage=usage,
        finish_reason=stop.finish_reason,
        native_finish_reason=stop.native_finish_reason,
        stop_sequence=stop.stop_sequence,
    )
