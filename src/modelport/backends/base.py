"""The Backend protocol: one required method; optional abilities are separate protocols."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol, runtime_checkable

import msgspec

from modelport.core.catalog import ModelCard
from modelport.core.events import Event, Usage
from modelport.core.types import ChatRequest


class CallContext:
    """Per-call context a backend receives with the request.

    `usage` is the backend's running count, kept current while it generates, so that a caller
    that stops iterating early (a client disconnect) still learns what was used.

    `incremental` says whether the client reads the answer as it is generated (a stream) or
    only whole; a backend may use it to choose the cheaper way to talk to its engine. The
    events it emits are the same either way.
    """

    __slots__ = ("card", "incremental", "request_id", "usage")

    def __init__(self, request_id: str, card: ModelCard, *, incremental: bool = True) -> None:
        self.request_id = request_id
        self.card = card
        self.incremental = incremental
        self.usage: Usage | None = None


class Backend(Protocol):
    """Turns a canonical request into a canonical event stream.

    `stream` raises only `core.errors` types. A failure before `Start` lets routing try another
    backend; the inference service turns a failure after `Start` into a final `Error` event.
    Closing the iterator early cancels the work.
    """

    name: str

    def stream(self, request: ChatRequest, ctx: CallContext) -> AsyncGenerator[Event, None]: ...


@runtime_checkable
class TokenCounter(Protocol):
    """A backend that can count a request's prompt tokens without generating (Anthropic's
    count_tokens): exactly where it tokenizes as its engine does, else None."""

    async def count_tokens(self, request: ChatRequest) -> int | None: ...

    async def count_text(self, text: str) -> int | None:
        """Tokens in generated text (billing a stream cut before its usage arrived)."""
        ...


@runtime_checkable
class Closeable(Protocol):
    async def aclose(self) -> None: ...


@runtime_checkable
class Startable(Protocol):
    async def start(self) -> None: ...


class Route(msgspec.Struct, frozen=True):
    """A backend serving one model, with its routing priority (lower first) and weight."""

    backend: Backend
    priority: int = 0
    weight: int = 1
