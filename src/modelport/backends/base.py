"""The Backend protocol: one required method; optional abilities are separate protocols."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol, runtime_checkable

import msgspec

from modelport.core.catalog import ModelCard
from modelport.core.events import Event
from modelport.core.types import ChatRequest


class CallContext:
    """Per-call context a backend receives with the request: read-only facts about the call.
    Nothing flows back through it: usage travels as `Usage` events.

    `incremental` says whether the client reads the answer as it is generated (a stream) or
    only whole; a backend may use it to choose the cheaper way to talk to its engine. The
    events it emits are the same either way.

    `prompt_tokens` is the prompt's size as the metering stage counted it at admission (exact
    when `prompt_exact`, else an estimate), or None when it was not counted: a backend that
    needs the size (to fit max_tokens into the context) uses it instead of counting again.

    `trace_id` is the HTTP request's id (its X-Request-Id), which an upstream backend sends on
    as its own X-Request-Id.
    """

    __slots__ = ("card", "incremental", "prompt_exact", "prompt_tokens", "request_id", "trace_id")

    def __init__(
        self,
        request_id: str,
        card: ModelCard,
        *,
        incremental: bool = True,
        prompt_tokens: int | None = None,
        prompt_exact: bool = False,
        trace_id: str | None = None,
    ) -> None:
        self.request_id = request_id
        self.trace_id = trace_id
        self.card = card
        self.incremental = incremental
        self.prompt_tokens = prompt_tokens
        self.prompt_exact = prompt_exact


class Backend(Protocol):
    """Turns a canonical request into a canonical event stream.

    `stream` raises only `core.errors` types. A failure before `Start` lets routing try another
    backend; the inference service turns a failure after `Start` into a final `Error` event.
    Closing the iterator early cancels the work.
    """

    name: str

    def stream(self, request: ChatRequest, ctx: CallContext) -> AsyncGenerator[Event, None]: ...


@runtime_checkable
class BatchingBackend(Protocol):
    """A backend whose events arrive in batches (one read of an upstream's body holds many)
    can hand them on as lists: the same events as `stream`, in the same order, `Start` first
    in the first list, no list empty. The metering stage and the doors then pass a whole
    batch per step, and the client gets it in one write. `core.batches.batched` turns any
    backend's `stream` into this form."""

    def stream_batches(
        self, request: ChatRequest, ctx: CallContext
    ) -> AsyncGenerator[list[Event], None]: ...


@runtime_checkable
class TokenCounter(Protocol):
    """A backend that can count tokens as its engine does, without generating: a request's
    prompt (Anthropic's count_tokens, the hold at admission, billing an answer whose upstream
    reported no usage) and generated text (billing such an answer, capping output at the
    request's limit). Each returns an exact count, or None when this backend cannot count
    exactly (the caller then estimates, and says so).

    `local_only`: count only if it costs no network round trip (an in-process tokenizer); a
    backend whose exact count needs its engine's tokenize endpoint returns None then. The hot
    path asks with `local_only=True`; settlement may ask the engine.
    """

    async def count_tokens(
        self, request: ChatRequest, *, local_only: bool = False
    ) -> int | None: ...

    async def count_text(self, text: str, *, local_only: bool = False) -> int | None: ...


@runtime_checkable
class Closeable(Protocol):
    async def aclose(self) -> None: ...


@runtime_checkable
class Startable(Protocol):
    async def start(self) -> None: ...


@runtime_checkable
class Probeable(Protocol):
    """A backend that can say whether its server is up without generating (an active probe:
    raises a `core.errors` type when it is not)."""

    async def probe(self) -> None: ...


class Route(msgspec.Struct, frozen=True):
    """A backend serving one model, with its routing priority (lower first) and weight, its
    circuit breaking and concurrency cap, and how often it is probed (None: never)."""

    backend: Backend
    priority: int = 0
    weight: int = 1
    circuit_failures: int = 5
    circuit_cooldown: float = 30.0
    max_concurrency: int | None = None
    probe_interval: float | None = None
