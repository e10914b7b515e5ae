"""Checks that an event stream keeps the invariants in `core.events`.

Used by the test suite for every backend (and usable as a debug assertion); pure.
"""

from __future__ import annotations

from collections.abc import Iterable

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


class StreamInvariantError(AssertionError):
    pass


def check_stream(events: Iterable[Event]) -> None:
    """Raise `StreamInvariantError` naming the first event that breaks an invariant."""
    events = list(events)
    if not events:
        raise StreamInvariantError("empty stream")
    if not isinstance(events[0], Start):
        raise StreamInvariantError(f"first event must be Start, got {events[0]!r}")
    if not isinstance(events[-1], Stop | Error):
        raise StreamInvariantError(f"last event must be Stop or Error, got {events[-1]!r}")
    kinds: dict[int, str] = {}
    current = -1
    last_usage: Usage | None = None
    for position, event in enumerate(events):
        where = f"event {position} ({event!r})"
        if position > 0 and isinstance(event, Start):
            raise StreamInvariantError(f"{where}: a second Start")
        if position < len(events) - 1 and isinstance(event, Stop | Error):
            raise StreamInvariantError(f"{where}: Stop/Error before the end")
        if isinstance(event, Usage):
            if last_usage is not None and (
                event.prompt_tokens < last_usage.prompt_tokens
                or event.completion_tokens < last_usage.completion_tokens
            ):
                raise StreamInvariantError(f"{where}: a running Usage went down")
            last_usage = event
            if min(event.prompt_tokens, event.completion_tokens, event.reasoning_tokens) < 0:
                raise StreamInvariantError(f"{where}: negative token count")
            if event.reasoning_tokens > event.completion_tokens:
                raise StreamInvariantError(f"{where}: reasoning tokens exceed completion tokens")
        if isinstance(event, TextDelta | ReasoningDelta | ToolCallStart | ToolCallDelta):
            kind = (
                "tool" if isinstance(event, ToolCallStart | ToolCallDelta) else type(event).__name__
            )
            if isinstance(event, ToolCallDelta) and event.index not in kinds:
                raise StreamInvariantError(f"{where}: arguments before ToolCallStart")
            if isinstance(event, ToolCallStart) and event.index in kinds:
                raise StreamInvariantError(f"{where}: tool call block opened twice")
            if event.index in kinds:
                if kinds[event.index] != kind:
                    raise StreamInvariantError(f"{where}: block {event.index} changed kind")
                if event.index != current:
                    raise StreamInvariantError(f"{where}: delta for closed block {event.index}")
            else:
                if event.index != current + 1:
                    raise StreamInvariantError(
                        f"{where}: block {event.index} opened, expected {current + 1}"
                    )
                if isinstance(event, ToolCallDelta):
                    raise StreamInvariantError(f"{where}: arguments before ToolCallStart")
                kinds[event.index] = kind
                current = event.index
        if isinstance(event, Logprobs) and event.index not in kinds:
            raise StreamInvariantError(f"{where}: logprobs for a block that never opened")
