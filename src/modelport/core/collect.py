"""`collect(events)`: fold a canonical event stream into one finished completion.

A non-streaming response is always `collect` over the same stream a streaming response encodes,
so there is exactly one generation path.
"""

from __future__ import annotations

from collections.abc import AsyncIterable

import msgspec

from modelport.core.events import (
    Error,
    Event,
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
    collector = Collector()
    add = collector.add
    async for event in events:
        add(event)
    return collector.completion()


async def collect_batches(batches: AsyncIterable[list[Event]]) -> Completion:
    """`collect` over a stream in batches (core/batches.py)."""
    collector = Collector()
    add = collector.add
    async for batch in batches:
        for event in batch:
            add(event)
    return collector.completion()


class Collector:
    """The fold behind `collect`: `add` each event in order, then `completion()`."""

    __slots__ = (
        "_backend",
        "_calls",
        "_logprobs",
        "_model",
        "_reasoning",
        "_stop",
        "_text",
        "_usage",
    )

    def __init__(self) -> None:
        self._model = self._backend = ""
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._calls: dict[int, list[str]] = {}  # block index -> [id, name, arguments...]
        self._logprobs: list[TokenLogprob] | None = None
        self._usage = Usage(0, 0)
        self._stop: Stop | None = None

    def add(self, event: object) -> None:
        """Fold in one event; an `Error` event is raised as its exception."""
        if isinstance(event, TextDelta):
            self._text.append(event.text)
        elif isinstance(event, ReasoningDelta):
            self._reasoning.append(event.text)
        elif isinstance(event, ToolCallDelta):
            self._calls[event.index].append(event.arguments)
        elif isinstance(event, ToolCallStart):
            self._calls[event.index] = [event.id, event.name]
        elif isinstance(event, Logprobs):
            self._logprobs = (self._logprobs or []) + list(event.entries)
        elif isinstance(event, Usage):
            self._usage = event
        elif isinstance(event, Start):
            self._model, self._backend = event.model, event.backend
        elif isinstance(event, Stop):
            self._stop = event
        elif isinstance(event, Error):
            raise event.error

    def completion(self) -> Completion:
        stop = self._stop
        if stop is None:
            stop = Stop("error", "stream ended without a stop")
        tool_calls = tuple(
            ToolCallPart(id=parts[0], name=parts[1], arguments="".join(parts[2:]))
            for _, parts in sorted(self._calls.items())
        )
        text, reasoning, logprobs = self._text, self._reasoning, self._logprobs
        return Completion(
            model=self._model,
            backend=self._backend,
            text="".join(text) if text else None,
            reasoning="".join(reasoning) if reasoning else None,
            tool_calls=tool_calls,
            logprobs=tuple(logprobs) if logprobs is not None else None,
            usage=self._usage,
            finish_reason=stop.finish_reason,
            native_finish_reason=stop.native_finish_reason,
            stop_sequence=stop.stop_sequence,
        )
