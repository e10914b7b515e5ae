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

from modelport.backends.base import (
    Backend,
    BatchingBackend,
    CallContext,
    Probeable,
    Route,
    TokenCounter,
)
from modelport.core.batches import Closes, batched, flat
from modelport.core.catalog import Catalog, ModelCard, with_default_sampling
from modelport.core.errors import (
    BackendUnavailable,
    CircuitOpen,
    InternalError,
    InvalidRequest,
    MalformedModelOutput,
    ModelportError,
    Overloaded,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
)
from modelport.core.events import Error, Event, Start, Stop
from modelport.core.tokens import estimate_tokens
from modelport.core.trace import current as current_trace
from modelport.core.types import ChatRequest
from modelport.core.verbosity import apply_verbosity
from modelport.services import metrics
from modelport.services.catalog import resolve_model
from modelport.services.circuit import CLOSED, PROBE, REFUSED, Guard

log = logging.getLogger("modelport.inference")

# Failures worth trying the next backend for: the backend, not the request, is at fault.
_RETRYABLE = (UpstreamError, UpstreamTimeout, Overloaded)
# ... and those that count against its circuit: it is broken, not busy (Overloaded) and not
# refusing the request itself (a tool call the model botched is the model's output).
_BREAKING = (UpstreamError, UpstreamTimeout, InternalError)
_NOT_BREAKING = (MalformedModelOutput,)

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
    # With `relay=False`: what the caller reports the stream's outcome to, and closes when
    # the stream is closed (the backend's circuit and in-flight place).
    watch: Watch | None = None

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
        # Each backend's circuit and in-flight count (services/circuit.py).
        self._guards: dict[int, Guard] = {}
        for model_routes in routes.values():
            for route in model_routes:
                self._guards[id(route.backend)] = Guard(
                    route.backend.name,
                    failures=route.circuit_failures,
                    cooldown=route.circuit_cooldown,
                    max_concurrency=route.max_concurrency,
                )
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
            head, batches, backend, watch = await self._first_event(backends, request, ctx, True)
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
                watch,
            )
        first, stream, backend, watch = await self._first_event(backends, request, ctx, False)
        known = first.prompt_tokens if first.prompt_tokens is not None else ctx.prompt_tokens
        counter = self._counter(backend)
        events = Closes(self._relay(first, stream, watch), lambda: _closed_unread(stream, watch))
        return Generation(ctx.request_id, card, events, created, known, counter)

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
    ) -> tuple[Any, AsyncGenerator[Any, None], Backend, Watch]:
        """The first backend that starts: its Start and the rest of its stream, with the
        `Watch` its relay reports to; in batches when `batches`, and then the whole first batch
        (Start first) instead of the Start. Backends whose circuit is open or that are at
        their concurrency cap are skipped; failures of the backend's making fall through to
        the next one; the request's own are raised."""
        last_error: ModelportError | None = None
        skipped: list[Guard] = []
        for backend in backends:
            guard = self._guards.get(id(backend))
            admitted = PROBE if guard is None else guard.admit()
            if admitted == REFUSED:
                assert guard is not None
                skipped.append(guard)
                continue
            watch = Watch(backend.name, guard, admitted == PROBE)
            stream: AsyncGenerator[Any, None] = (
                self._batches(backend, request, ctx) if batches else backend.stream(request, ctx)
            )
            try:
                try:
                    item = await anext(stream)
                    first = item[0] if batches and item else item
                except StopAsyncIteration:
                    raise InternalError(
                        "the model server sent no answer",
                        detail=f"backend {backend.name} produced no events",
                    ) from None
                if not isinstance(first, Start):
                    raise InternalError(
                        f"backend {backend.name} did not start its stream with Start"
                    )
            except BaseException as exc:
                if isinstance(exc, Exception):  # not a cancellation: the backend's outcome
                    watch.failed(exc)
                try:
                    await stream.aclose()
                finally:
                    watch.close()
                if isinstance(exc, _RETRYABLE):
                    last_error = exc
                    continue
                raise
            watch.started = True
            return item, stream, backend, watch
        if last_error is not None:
            raise last_error
        raise _refusal(skipped)

    def unready(self) -> list[str]:
        """The configured models none of whose backends takes requests now (every circuit
        open): what `/readyz` reports."""
        down = []
        for model, routes in self._routes.items():
            guards = [self._guards.get(id(route.backend)) for route in routes]
            if guards and all(guard is not None and guard.open for guard in guards):
                down.append(model)
        return down

    def guards(self) -> list[Guard]:
        return list(self._guards.values())

    def probed(self) -> list[tuple[Guard, Probeable, float]]:
        """The backends with active probes: their guard, the backend and the interval."""
        found: list[tuple[Guard, Probeable, float]] = []
        for routes in self._routes.values():
            for route in routes:
                guard = self._guards.get(id(route.backend))
                backend = route.backend
                if (
                    route.probe_interval is not None
                    and guard is not None
                    and isinstance(backend, Probeable)
                ):
                    found.append((guard, backend, route.probe_interval))
        return found

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
        self, first: Start, stream: AsyncGenerator[Event, None], watch: Watch
    ) -> AsyncGenerator[Event, None]:
        """The backend's events, ending in exactly one Stop or Error: an exception after Start
        becomes a final Error event, and a stream that ends without a finish gets one."""
        finished = False
        try:
            yield first
            async for event in stream:
                if finished:
                    continue  # nothing follows a finish; the backend is let end on its own
                if isinstance(event, Stop):
                    finished = True
                    watch.finished()
                elif isinstance(event, Error):
                    finished = True
                    watch.failed(event.error)
                yield event
            if finished:
                return  # the backend ended by itself: its connection can be reused
            error = unfinished(first.backend)
            watch.failed(error)
            yield Error(error)
        except Exception as exc:
            watch.failed(exc)
            yield Error(stream_failure(exc, first.backend))
        finally:
            try:
                await stream.aclose()
            finally:
                watch.close()


