"""Per-backend circuit breaking and concurrency caps (docs/operations.md, "Circuit breaking").

A backend's `Guard` decides whether routing may send it a request:

    closed ──(circuit_failures failures in a row)──▶ open ──(circuit_cooldown s)──▶ half-open
      ▲                                               ▲                               │
      └──────────── the probe request succeeds ───────┴──── the probe request fails ──┘

In half-open one request at a time is let through (the probe); the others skip the backend
as if it were open. A failure is the backend's fault: an upstream error (5xx, a broken or
malformed answer), a timeout, a stream that ended without a finish; a request the upstream
refused as the client's fault, or a busy upstream (503, 429), is not. Optional active probes
(`probe_interval`) ask the backend whether it is up, so a dead backend opens without traffic
and an open one closes as soon as it answers again.

Each worker process keeps its own guards (a circuit opens in each after its own failures).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from modelport.core.errors import ModelportError
from modelport.services import metrics

log = logging.getLogger("modelport.circuit")

CLOSED, HALF_OPEN, OPEN = 0, 1, 2
REFUSED, ADMITTED, PROBE = 0, 1, 2
STATE_NAMES = {CLOSED: "closed", HALF_OPEN: "half_open", OPEN: "open"}


class Guard:
    """One backend's circuit and in-flight count. Not thread-safe: the event loop's."""

    __slots__ = (
        "_clock",
        "_cooldown",
        "_failures",
        "_opened_at",
        "_probing",
        "_threshold",
        "in_flight",
        "max_concurrency",
        "name",
        "state",
    )

    def __init__(
        self,
        name: str,
        *,
        failures: int = 5,
        cooldown: float = 30.0,
        max_concurrency: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._threshold = failures  # 0: the circuit never opens
        self._cooldown = cooldown
        self.max_concurrency = max_concurrency
        self._clock = clock
        self.state = CLOSED
        self._failures = 0  # in a row
        self._opened_at = 0.0
        self._probing = False  # a half-open circuit's one request is out
        self.in_flight = 0
        metrics.circuit_state.labels(name).set(CLOSED)

    # ---------------------------------------------------------------- routing

    def admit(self) -> int:
        """Whether a request may go to this backend now: REFUSED, ADMITTED, or PROBE (the one
        request a half-open circuit lets through). Admitted requests take an in-flight place:
        give it back with `release`, after `succeeded` or `failed` when the outcome is known."""
        probe = False
        if self.state != CLOSED:
            if self.state == OPEN:
                if self._clock() - self._opened_at < self._cooldown:
                    return REFUSED
                self._set(HALF_OPEN)
            if self._probing:
                return REFUSED
            probe = True
        if self.max_concurrency is not None and self.in_flight >= self.max_concurrency:
            return REFUSED
        if probe:
            self._probing = True
        self.in_flight += 1
        return PROBE if probe else ADMITTED

    def release(self, probe: bool = False) -> None:
        """A request `admit` let through ended. A probe that ended without an outcome (its
        client left) lets the next request probe."""
        self.in_flight -= 1
        if probe and self.state == HALF_OPEN:
            self._probing = False

    @property
    def at_capacity(self) -> bool:
        return self.max_concurrency is not None and self.in_flight >= self.max_concurrency

    def retry_after(self) -> float:
        """Seconds until an open circuit lets a probe through (0 when not open)."""
        if self.state != OPEN:
            return 0.0
        return max(0.0, self._opened_at + self._cooldown - self._clock())

    @property
    def open(self) -> bool:
        """Whether requests are refused now (open and still cooling down)."""
        return self.state == OPEN and self.retry_after() > 0

    # ---------------------------------------------------------------- outcomes

    def succeeded(self) -> None:
        self._failures = 0
        if self.state != CLOSED:
            log.warning("backend %s answers again: circuit closed", self.name)
            self._probing = False
            self._set(CLOSED)

    def failed(self) -> None:
        self._failures += 1
        if self._threshold <= 0:
            return
        if self.state == HALF_OPEN:
            self._probing = False
            self._trip(f"the probe failed; refusing requests for {self._cooldown:g} s")
        elif self.state == CLOSED and self._failures >= self._threshold:
            self._trip(
                f"{self._failures} failures in a row; refusing requests for {self._cooldown:g} s"
            )

    # ---------------------------------------------------------------- active probes

    def probe_failed(self) -> None:
        """An active probe found the backend down: a failure like a request's; an open
        circuit rests a whole cool-down again."""
        if self.state == OPEN:
            self._opened_at = self._clock()
        else:
            self.failed()

    def probe_succeeded(self) -> None:
        """An active probe found the backend up: an open circuit lets a request probe it now,
        without waiting for the rest of its cool-down (the probe does not generate, so a
        request still decides)."""
        if self.state == OPEN:
            self._probing = False
            self._set(HALF_OPEN)

    def _trip(self, why: str) -> None:
        self._opened_at = self._clock()
        self._set(OPEN)
        metrics.circuit_opened.labels(self.name).inc()
        log.warning("backend %s circuit open: %s", self.name, why)

    def _set(self, state: int) -> None:
        self.state = state
        metrics.circuit_state.labels(self.name).set(state)


async def keep_probing(guard: Guard, probe: Callable[[], Awaitable[None]], interval: float) -> None:
    """Probe a backend every `interval` seconds for as long as the server runs."""
    while True:
        await asyncio.sleep(interval)
        try:
            await probe()
        except ModelportError as error:
            log.warning(
                "probe of backend %s failed: %s%s",
                guard.name,
                error.message,
                f" ({error.detail})" if error.detail else "",
                extra={"fields": {"backend": guard.name, "error_kind": error.code}},
            )
            guard.probe_failed()
        except Exception:
            log.exception("probe of backend %s failed", guard.name)
            guard.probe_failed()
        else:
            guard.probe_succeeded()
