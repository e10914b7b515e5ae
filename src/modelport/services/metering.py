"""Metering: the stage between the front doors and inference that makes every request pay
exactly for what it used, and never more than its balance allows. docs/billing.md states the
policy for users.

    door ─▶ Metering.start(principal, request)
              admission: the key may use the model (403), rate limits (429), the prompt counted
              once, the effective output limit (max_tokens clamped to the context left and the
              model's limit), the worst case held in memory (credit.CreditBook; 402)
            ─▶ InferenceService.start ─▶ events ─▶ Metering._metered ─▶ door
              usage read from the events only; output cut at the admitted limit; reported
              usage checked (core/usage_check) and counted by the serving backend's tokenizer
              where it is missing or implausible (an estimate, marked, as the last resort);
              the cost charged (capped by the hold for prepaid accounts), the usage row and
              ledger entry written behind the response (store.record); one Usage, with the
              cost, right before the final event.

Settlement happens on every path, once: a finished answer, an error event (before the error
reaches the client: a non-streamed request that fails is settled before its error response),
a failure before the first event, and a client that went away (the stream is closed: the
generator's `finally`, or a background task when the relayed text must be counted first).

Inference knows nothing of money; metering knows nothing of backends beyond the counter a
generation offers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from modelport.backends.base import CallContext, TokenCounter
from modelport.core.batches import Closes, flat
from modelport.core.catalog import ModelCard
from modelport.core.errors import ContextLengthExceeded, ModelportError, PermissionDenied
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
from modelport.core.ids import request_id as new_request_id
from modelport.core.tokens import (
    ESTIMATE_PADDING,
    ESTIMATE_SLACK,
    estimate_text_tokens,
    prompt_bytes,
    prompt_floor,
)
from modelport.core.trace import Trace
from modelport.core.trace import current as current_trace
from modelport.core.types import ChatRequest
from modelport.core.usage_check import Checked, check_usage, lower_bound
from modelport.services import metrics
from modelport.services.credit import CreditBook, Hold
from modelport.services.inference import (
    Generation,
    InferenceService,
    stream_failure,
    unfinished,
)
from modelport.services.keys import Principal
from modelport.services.limits import RateLimiter
from modelport.store.base import BillingStore, Charge, UsageRecord

log = logging.getLogger("modelport.metering")
usage_log = logging.getLogger("modelport.usage")

_CONTENT = (TextDelta, ReasoningDelta, ToolCallStart)
Status = Literal["ok", "error", "cancelled"]


class Admission(msgspec.Struct, kw_only=True):
    """One admitted request: who pays, what was held, and what it may use."""

    request_id: str
    principal: Principal
    card: ModelCard
    request: ChatRequest
    prompt_tokens: int  # as counted at admission
    prompt_exact: bool
    prompt_bytes: int
    limit: int  # the most output tokens it may produce (relayed, billed)
    hold: Hold
    postpaid: bool
    streamed: bool
    started: float  # time.monotonic()
    created_at: datetime
    trace: Trace | None  # the HTTP request's (core/trace.py), filled in at settlement


class _Meter:
    """What the stage saw of one stream."""

    __slots__ = (
        "backend",
        "completion_bytes",
        "cut",
        "error",
        "first_token_at",
        "known",
        "known_at",
        "known_pieces",
        "reasoning",
        "settled",
        "stop",
        "text",
        "usage",
    )

    def __init__(self) -> None:
        self.usage: Usage | None = None  # the backend's latest (running) usage
        self.backend: str | None = None
        self.stop: Stop | None = None
        self.error: ModelportError | None = None
        self.first_token_at: float | None = None
        self.text: list[str] = []  # everything relayed that counts as output
        self.reasoning: list[str] = []
        self.completion_bytes = 0
        self.known = 0  # output tokens known exactly (a running usage, or our own count)...
        self.known_at = 0  # ...as of this many relayed bytes
        self.known_pieces = 0  # ...and this many relayed pieces (`text`)
        self.cut = False
        self.settled = False


class Metering:
    def __init__(
        self,
        inference: InferenceService,
        store: BillingStore,
        book: CreditBook,
        limiter: RateLimiter,
    ) -> None:
        self._inference = inference
        self._store = store
        self._book = book
        self._limiter = limiter
        self._background: set[asyncio.Future[Any]] = set()
        # Requests admitted and not yet settled, per model (the admin's models page).
        self.in_flight: dict[str, int] = {}

    @property
    def credit(self) -> CreditBook:
        return self._book

    # ------------------------------------------------------------------ admission

    async def start(
        self, principal: Principal, request: ChatRequest, *, incremental: bool = True
    ) -> Generation:
        """Admit, hold, and start a generation whose events are metered. Raises before
        anything is sent on failure (and then nothing is charged)."""
        trace = current_trace()
        if trace is not None:
            trace.account_id = principal.account_id
            trace.key_id = principal.key_id
        card, request = self._inference.prepare(request)
        if trace is not None:
            trace.model = card.id
        allowed = principal.limits.allowed_models
        if allowed is not None and card.id not in allowed:
            raise PermissionDenied(
                f"This API key may not use the model '{card.id}'; it may use: "
                f"{', '.join(allowed) or 'no models'}.",
                param="model",
            )
        limits = principal.limits
        await self._limiter.admit(principal.key_id, rpm=limits.rpm, tpm=limits.tpm)
        admission = await self._admit(principal, card, request, incremental, trace)
        self.in_flight[card.id] = self.in_flight.get(card.id, 0) + 1
        ctx = CallContext(
            admission.request_id,
            card,
            incremental=incremental,
            prompt_tokens=admission.prompt_tokens,
            prompt_exact=admission.prompt_exact,
            trace_id=trace.request_id if trace is not None else None,
        )
        try:
            generation = await self._inference.start(admission.request, ctx, relay=False)
        except BaseException as exc:
            error = exc if isinstance(exc, ModelportError) else None
            meter = _Meter()
            meter.error = error
            # Nothing was generated: no charge, one usage row.
            status: Status = "error" if error else "cancelled"
            await self._settle(admission, meter, status=status, free=True)
            raise
        batches = Closes(
            self._metered(admission, generation), lambda: self._abandoned(admission, generation)
        )
        return msgspec.structs.replace(
            generation,
            events=flat(batches),
            batches=batches,
            head=None,
            prompt_tokens=generation.prompt_tokens or admission.prompt_tokens,
        )

    async def _admit(
        self,
        principal: Principal,
        card: ModelCard,
        request: ChatRequest,
        incremental: bool,
        trace: Trace | None,
    ) -> Admission:
        size = prompt_bytes(request)
        prompt, exact = await self._inference.prompt_size(card, request, size=size)
        _check_fits(card, request, prompt, exact, size)
        limit = _output_limit(card, request, prompt, exact)
        if request.max_output_tokens is not None and request.max_output_tokens > limit:
            request = msgspec.structs.replace(request, max_output_tokens=limit)
        postpaid = principal.role == "admin"
        amount = 0
        if not postpaid and (card.pricing.input_nano or card.pricing.output_nano):
            held_prompt = prompt if exact else int(prompt * ESTIMATE_PADDING) + ESTIMATE_SLACK
            amount = card.pricing.cost_nano(held_prompt, limit)
        hold = await self._book.hold(principal.account_id, principal.key_id, amount)
        # The generation's id: the HTTP request's own when the server made it (one id for
        # the response header, the response's id and the usage row), else a new one (a
        # client may send one X-Request-Id with several requests).
        if trace is not None and not trace.supplied and trace.generation_id is None:
            request_id = trace.request_id
        else:
            request_id = new_request_id()
        if trace is not None:
            trace.generation_id = request_id
        return Admission(
            request_id=request_id,
            principal=principal,
            card=card,
            request=request,
            prompt_tokens=prompt,
            prompt_exact=exact,
            prompt_bytes=size,
            limit=limit,
            hold=hold,
            postpaid=postpaid,
            streamed=incremental,
            started=time.monotonic(),
            created_at=datetime.now(UTC),
            trace=trace,
        )

    # ------------------------------------------------------------------ the stream

    async def _metered(
        self, admission: Admission, generation: Generation
    ) -> AsyncGenerator[list[Event], None]:
        """The generation's batches as the client gets them: usage taken out (one Usage, with
        the cost, goes out right before the final event), output cut at the admitted limit,
        a final Error where the backend failed or stopped without a finish. What a batch
        holds is counted as relayed when it is yielded: before anything that may wait (a
        count, the settlement), what is ready goes out first."""
        meter = _Meter()
        counter = generation.counter
        limit = admission.limit
        watch = generation.watch  # the backend's circuit and in-flight place
        assert generation.batches is not None and watch is not None
        out: list[Event] = []
        try:
            async with aclosing(generation.batches) as batches:
                first = generation.first
                if first is not None:
                    meter.backend = first.backend
                    if admission.trace is not None:
                        admission.trace.backend = first.backend
                    if generation.head:
                        out.append(first)  # a whole answer: one batch
                    else:
                        yield [first]  # a stream begins before its first token
                try:
                    # The rest of the first batch (a whole answer comes in one), then the rest.
                    batch = generation.head
                    while True:
                        if batch is None:
                            try:
                                batch = await anext(batches)
                            except StopAsyncIteration:
                                break
                        for event in batch:
                            # Most events: text, checked against the limit on a fast path.
                            if type(event) is TextDelta:
                                piece = event.text
                                size = len(piece) if piece.isascii() else len(piece.encode())
                                if (
                                    meter.first_token_at is not None
                                    and meter.known + meter.completion_bytes - meter.known_at + size
                                    <= limit
                                ):
                                    meter.text.append(piece)
                                    meter.completion_bytes += size
                                    out.append(event)
                                    continue
                            if isinstance(event, Usage):
                                meter.usage = event
                                meter.known = max(meter.known, event.completion_tokens)
                                meter.known_at = meter.completion_bytes
                                meter.known_pieces = len(meter.text)
                                continue  # one Usage, with the cost, goes out before the finish
                            if isinstance(event, Stop):
                                meter.stop = event
                                watch.finished()
                                final = self._usage_at_once(admission, meter)
                                if final is None and out:
                                    yield out  # the settlement may wait for a count
                                    out = []
                                billed = await self._settle(
                                    admission, meter, counter=counter, final=final
                                )
                                out += (billed, event)
                                yield out
                                # Let the stream end by itself (closing it at its last event
                                # would drop the upstream connection instead of returning it
                                # to the pool).
                                async for _ in batches:
                                    pass
                                return
                            if isinstance(event, Error):
                                meter.error = event.error
                                watch.failed(event.error)
                                if out:
                                    yield out
                                    out = []
                                billed = await self._settle(
                                    admission, meter, status="error", counter=counter
                                )
                                # What the failed answer cost goes out before its error.
                                yield [billed, event]
                                return
                            if isinstance(event, Start):
                                meter.backend = event.backend
                            output = _output_of(event)
                            if output is not None:
                                piece = output
                                if meter.first_token_at is None:
                                    meter.first_token_at = time.monotonic()
                                size = len(piece) if piece.isascii() else len(piece.encode())
                                if (
                                    meter.known + meter.completion_bytes - meter.known_at + size
                                    > limit
                                ):
                                    # Possibly past the limit: count exactly before relaying
                                    # more.
                                    if out:
                                        yield out
                                        out = []
                                    relayed = await self._count_output(
                                        counter, "".join(meter.text) + piece
                                    )
                                    meter.known = relayed
                                    meter.known_at = meter.completion_bytes + size
                                    if relayed > limit:
                                        # Past the limit: relay the part of this piece that
                                        # fits, then end the answer there, as a limit
                                        # reached upstream would.
                                        meter.cut = True
                                        fitting = await self._fitting(
                                            meter, counter, event, piece, limit
                                        )
                                        if fitting is not None:
                                            meter.text.append(fitting[1])
                                            if isinstance(event, ReasoningDelta):
                                                meter.reasoning.append(fitting[1])
                                            meter.completion_bytes += len(fitting[1].encode())
                                            yield [fitting[0]]
                                        meter.stop = Stop("length", "output_limit")
                                        watch.finished()  # cut here, not by the backend
                                        billed = await self._settle(
                                            admission, meter, counter=counter
                                        )
                                        yield [billed, meter.stop]
                                        return
                                meter.text.append(piece)
                                meter.completion_bytes += size
                                if isinstance(event, ReasoningDelta):
                                    meter.reasoning.append(piece)
                            out.append(event)
                        if out:
                            yield out
                            out = []
                        batch = None
                    failure: ModelportError = unfinished(meter.backend or "")
                    watch.failed(failure)
                except Exception as exc:
                    watch.failed(exc)
                    failure = stream_failure(exc, meter.backend or "")
                if out:
                    yield out
                    out = []
                meter.error = failure
                billed = await self._settle(admission, meter, status="error", counter=counter)
                yield [billed, Error(failure)]
        finally:
            watch.close()  # the backend's stream is closed (aclosing above)
            if not meter.settled:
                # The client went away (the stream was closed before its end), or the
                # consumer failed: settle now, or once the relayed text is counted.
                self._settle_later(admission, meter, counter)

    async def _abandoned(self, admission: Admission, generation: Generation) -> None:
        """The stream was closed before its first step (its consumer failed or left before
        reading it, as when the client is gone by the time the response headers go out): what
        `_metered` would have done on its way out. The backend's stream is closed, its place
        given back, and the request settled as a client that left: the prompt, no output."""
        meter = _Meter()
        meter.backend = generation.first.backend if generation.first is not None else None
        try:
            if generation.batches is not None:
                await generation.batches.aclose()
        finally:
            if generation.watch is not None:
                generation.watch.close()
            self._settle_later(admission, meter, generation.counter)

    async def _fitting(
        self,
        meter: _Meter,
        counter: TokenCounter | None,
        event: Event,
        piece: str,
        limit: int,
    ) -> tuple[Event, str] | None:
        """The longest start of `piece` that keeps the relayed output within `limit` tokens,
        as an event of the same kind (None: nothing fits, or a tool call's arguments, which a
        cut would leave as broken JSON). Found by bisecting on the counted length."""
        if not isinstance(event, TextDelta | ReasoningDelta):
            return None
        before = "".join(meter.text)
        low, high = 0, len(piece) - 1  # the whole piece is known not to fit
        while low < high:
            middle = (low + high + 1) // 2
            if await self._count_output(counter, before + piece[:middle]) <= limit:
                low = middle
            else:
                high = middle - 1
        if low == 0:
            return None
        part = piece[:low]
        kind = TextDelta if isinstance(event, TextDelta) else ReasoningDelta
        return kind(event.index, part), part

    async def _count_output(self, counter: TokenCounter | None, text: str) -> int:
        """Tokens in relayed output: exact where the backend can count, else the fewest the
        text can be (so that a cut never falls short of what the request allowed)."""
        if counter is not None:
            counted = await counter.count_text(text, local_only=False)
            if counted is not None:
                return counted
        return lower_bound(len(text.encode()))

    # ------------------------------------------------------------------ settlement

    def _settle_later(
        self, admission: Admission, meter: _Meter, counter: TokenCounter | None
    ) -> None:
        task = asyncio.ensure_future(
            self._settle(admission, meter, status="cancelled", counter=counter)
        )
        self._background.add(task)
        task.add_done_callback(self._settled_later)
        if admission.trace is not None:
            admission.trace.settling = task  # the access line waits for what it finds

    def _settled_later(self, task: asyncio.Future[Usage]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("settling a request failed", exc_info=task.exception())

    async def _settle(
        self,
        admission: Admission,
        meter: _Meter,
        *,
        status: Status = "ok",
        counter: TokenCounter | None = None,
        free: bool = False,
        final: tuple[Usage, bool, list[str]] | None = None,
    ) -> Usage:
        """Charge and record the request, once; returns its usage with the cost. Counting may
        wait (a tokenizer off the loop, an engine's tokenize endpoint); everything after it is
        synchronous, so a cancellation during the count leaves the request to `finally`.
        `final`: the usage to bill, when `_usage_at_once` found it (then nothing waits)."""
        if final is None:
            final = await self._final_usage(admission, meter, counter)
        usage, estimated, problems = final
        if meter.settled:
            return Usage(usage.prompt_tokens, usage.completion_tokens, cost_nano=0)
        meter.settled = True
        model = admission.card.id
        left = self.in_flight.get(model, 1) - 1
        if left > 0:
            self.in_flight[model] = left
        else:
            self.in_flight.pop(model, None)
        series = _series(model)
        card = admission.card
        if free or (meter.stop is None and status == "error" and usage.completion_tokens == 0):
            cost = 0  # failed before any output: nothing is billed
        else:
            cost = card.pricing.cost_nano(usage.prompt_tokens, usage.completion_tokens)
        charged = cost
        if not admission.postpaid:
            charged = self._book.settle(admission.hold, cost)
            if charged < cost:
                problems.append("capped_at_hold")
                log.warning(
                    "request %s cost %d nano-yuan, above its hold of %d: charged the hold",
                    admission.request_id,
                    cost,
                    admission.hold.amount,
                )
        stop = meter.stop
        error = meter.error
        if stop is not None:
            status = "ok"
        principal = admission.principal
        latency = time.monotonic() - admission.started
        ttft = None if meter.first_token_at is None else meter.first_token_at - admission.started
        trace = admission.trace
        record = UsageRecord(
            request_id=admission.request_id,
            account_id=principal.account_id,
            key_id=principal.key_id,
            model=card.id,
            backend=meter.backend,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            cached_tokens=usage.cached_tokens,
            cost_nano=charged,
            latency_ms=round(latency * 1000, 3),
            ttft_ms=None if ttft is None else round(ttft * 1000, 3),
            finish_reason=stop.finish_reason if stop else None,
            native_finish_reason=stop.native_finish_reason if stop else None,
            status=status,
            error_code=error.code if error is not None else None,
            streamed=admission.streamed,
            cancelled=status == "cancelled",
            created_at=admission.created_at,
            estimated=estimated,
            anomaly=",".join(problems) or None,
            trace_id=trace.request_id if trace is not None else None,
        )
        series.settled(record, latency, ttft)
        if trace is not None:
            _fill(trace, record, error)
        lease = admission.hold.lease
        self._store.record(
            Charge(
                record,
                lease.lease_id if lease is not None else None,
                postpaid=admission.postpaid,
            )
        ).add_done_callback(_log_record_failure)
        tpm = principal.limits.tpm
        if tpm is not None and usage.total_tokens:
            self._spawn(self._limiter.add_tokens(principal.key_id, usage.total_tokens))
        if usage_log.isEnabledFor(logging.DEBUG):
            usage_log.debug("%s", msgspec.json.encode(record).decode())
        return Usage(
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.reasoning_tokens,
            usage.cached_tokens,
            cost_nano=charged,
            estimated=estimated,
        )

    @staticmethod
    def _usage_at_once(admission: Admission, meter: _Meter) -> tuple[Usage, bool, list[str]] | None:
        """`_final_usage` for a finished answer whose reported usage is believable: found
        without waiting for anything. None when it needs a count."""
        reported = meter.usage
        if reported is None or meter.cut or meter.stop is None:
            return None
        checked = _checked(admission, meter)
        base = checked.usage
        if base is None or checked.recount_prompt or checked.recount_completion:
            return None
        return base, base.estimated, list(checked.problems)

    async def _final_usage(
        self, admission: Admission, meter: _Meter, counter: TokenCounter | None
    ) -> tuple[Usage, bool, list[str]]:
        """The usage to bill: the backend's where it is believable, the gateway's own count
        where it is missing or not (exact with the backend's tokenizer, else an estimate)."""
        reported = meter.usage
        checked = _checked(admission, meter)
        problems = [] if reported is None or meter.cut else list(checked.problems)
        if meter.cut:
            problems.append("output_cut_at_limit")
        estimated = False
        base = checked.usage
        believable = not (checked.recount_prompt or checked.recount_completion or meter.cut)
        if base is not None and believable:
            tail = meter.text[meter.known_pieces :]
            if meter.stop is None and tail:
                # Cut short after a running count: what was relayed since it counts too.
                more, exact = await self._count_text(counter, "".join(tail))
                completion = min(base.completion_tokens + more, admission.limit)
                base = msgspec.structs.replace(base, completion_tokens=completion)
                return base, base.estimated or not exact, problems
            return base, base.estimated, problems
        prompt = base.prompt_tokens if base is not None and not checked.recount_prompt else None
        if prompt is None:
            prompt, exact = admission.prompt_tokens, admission.prompt_exact
            if not exact and counter is not None:
                counted = await counter.count_tokens(admission.request, local_only=False)
                if counted is not None:
                    prompt, exact = counted, True
            estimated = estimated or not exact
        if base is not None and not checked.recount_completion and not meter.cut:
            completion, reasoning = base.completion_tokens, base.reasoning_tokens
        else:
            completion, exact_out = await self._count_text(counter, "".join(meter.text))
            if meter.cut:
                completion = min(completion, admission.limit)
            reasoning = 0
            if meter.reasoning:
                reasoning, _ = await self._count_text(counter, "".join(meter.reasoning))
            estimated = estimated or not exact_out
        completion = min(completion, admission.limit)
        cached = base.cached_tokens if base is not None else 0
        return (
            Usage(prompt, completion, min(reasoning, completion), min(cached, prompt)),
            estimated,
            problems,
        )

    @staticmethod
    async def _count_text(counter: TokenCounter | None, text: str) -> tuple[int, bool]:
        if not text:
            return 0, True
        if counter is not None:
            counted = await counter.count_text(text, local_only=False)
            if counted is not None:
                return counted, True
        return estimate_text_tokens(text), False

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------ lifecycle

    async def flush(self) -> None:
        """Until every settlement made so far is written (read-your-writes for the account
        API)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await asyncio.wrap_future(self._store.flush())

    async def aclose(self) -> None:
        await self.flush()
        await self._book.aclose()
        await asyncio.wrap_future(self._store.flush())


def _check_fits(card: ModelCard, request: ChatRequest, prompt: int, exact: bool, size: int) -> None:
    """Refuses, before any backend sees it, a prompt that leaves no room for output in the
    model's context: counted exactly, or (without the model's tokenizer) by a floor no
    tokenizer goes below (`core.tokens.prompt_floor`), so that what is refused could never
    have fitted, and a 30 MB prompt is not forwarded to a 4,096-token model."""
    context = card.context_length
    if exact:
        if prompt < context:
            return
        counted = f"your messages resulted in {prompt} tokens"
    else:
        prompt = prompt_floor(request, size)
        if prompt < context:
            return
        counted = f"your messages resulted in at least {prompt} tokens"
    raise ContextLengthExceeded(
        f"This model's maximum context length is {context} tokens. However, {counted}. "
        "Please reduce the length of the messages.",
        param="messages",
        prompt_tokens=prompt,
        limit=context,
    )


def _output_limit(card: ModelCard, request: ChatRequest, prompt: int, exact: bool) -> int:
    """The most output tokens the request may produce: its max_tokens, the model's output
    limit, and (when the prompt was counted exactly) what the context leaves after it."""
    limit = card.context_length - prompt if exact else card.context_length
    for bound in (request.max_output_tokens, card.max_output_tokens):
        if bound is not None:
            limit = min(limit, bound)
    return max(limit, 1)


class _Series:
    """One model's metric series (label lookups done once, not per request)."""

    __slots__ = ("cost", "durations", "model", "tokens")

    def __init__(self, model: str) -> None:
        self.model = model
        self.cost = metrics.counter_series(metrics.cost, model)
        self.tokens = tuple(
            metrics.counter_series(metrics.tokens, model, kind)
            for kind in ("prompt", "completion", "reasoning", "cached")
        )
        # Per backend: its duration and time-to-first-token histograms.
        self.durations: dict[str, tuple[metrics.HistogramSeries, metrics.HistogramSeries]] = {}

    def settled(self, record: UsageRecord, latency: float, ttft: float | None) -> None:
        prompt, completion, reasoning, cached = self.tokens
        prompt.inc(record.prompt_tokens)
        completion.inc(record.completion_tokens)
        if record.reasoning_tokens:
            reasoning.inc(record.reasoning_tokens)
        if record.cached_tokens:
            cached.inc(record.cached_tokens)
        if record.cost_nano:
            self.cost.inc(record.cost_nano)
        backend = record.backend or ""
        histograms = self.durations.get(backend)
        if histograms is None:
            histograms = self.durations[backend] = (
                metrics.histogram_series(metrics.duration, self.model, backend),
                metrics.histogram_series(metrics.ttft, self.model, backend),
            )
        histograms[0].observe(latency)
        if ttft is not None:
            histograms[1].observe(ttft)


_SERIES: dict[str, _Series] = {}


def _series(model: str) -> _Series:
    series = _SERIES.get(model)
    if series is None:
        series = _SERIES[model] = _Series(model)
    return series


def _fill(trace: Trace, record: UsageRecord, error: ModelportError | None) -> None:
    """What the access line and the request counter say about a settled request."""
    trace.backend = record.backend
    trace.prompt_tokens = record.prompt_tokens
    trace.completion_tokens = record.completion_tokens
    trace.reasoning_tokens = record.reasoning_tokens
    trace.cached_tokens = record.cached_tokens
    trace.cost_nano = record.cost_nano
    trace.ttft_ms = record.ttft_ms
    if error is not None:
        trace.fail(error.code or type(error).__name__, error.status)


def _output_of(event: Event) -> str | None:
    if isinstance(event, TextDelta | ReasoningDelta):
        return event.text
    if isinstance(event, ToolCallDelta):
        return event.arguments
    if isinstance(event, ToolCallStart):
        return event.name
    return None


def _log_record_failure(future: object) -> None:
    exception = future.exception()  # type: ignore[attr-defined]
    if exception is not None:
        log.error("writing a usage row failed: %s", exception)


def _checked(admission: Admission, meter: _Meter) -> Checked:
    """The reported usage checked against what the request could have used and relayed."""
    return check_usage(
        meter.usage,
        prompt_bytes=admission.prompt_bytes,
        prompt_messages=len(admission.request.messages),
        relayed_bytes=meter.completion_bytes,
        limit=admission.limit,
    )
