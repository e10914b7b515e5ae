"""The one generation path: resolve the model, pick a backend, relay its events, meter usage.

Both front doors call `InferenceService.start`; a non-streaming answer is `collect()` over the
same events. Routing fails over to the next backend only before the first event reaches the
client; after that a failure becomes a final `Error` event.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncGenerator, Mapping, Sequence

import msgspec

from modelport.backends.base import Backend, CallContext, Route, TokenCounter
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
from modelport.core.events import (
    Error,
    Event,
    ReasoningDelta,
    Start,
    Stop,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from modelport.core.ids import request_id
from modelport.core.tokens import estimate_text_tokens, estimate_tokens
from modelport.core.types import ChatRequest
from modelport.core.verbosity import apply_verbosity
from modelport.services.billing import Admission, BillingService
from modelport.services.catalog import resolve_model
from modelport.services.keys import Principal

log = logging.getLogger("modelport.inference")
_CONTENT = (TextDelta, ReasoningDelta, ToolCallStart)
usage_log = logging.getLogger("modelport.usage")

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
    counts before it starts; a billed request's prompt was counted for its hold; upstreams
    report at the end), else None."""

    request_id: str
    card: ModelCard
    events: AsyncGenerator[Event, None]
    created: int
    prompt_tokens: int | None = None


