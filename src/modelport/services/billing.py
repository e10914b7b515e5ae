"""Billing: admission holds the worst case before a request runs; settlement charges what it
used when it ends, on every path, once. docs/billing.md states the policy for users.

- **Admission** (`BillingService.admit`): the key may use the model (`allowed_models`, 403),
  is within its rate limits (429), and the account's balance covers the worst case:
  `prompt × input price + max output × output price` (402 otherwise; the key's spending limit
  likewise). The prompt is counted exactly where a backend can (the local engine, Qwen3
  upstreams), else estimated and padded by a quarter. The max output is the request's
  `max_tokens`, else the model's output limit, else what the context leaves. The hold is one
  conditional update in the database (`BillingStore.place_hold`): however many requests and
  replicas race, holds never take a balance below zero. A free model places no hold, and
  neither does an admin account: the operator's own accounts are postpaid (charged the same,
  their balance may go below zero).
- **Settlement** (`BillingService.settle`): `prompt × input price + completion × output price`
  (reasoning is output), with the policy: finished → the whole usage; the client went away
  → the prompt and the tokens generated until then; failed with no completion tokens →
  nothing. One transaction releases the hold, charges the cost, writes the ledger entry and
  the usage row, idempotent by request id. Every admitted request leaves one usage row.
- A process that dies between the two leaves its hold; `release_expired_holds` (run at start
  and every minute) gives it back after `hold_ttl` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Literal

import msgspec

from modelport.core.catalog import ModelCard
from modelport.core.errors import (
    InsufficientBalance,
    InternalError,
    ModelportError,
    PermissionDenied,
)
from modelport.core.events import Stop, Usage
from modelport.core.money import format_cny
from modelport.core.tokens import estimate_text_tokens, estimate_tokens
from modelport.core.types import ChatRequest
from modelport.services.keys import Principal
from modelport.services.limits import RateLimiter
from modelport.store.base import BillingStore, HoldResult, UsageRecord

log = logging.getLogger("modelport.billing")

# How much an estimated prompt size is padded for the hold (exact counts are not).
ESTIMATE_PADDING = 1.25
ESTIMATE_SLACK = 16

PromptCounter = Callable[[ModelCard, ChatRequest], Awaitable[tuple[int, bool]]]
OutputCounter = Callable[[ModelCard, str], Awaitable[int]]


class Admission(msgspec.Struct, frozen=True, kw_only=True):
    """An admitted request: who pays, what was held, and when it began."""

    request_id: str
    principal: Principal
    card: ModelCard
    request: ChatRequest
    prompt_tokens: int | None  # as counted for the hold (None: not counted)
    hold_nano: int
    streamed: bool
    started: float  # time.monotonic()
    created_at: datetime


class BillingService:
    def __init__(
        self,
        store: BillingStore,
        limiter: RateLimiter,
        count_prompt: PromptCounter,
        count_output: OutputCounter,
        *,
        hold_ttl: float,
    ) -> None:
        self._store = store
        self._limiter = limiter
        self._count_prompt = count_prompt
        self._count_output = count_output
        self._hold_ttl = timedelta(seconds=hold_ttl)

    async def admit(
        self,
        principal: Principal,
        card: ModelCard,
        request: ChatRequest,
        *,
        request_id: str,
        streamed: bool,
    ) -> Admission:
        """Check the key's rights and limits and hold the worst-case cost; raises
        PermissionDenied (403), RateLimited (429) or InsufficientBalance (402)."""
        allowed = principal.limits.allowed_models
        if allowed is not None and card.id not in allowed:
            raise PermissionDenied(
                f"This API key may not use the model '{card.id}'; it may use: "
                f"{', '.join(allowed) or 'no models'}.",
                param="model",
            )
        limits = principal.limits
        await self._limiter.admit(principal.key_id, rpm=limits.rpm, tpm=limits.tpm)
        now = datetime.now(UTC)
        hold = 0
        prompt_tokens: int | None = None
        # Admin accounts are the operator's own: billed like any other (usage rows, ledger
        # charges), but postpaid, so never refused for their balance.
        prepaid = principal.role != "admin"
        if prepaid and (card.pricing.input_nano or card.pricing.output_nano):
            hold, prompt_tokens = await self._worst_case(card, request)
            placing = asyncio.wrap_future(
                self._store.submit_hold(
                    request_id=request_id,
                    account_id=principal.account_id,
                    key_id=principal.key_id,
                    amount_nano=hold,
                    created_at=now,
                    expires_at=now + self._hold_ttl,
                )
            )
            try:
                result = await asyncio.shield(placing)
            except asyncio.CancelledError:
                # The client went away while the hold was being placed: give it back as
                # soon as it is (a request that never ran, recorded as cancelled).
                placing.add_done_callback(
                    lambda done: self._release_abandoned(done, principal, card, request_id, now)
                )
                raise
            if not result.placed:
                raise self._refusal(result.reason, hold, result.balance_nano)
        return Admission(
            request_id=request_id,
            principal=principal,
            card=card,
            request=request,
            prompt_tokens=prompt_tokens,
            hold_nano=hold,
            streamed=streamed,
            started=time.monotonic(),
            created_at=now,
        )

    async def _worst_case(self, card: ModelCard, request: ChatRequest) -> tuple[int, int]:
        """The hold, and the prompt's size as counted (unpadded)."""
        counted, exact = await self._count_prompt(card, request)
        prompt = counted if exact else int(counted * ESTIMATE_PADDING) + ESTIMATE_SLACK
        output = request.max_output_tokens or card.max_output_tokens
        if output is None:
            output = max(card.context_length - prompt, 1)
        return card.pricing.cost_nano(prompt, output), counted

    @staticmethod
    def _refusal(reason: str, hold: int, balance: int | None) -> ModelportError:
        needed = format_cny(hold)
        if reason == "key_limit":
            return InsufficientBalance(
                f"This API key has reached its spending limit: this request may cost up to "
                f"{needed} CNY. Ask an administrator to raise the key's limit.",
                code="key_limit_exceeded",
            )
        if reason == "duplicate":
            return InternalError("A request id was used twice; the request was not run.")
        return InsufficientBalance(
            f"Insufficient balance: this request may cost up to {needed} CNY (the prompt plus "
            f"max_tokens, or the model's output limit, at the model's prices) and the balance "
            f"is {format_cny(balance or 0)} CNY. Lower max_tokens, or top up."
        )

    def _release_abandoned(
        self,
        placing: asyncio.Future[HoldResult],
        principal: Principal,
        card: ModelCard,
        request_id: str,
        now: datetime,
    ) -> None:
        if placing.cancelled() or placing.exception() is not None or not placing.result().placed:
            return
        self._store.submit_settle(
            UsageRecord(
                request_id=request_id,
                account_id=principal.account_id,
                key_id=principal.key_id,
                model=card.id,
                backend=None,
                status="cancelled",
                cancelled=True,
                created_at=now,
            )
        )

    @staticmethod
    def cost(card: ModelCard, usage: Usage | None, *, finished: bool) -> int:
        """What a request is charged under the policy: nothing for a failure that produced
        no completion tokens; otherwise its prompt and what was generated."""
        if usage is None:
            return 0
        if not finished and usage.completion_tokens == 0:
            return 0
        return card.pricing.cost_nano(usage.prompt_tokens, usage.completion_tokens)

    async def settle(
        self,
        admission: Admission,
        *,
        usage: Usage | None,
        stop: Stop | None,
        error: ModelportError | None,
        cancelled: bool,
        backend: str | None,
        ttft: float | None,
        generated: str = "",
    ) -> Usage | None:
        """Charge and record the request, once; returns its usage with the cost filled in.
        `cancelled`: the client went away (prompt and generated tokens are billed).
        `generated`: the text relayed, to count when the backend never reported usage (a
        stream cut before its final usage chunk)."""
        finished = stop is not None
        if usage is None and (finished or cancelled or generated):
            usage = await self._counted_usage(admission, generated)
        cost = self.cost(admission.card, usage, finished=finished or cancelled)
        status: Literal["ok", "error", "cancelled"] = (
            "ok" if finished else ("cancelled" if cancelled else "error")
        )
        latency = (time.monotonic() - admission.started) * 1000
        record = UsageRecord(
            request_id=admission.request_id,
            account_id=admission.principal.account_id,
            key_id=admission.principal.key_id,
            model=admission.card.id,
            backend=backend,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            reasoning_tokens=usage.reasoning_tokens if usage else 0,
            cached_tokens=usage.cached_tokens if usage else 0,
            cost_nano=cost,
            latency_ms=round(latency, 3),
            ttft_ms=None if ttft is None else round(ttft * 1000, 3),
            finish_reason=stop.finish_reason if stop else None,
            native_finish_reason=stop.native_finish_reason if stop else None,
            status=status,
            error_code=error.code if error is not None else None,
            streamed=admission.streamed,
            cancelled=cancelled,
            created_at=admission.created_at,
        )
        # Shielded: the store's writer commits it even if this task is cancelled meanwhile.
        await asyncio.shield(asyncio.wrap_future(self._store.submit_settle(record)))
        tpm = admission.principal.limits.tpm
        if usage is not None and usage.total_tokens and tpm is not None:
            try:
                await self._limiter.add_tokens(admission.principal.key_id, usage.total_tokens)
            except Exception:  # counting tokens must never lose the settled request
                log.exception("could not count tokens for key %s", admission.principal.key_id)
        if usage is None:
            return None
        return msgspec.structs.replace(usage, cost_nano=cost)

    async def _counted_usage(self, admission: Admission, generated: str) -> Usage:
        """Usage the gateway counts itself: the prompt as counted for the hold (or now), and
        the relayed text with the model's tokenizer where there is one, else estimated."""
        prompt = admission.prompt_tokens
        if prompt is None:
            try:
                prompt, _exact = await self._count_prompt(admission.card, admission.request)
            except ModelportError:  # a prompt the tokenizer refuses (images on a text model)
                prompt = estimate_tokens(admission.request)
        completion = 0
        if generated:
            try:
                completion = await self._count_output(admission.card, generated)
            except ModelportError:
                completion = estimate_text_tokens(generated)
        return Usage(prompt_tokens=prompt, completion_tokens=completion)

    async def release_expired_holds(self) -> int:
        released = await asyncio.to_thread(self._store.release_expired_holds, datetime.now(UTC))
        if released:
            log.warning("released %d expired hold(s) left by a process that stopped", released)
        return released