async def _closed_unread(stream: AsyncGenerator[Event, None], watch: Watch) -> None:
    """What `_relay` does on its way out, for a relay closed before its first step."""
    try:
        await stream.aclose()
    finally:
        watch.close()


def unfinished(backend: str) -> InternalError:
    """The error that ends a stream its backend left without a finish: never leave a client
    without one (clients such as OpenCode re-send forever when a stream just stops)."""
    return InternalError(
        "the model server ended its answer without finishing it",
        detail=f"backend {backend} ended its stream without a stop",
    )


def stream_failure(exc: Exception, backend: str) -> ModelportError:
    """What a backend's failure after its Start becomes: its own error, or (a bug) an
    InternalError (`Watch.failed` logged it with the traceback)."""
    if isinstance(exc, ModelportError):
        return exc
    return InternalError(f"the backend failed: {type(exc).__name__}")


async def _prepended(
    head: list[Event], batches: AsyncGenerator[list[Event], None]
) -> AsyncGenerator[list[Event], None]:
    """`head` as a batch of its own, then `batches`."""
    async with aclosing(batches):
        yield head
        async for batch in batches:
            yield batch


def _refusal(skipped: list[Guard]) -> ModelportError:
    """The error for a request no backend was tried for: each was open or full."""
    # Refused by its circuit: open, or half-open with its one probe out.
    waits = [guard.retry_after() for guard in skipped if guard.state != CLOSED]
    if len(waits) == len(skipped):
        names = ", ".join(guard.name for guard in skipped)
        wait = max(1.0, min(waits))
        return CircuitOpen(
            f"The model's servers failed repeatedly and are resting; retry in {wait:.0f} s.",
            retry_after=wait,
            detail=f"circuit open: {names}",
        )
    return Overloaded(
        "The model's servers are at their concurrency limit; retry shortly.",
        retry_after=1.0,
        detail="at max_concurrency: " + ", ".join(guard.name for guard in skipped),
    )


def failure_kind(error: BaseException) -> str:
    """A failure's kind for logs and metrics: the error's code, "bug" for anything else."""
    if isinstance(error, ModelportError):
        return error.code or type(error).__name__
    return "bug"


def _note_failure(
    backend: str, guard: Guard | None, error: BaseException, *, started: bool
) -> None:
    """A backend failure, once: its log line (with the request id the log lines carry),
    its count by kind, and its circuit when it is the backend's fault."""
    kind = failure_kind(error)
    metrics.upstream_errors.labels(backend, kind).inc()
    trace = current_trace()
    if trace is not None and trace.backend is None:
        trace.backend = backend
    fields: dict[str, Any] = {"backend": backend, "error_kind": kind, "started": started}
    if isinstance(error, ModelportError):
        fields["status"] = error.status
        # A refusal the client caused is routine; anything else is for the operator to see.
        routine = error.status < 500 and not isinstance(error, RateLimited)
        log.log(
            logging.INFO if routine else logging.WARNING,
            "backend %s failed %s: %s%s",
            backend,
            "mid-stream" if started else "before answering",
            error.message,
            f" ({error.detail})" if error.detail else "",
            extra={"fields": fields},
        )
    else:
        log.error(
            "backend %s failed %s",
            backend,
            "mid-stream" if started else "before answering",
            exc_info=error,
            extra={"fields": fields},
        )
    if guard is not None and isinstance(error, _BREAKING) and not isinstance(error, _NOT_BREAKING):
        guard.failed()
    elif guard is not None and not isinstance(error, Overloaded):
        guard.succeeded()  # it answered: the request itself was refused


class Watch:
    """One call to a backend: its outcome, told once to the backend's circuit (and, for a
    failure, logged and counted), and its in-flight place, given back once. Whoever relays
    the backend's stream reports what it sees (`finished`, `failed`) and calls `close` when
    the stream is closed, however it ends: a report per outcome, not a generator step per
    batch."""

    __slots__ = ("_guard", "_probe", "backend", "judged", "started")

    def __init__(self, backend: str, guard: Guard | None, probe: bool) -> None:
        self.backend = backend
        self._guard = guard
        self._probe = probe
        self.started = False
        self.judged = False

    def finished(self) -> None:
        """The backend finished its answer."""
        if not self.judged:
            self.judged = True
            if self._guard is not None:
                self._guard.succeeded()

    def failed(self, error: BaseException) -> None:
        """The backend failed (an exception, an Error event, an end without a finish)."""
        if not self.judged:
            self.judged = True
            _note_failure(self.backend, self._guard, error, started=self.started)

    def close(self) -> None:
        """The stream is closed: the in-flight place goes back (a probe whose client left
        before any outcome lets the next request probe)."""
        guard, self._guard = self._guard, None
        if guard is not None:
            guard.release(self._probe)