class InferenceService:
    """`billing` (None only in tests of routing itself): admission before a backend is
    called, settlement when the request ends; see services/billing.py."""

    def __init__(
        self,
        catalog: Catalog,
        routes: Mapping[str, Sequence[Route]],
        billing: BillingService | None = None,
    ) -> None:
        self._catalog = catalog
        self._routes = routes
        self.billing = billing

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

    async def start(
        self, principal: Principal, request: ChatRequest, *, incremental: bool = True
    ) -> Generation:
        """Resolve, route and start a generation; raise before anything is sent on failure.

        `incremental`: the client reads the answer as a stream (False: only whole)."""
        card = resolve_model(self._catalog, request.model)
        self._check_supported(card, request)
        if request.model != card.id:
            request = msgspec.structs.replace(request, model=card.id)
        request = apply_verbosity(with_default_sampling(card, request))
        backends = self._ordered_backends(card)
        ctx = CallContext(request_id(), card, incremental=incremental)
        admission = None
        if self.billing is not None:
            admission = await self.billing.admit(
                principal, card, request, request_id=ctx.request_id, streamed=incremental
            )
        started = time.monotonic()
        try:
            first, stream = await self._first_event(backends, request, ctx)
        except BaseException as exc:
            if admission is not None and self.billing is not None:
                error = exc if isinstance(exc, ModelportError) else None
                await self.billing.settle(
                    admission,
                    usage=None,
                    stop=None,
                    error=error,
                    cancelled=not isinstance(exc, ModelportError),
                    backend=None,
                    ttft=None,
                )
            raise
        events = self._relay(first, stream, ctx, principal, started, admission)
        known = ctx.usage.prompt_tokens if ctx.usage is not None else None
        if known is None and admission is not None:
            known = admission.prompt_tokens  # as counted for the hold
        return Generation(ctx.request_id, card, events, int(time.time()), known)

    async def _first_event(
        self, backends: list[Backend], request: ChatRequest, ctx: CallContext
    ) -> tuple[Start, AsyncGenerator[Event, None]]:
        """The first backend that starts: its Start and the rest of its stream. Failures of
        the backend's making fall through to the next one; the request's own are raised."""
        last_error: ModelportError | None = None
        for backend in backends:
            stream = backend.stream(request, ctx)
            try:
                first = await anext(stream)
            except _RETRYABLE as exc:
                log.warning("backend %s failed before starting: %s", backend.name, exc.message)
                last_error = exc
                await stream.aclose()
                continue
            except ModelportError:
                await stream.aclose()
                raise
            except StopAsyncIteration:
                raise InternalError(f"backend {backend.name} produced no events") from None
            if not isinstance(first, Start):
                await stream.aclose()
                raise InternalError(f"backend {backend.name} did not start its stream with Start")
            return first, stream
        assert last_error is not None
        raise last_error

    async def output_size(self, card: ModelCard, text: str) -> int:
        """Tokens in generated text: a backend's tokenizer, else an estimate."""
        for backend in self._ordered_backends(card):
            if isinstance(backend, TokenCounter):
                counted = await backend.count_text(text)
                if counted is not None:
                    return counted
        return estimate_text_tokens(text)

    async def prompt_size(self, card: ModelCard, request: ChatRequest) -> tuple[int, bool]:
        """The prompt's tokens and whether the count is exact (a backend's tokenizer) or an
        estimate (the text's length)."""
        for backend in self._ordered_backends(card):
            if isinstance(backend, TokenCounter):
                counted = await backend.count_tokens(request)
                if counted is not None:
                    return counted, True
        return estimate_tokens(request), False

    async def count_tokens(self, principal: Principal, request: ChatRequest) -> int:
        """The prompt tokens `request` would take (Anthropic's count_tokens): counted by the
        first backend that can count them exactly, else estimated from the text's length."""
        card = resolve_model(self._catalog, request.model)
        if request.model != card.id:
            request = msgspec.structs.replace(request, model=card.id)
        counted, _exact = await self.prompt_size(card, request)
        return counted

    async def _relay(
        self,
        first: Start,
        stream: AsyncGenerator[Event, None],
        ctx: CallContext,
        principal: Principal,
        started: float,
        admission: Admission | None,
    ) -> AsyncGenerator[Event, None]:
        """The backend's events, checked and billed. With billing, usage is held back until
        the finish: the request is settled (a durable usage row and ledger entry) before the
        client sees the end of its answer, and the usage it sees carries the cost."""
        usage: Usage | None = None
        stop: Stop | None = None
        error: ModelportError | None = None
        first_token_at: float | None = None
        settled = admission is None
        # What was relayed, for billing a stream cut before the backend reported usage.
        generated: list[str] | None = None if admission is None else []
        try:
            yield first
            async for event in stream:
                if first_token_at is None and isinstance(event, _CONTENT):
                    first_token_at = time.monotonic()
                if generated is not None:
                    if isinstance(event, TextDelta | ReasoningDelta):
                        generated.append(event.text)
                    elif isinstance(event, ToolCallDelta):
                        generated.append(event.arguments)
                if isinstance(event, Usage):
                    usage = event
                    if admission is not None:
                        continue  # settled and sent with the finish
                elif isinstance(event, Stop):
                    stop = event
                    if admission is not None and self.billing is not None:
                        settled = True
                        billed = await self.billing.settle(
                            admission,
                            usage=usage or ctx.usage,
                            stop=stop,
                            error=None,
                            cancelled=False,
                            backend=first.backend,
                            ttft=_since(started, first_token_at),
                            generated="".join(generated or ()),
                        )
                        if billed is not None:
                            yield billed
                elif isinstance(event, Error):
                    error = event.error
                yield event
            if stop is None and error is None:
                # Never leave a stream without a finish: clients such as OpenCode re-send
                # forever when a stream ends without one.
                error = InternalError(f"backend {first.backend} ended its stream without a stop")
                log.error("%s", error.message)
                yield Error(error)
        except ModelportError as exc:
            error = exc
            yield Error(exc)
        except Exception as exc:
            log.exception("backend %s failed mid-stream", first.backend)
            error = InternalError(f"the backend failed: {type(exc).__name__}")
            yield Error(error)
        finally:
            await stream.aclose()
            if not settled and admission is not None and self.billing is not None:
                # Failed, or the client went away (the stream was closed before its end).
                await self.billing.settle(
                    admission,
                    usage=usage or ctx.usage,
                    stop=None,
                    error=error,
                    cancelled=error is None,
                    backend=first.backend,
                    ttft=_since(started, first_token_at),
                    generated="".join(generated or ()),
                )
            self._meter(ctx, principal, first, usage, stop, error, started, first_token_at)

    def _meter(
        self,
        ctx: CallContext,
        principal: Principal,
        start: Start,
        usage: Usage | None,
        stop: Stop | None,
        error: ModelportError | None,
        started: float,
        first_token_at: float | None,
    ) -> None:
        """Record what the request used. Billing and usage rows build on this (issue 7); until
        then it is a debug log line (formatting one per request costs the hot path)."""
        if not usage_log.isEnabledFor(logging.DEBUG):
            return
        final_usage = usage or ctx.usage
        status = "ok" if stop is not None else ("error" if error is not None else "cancelled")
        usage_log.debug(
            "request=%s key=%s model=%s backend=%s status=%s finish=%s prompt=%s completion=%s "
            "latency_ms=%.1f ttft_ms=%s",
            ctx.request_id,
            principal.key_id,
            ctx.card.id,
            start.backend,
            status,
            stop.finish_reason if stop else None,
            final_usage.prompt_tokens if final_usage else None,
            final_usage.completion_tokens if final_usage else None,
            (time.monotonic() - started) * 1000,
            f"{(first_token_at - started) * 1000:.1f}" if first_token_at else None,
        )


def _since(started: float, at: float | None) -> float | None:
    return None if at is None else at - started
