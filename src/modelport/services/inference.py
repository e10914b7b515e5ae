"""The one generation path: resolve the model, pick a backend, relay its events.

The metering stage (services/metering.py) calls `prepare` and `start` and wraps the events;
inference knows nothing of money. A non-streaming answer is `collect()` over the same events.
Routing fails over to the next backend only before the first event reaches the client; after
that a failure becomes a final `Error` event.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from typing import Any

import msgspec

from modelport.backends.base import Backend, BatchingBackend, CallContext, Route, TokenCounter
from modelport.core.batches import batched, flat
from modelport.core.catalog import Catalog, ModelCard, with_default_sampling
from modelport.core.errors import (
    BackendUnavailable,
    InternalError,
    InvalidRequest,
    ModelportError,
    Overloaded,
    UpstreamError,
    UpstreamTimeout,
)
from modelport.core.events import Error, Event, Start, Stop
from modelport.core.tokens import estimate_tokens
from modelport.core.types import ChatRequest
from modelport.core.verbosity import apply_verbosity
from modelport.services.catalog import resolve_model

log = logging.getLogger("modelport.inference")

# Failures worth trying the next backend for: the backend, not the request, is at fault.
_RETRYABLE = (UpstreamError, UpstreamTimeout, Overloaded)

NOT_CONFIGURED = (
    "The model '{id}' is in the catalog but has no backend configured on this server. "
    'An operator can serve it from a local GGUF file (kind = "llamacpp") or an upstream '
    'server such as vLLM, SGLang, Ollama or llama.cpp\'s server (kind = "openai_compat") '
    "with a [[models.backends]] entry in the config file named by MODELPORT_CONFIG; "
    "see docs/backends.md."
)


class Generation(msgspec.Struct, frozen=True):
    """A started generation: its id, the model card, and the event stream (Start first).
    `prompt_tokens`: the prompt's size as far as it was known at the start (the local engine
    counts before it starts; the metering stage counted it at admission), else None.
    `counter`: the backend that serves it, when it can count tokens (for usage the backend
    did not report)."""

    request_id: str
    card: ModelCard
    events: AsyncGenerator[Event, None]
    created: int
    prompt_tokens: int | None = None
    counter: TokenCounter | None = None
    # With `start(..., relay=False)`: the Start event, and `batches` is the backend's own
    # stream after it, a list of events per step (the caller takes over the relay's
    # guarantees); `events` is the same events one at a time.
    first: Start | None = None
    batches: AsyncGenerator[list[Event], None] | None = None
    # ... and the events that came in one batch with `first` (a whole answer comes as one),
    # which `batches` does not repeat.
    head: list[Event] | None = None

    def in_batches(self) -> AsyncGenerator[list[Event], None]:
        """The events a batch per step (each consumer reads either this or `events`)."""
        if self.batches is None:
            return batched(self.events)
        return _prepended(self.head, self.batches) if self.head else self.batches


class InferenceService:
    """Routing and relaying; knows nothing of money (services/metering.py wraps it)."""

    def __init__(self, catalog: Catalog, routes: Mapping[str, Sequence[Route]]) -> None:
        self._catalog = catalog
        self._routes = routes
        # Whether each backend can count tokens (a runtime Protocol check costs microseconds).
        self._counters: dict[int, TokenCounter | None] = {}
        self._batching: dict[int, BatchingBackend | None] = {}  # likewise

    def _counter(self, backend: Backend) -> TokenCounter | None:
        known = self._counters.get(id(backend), False)
        if known is False:
            known = self._counters[id(backend)] = (
                backend if isinstance(backend, TokenCounter) else None
            )
        return known  # type: ignore[return-value]

    def _ordered_backends(self, card: ModelCard) -> list[Backend]:
        """Lower priority values first; within one priority, a weighted random order."""
        routes = self._routes.get(card.id, ())
        if not routes:
            raise BackendUnavailable(NOT_CONFIGURED.format(id=card.id), param="model")
        if len(routes) == 1:
            return [routes[0].backend]
        keyed = [
            (route.priority, -(random.random() ** (1.0 / max(route.weight, 1))), index)
            for index, route in enumerate(routes)
        ]
        return [routes[index].backend for _, _, index in sorted(keyed)]

    def _check_supported(self, card: ModelCard, request: ChatRequest) -> None:
        if (
            request.tools
            and request.tool_choice.mode != "none"
            and "tools" not in card.supported_parameters
        ):
            raise InvalidRequest(f"The model '{card.id}' does not support tools.", param="tools")

    def prepare(self, request: ChatRequest) -> tuple[ModelCard, ChatRequest]:
        """The card that serves `request`, and the request as it will run: the catalog id,
        the card's per-mode sampling defaults, verbosity as an instruction. Raises before
        anything is spent: unknown model (404), no backend (503), an unsupported feature."""
        card = resolve_model(self._catalog, request.model)
        self._check_supported(card, request)
        self._ordered_backends(card)  # BackendUnavailable now, not after admission
        if request.model != card.id:
            request = msgspec.structs.replace(request, model=card.id)
        return card, apply_verbosity(with_default_sampling(card, request))

    async def start(
        self, request: ChatRequest, ctx: CallContext, *, relay: bool = True
    ) -> Generation:
        """Route and start a prepared request; raise before anything is sent on failure.

        `relay=False`: the generation's `batches` are the backend's stream after its Start
        (in `first`), in batches (`BatchingBackend`), without the relay that turns failures
        into a final Error event and ends a stream without a finish with one: the metering
        stage does that itself."""
        card = ctx.card
        backends = self._ordered_backends(card)
        created = int(time.time())
        if not relay:
            head, batches, backend = await self._first_event(backends, request, ctx, True)
            first = head[0]
            known = first.prompt_tokens if first.prompt_tokens is not None else ctx.prompt_tokens
            return Generation(
                ctx.request_id,
                card,
                flat(_prepended(head[1:], batches) if len(head) > 1 else batches),
                created,
                known,
                self._counter(backend),
                first,
                batches,
                head[1:],
            )
        first, stream, backend = await self._first_event(backends, request, ctx, False)
        known = first.prompt_tokens if first.prompt_tokens is not None else ctx.prompt_tokens
        counter = self._counter(backend)
        return Generation(ctx.request_id, card, self._relay(first, stream), created, known, counter)

    def _batches(
        self, backend: Backend, request: ChatRequest, ctx: CallContext
    ) -> AsyncGenerator[list[Event], None]:
        batching = self._batching.get(id(backend), False)
        if batching is False:
            batching = self._batching[id(backend)] = (
                backend if isinstance(backend, BatchingBackend) else None
            )
        if batching is None:
            return batched(backend.stream(request, ctx))
        return batching.stream_batches(request, ctx)  # type: ignore[union-attr]

    async def _first_event(
        self, backends: list[Backend], request: ChatRequest, ctx: CallContext, batches: bool
    ) -> tuple[Any, AsyncGenerator[Any, None], Backend]:
        """The first backend that starts: its Start and the rest of its stream; in batches
        when `batches`, and then the whole first batch (Start first) instead of the Start.
        Failures of the backend's making fall through to the next one; the request's own are
        raised."""
        last_error: ModelportError | None = None
        for backend in backends:
            stream: AsyncGenerator[Any, None] = (
                self._batches(backend, request, ctx) if batches else backend.stream(request, ctx)
            )
            try:
                item = await anext(stream)
                first = item[0] if batches and item else item
            except _RETRYABLE as exc:
                log.warning("backend %s failed before starting: %s", backend.name, exc.message)
                last_error = exc
                await stream.aclose()
                continue
            except ModelportError:
                await stream.aclose()
                raise
            except StopAsyncIteration:
                raise InternalError(
                    "the model server sent no answer",
                    detail=f"backend {backend.name} produced no events",
                ) from None
            except BaseException:
                await stream.aclose()
                raise
            if not isinstance(first, Start):
                await stream.aclose()
                raise InternalError(f"backend {backend.name} did not start its stream with Start")
            return item, stream, backend
        assert last_error is not None
        raise last_error

    async def prompt_size(
        self,
        card: ModelCard,
        request: ChatRequest,
        *,
        local_only: bool = True,
        size: int | None = None,
    ) -> tuple[int, bool]:
        """The prompt's tokens and whether the count is exact (a backend's tokenizer) or an
        estimate (the text's length). `local_only`: no network round trip (the hot path);
        `size`: `core.tokens.prompt_bytes(request)`, when the caller has it already."""
        for backend in self._ordered_backends(card):
            counter = self._counter(backend)
            if counter is not None:
                counted = await counter.count_tokens(request, local_only=local_only)
                if counted is not None:
                    return counted, True
        return estimate_tokens(request, size), False

    async def count_tokens(self, request: ChatRequest) -> int:
        """The prompt tokens `request` would take (Anthropic's count_tokens): counted by the
        first backend that can count them exactly, else estimated from the text's length."""
        card = resolve_model(self._catalog, request.model)
        if request.model != card.id:
            request = msgspec.structs.replace(request, model=card.id)
        counted, _exact = await self.prompt_size(card, request, local_only=False)
        return counted

    async def _relay(
        self, first: Start, stream: AsyncGenerator[Event, None]
    ) -> AsyncGenerator[Event, None]:
        """The backend's events, ending in exactly one Stop or Error: an exception after Start
        becomes a final Error event, and a stream that ends without a finish gets one."""
        finished = False
        try:
            yield first
            async for event in stream:
                if finished:
                    continue  # nothing follows a finish; the backend is let end on its own
                if isinstance(event, Stop | Error):
                    finished = True
                yield event
            if finished:
                return  # the backend ended by itself: its connection can be reused
            yield Error(unfinished(first.backend))
        except Exception as exc:
            yield Error(stream_failure(exc, first.backend))
        finally:
            await stream.aclose()


def unfinished(backend: str) -> InternalError:
    """The error that ends a stream its backend left without a finish: never leave a client
    without one (clients such as OpenCode re-send forever when a stream just stops)."""
    error = InternalError(
        "the model server ended its answer without finishing it",
        detail=f"backend {backend} ended its stream without a stop",
    )
    log.error("%s", error.detail)
    return error


def stream_failure(exc: Exception, backend: str) -> ModelportError:
    """What a backend's failure after its Start becomes: its own error, or (a bug) an
    InternalError, logged with the traceback."""
    if isinstance(exc, ModelportError):
        return exc
    log.exception("backend %s failed mid-stream", backend)
    return InternalError(f"the backend failed: {type(exc).__name__}")


async def _prepended(
    head: list[Event], batches: AsyncGenerator[list[Event], None]
) -> AsyncGenerator[list[Event], None]:
    """`head` as a batch of its own, then `batches`."""
    async with aclosing(batches):
        yield head
        async for batch in batches:
            yield batch
