"""Per-key rate limits and key-cache invalidation: the interfaces and the in-process versions.

The Redis versions, shared by every replica, live in `modelport.store.redis`; services see
only the protocols below and import no driver. This module imports `core` only.

**Rate limits** (`RateLimiter`): requests per minute (RPM) and tokens per minute (TPM) per
key, counted in a sliding window. Time is cut into one-minute windows and a key keeps two
counters per window; its usage at a moment is

    this window's count + the previous window's count x the share of the previous window
    that still lies within the last 60 s

so a burst at a window edge cannot double the rate (a fixed window admits 2N across the
edge), at the cost of two counters per key rather than a log of timestamps.

- RPM: a request is admitted when usage + 1 <= rpm, and then counts; a refused one does not.
- TPM: a request is admitted while the tokens used are below tpm. Tokens are known only when
  a request ends (`add_tokens`), so the request that spends the last of the budget may go
  over it; the ones after it wait.
- A refusal is `RateLimited` (429) naming the limit, with `retry_after`: the whole seconds
  until the request would be admitted if the key sent nothing else. The arithmetic is in
  integer milliseconds (`window_wait_ms`), so every implementation agrees exactly and the
  advice is never early.
- `None` means no limit. A key without limits costs nothing: no counter is read or stored.
  `add_tokens` cannot know the key's limits, so callers skip it for keys without a TPM.

**Key-cache invalidation** (`KeyEvents`): a replica that revokes or changes a key publishes
its hash (or `FORGET_ALL`); every replica's listener drops that entry from its cache.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Literal, Protocol

from modelport.core.errors import RateLimited

log = logging.getLogger("modelport.limits")

WINDOW_MS = 60_000  # one window: a minute, in the milliseconds all the arithmetic uses
NEVER_RETRY_S = 60  # the advice given when a limit of 0 can never admit anything
FORGET_ALL = "*"  # a KeyEvents message meaning "forget every cached key"

LimitKind = Literal["requests", "tokens"]


class RateLimiter(Protocol):
    """Requests- and tokens-per-minute limits per key, in a sliding one-minute window."""

    async def admit(
        self, key_id: int, *, rpm: int | None, tpm: int | None, now: float | None = None
    ) -> None:
        """Count one request, or raise `RateLimited` (nothing counted) when the key is at its
        RPM or its TPM. `now` is wall-clock seconds (`time.time()`), injectable for tests."""
        ...

    async def add_tokens(self, key_id: int, tokens: int, *, now: float | None = None) -> None:
        """Count the tokens (prompt + completion) a finished request used, for TPM."""
        ...

    async def aclose(self) -> None: ...


class KeyEvents(Protocol):
    """Tells every replica that a cached key changed: its SHA-256 hash, or `FORGET_ALL`."""

    async def publish(self, key_hash_or_all: str) -> None:
        """Announce a change to every listener (this process's included)."""
        ...

    async def listen(self, on_change: Callable[[str], None]) -> None:
        """Call `on_change` with each announcement until cancelled."""
        ...

    async def aclose(self) -> None: ...


# ------------------------------------------------------------------------- sliding-window math


def budget(limit: int, kind: LimitKind) -> int:
    """The largest admissible usage, scaled by `WINDOW_MS` (usage is fractional in between
    windows; scaled, it is an integer): requests need room for one more, tokens must be
    below the limit."""
    return (limit - 1) * WINDOW_MS if kind == "requests" else limit * WINDOW_MS - 1


def window_wait_ms(previous: int, current: int, limit_budget: int, elapsed_ms: int) -> int | None:
    """Milliseconds from now until `previous x (WINDOW_MS - elapsed) + current x WINDOW_MS`,
    the scaled usage, is within `limit_budget`, if nothing more is counted: 0 when it already
    is, None when it never will be (a limit of 0).

    Within this window the previous window's weight falls linearly; once the next window
    starts, `current` becomes the previous count and falls the same way.
    """
    if previous * (WINDOW_MS - elapsed_ms) + current * WINDOW_MS <= limit_budget:
        return 0
    if limit_budget < 0:
        return None
    if current * WINDOW_MS <= limit_budget:  # previous > 0, or usage would be within budget
        return WINDOW_MS - (limit_budget - current * WINDOW_MS) // previous - elapsed_ms
    return 2 * WINDOW_MS - limit_budget // current - elapsed_ms


def to_retry_seconds(wait_ms: int | None) -> int:
    """Whole seconds to advertise in Retry-After: rounded up, at least 1."""
    if wait_ms is None:
        return NEVER_RETRY_S
    return max(1, -(-wait_ms // 1000))


def rate_limited(kind: LimitKind, limit: int, retry_s: int) -> RateLimited:
    unit = ("request" if kind == "requests" else "token") + ("" if limit == 1 else "s")
    return RateLimited(
        f"Rate limit: {limit} {unit} per minute for this key; retry in {retry_s} s",
        retry_after=retry_s,
    )


def now_ms(now: float | None) -> int:
    return math.floor((time.time() if now is None else now) * 1000)


# --------------------------------------------------------------------------------- in-process


class _Counters:
    """One key's counts in its newest window and the window before it."""

    __slots__ = ("previous_requests", "previous_tokens", "requests", "tokens", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self.requests = 0
        self.tokens = 0
        self.previous_requests = 0
        self.previous_tokens = 0

    def advance(self, window: int) -> None:
        """Move to `window`; a clock that stepped back keeps counting in the newer window."""
        if window <= self.window:
            return
        adjacent = window == self.window + 1
        self.previous_requests = self.requests if adjacent else 0
        self.previous_tokens = self.tokens if adjacent else 0
        self.requests = 0
        self.tokens = 0
        self.window = window


class InProcessRateLimiter:
    """`RateLimiter` for a single process: plain dicts, and no locks, because `admit` decides
    and counts without awaiting (atomic within one event loop).

    Memory holds only keys used in the last two minutes: counters live in least-recently-used
    order and every call forgets the stale ones at the front (amortised O(1) a call).
    """

    def __init__(self) -> None:
        self._counters: OrderedDict[int, _Counters] = OrderedDict()

    def __len__(self) -> int:
        """How many keys have live counters."""
        return len(self._counters)

    async def admit(
        self, key_id: int, *, rpm: int | None, tpm: int | None, now: float | None = None
    ) -> None:
        if rpm is None and tpm is None:
            return
        window, elapsed = divmod(now_ms(now), WINDOW_MS)
        counters = self._touch(key_id, window)
        waits: list[tuple[int | None, LimitKind, int]] = []
        if rpm is not None:
            wait = window_wait_ms(
                counters.previous_requests, counters.requests, budget(rpm, "requests"), elapsed
            )
            waits.append((wait, "requests", rpm))
        if tpm is not None:
            wait = window_wait_ms(
                counters.previous_tokens, counters.tokens, budget(tpm, "tokens"), elapsed
            )
            waits.append((wait, "tokens", tpm))
        refused = [entry for entry in waits if entry[0] != 0]
        if refused:
            wait, kind, limit = max(refused, key=lambda e: math.inf if e[0] is None else e[0])
            raise rate_limited(kind, limit, to_retry_seconds(wait))
        if rpm is not None:
            counters.requests += 1

    async def add_tokens(self, key_id: int, tokens: int, *, now: float | None = None) -> None:
        if tokens <= 0:
            return
        self._touch(key_id, now_ms(now) // WINDOW_MS).tokens += tokens

    async def aclose(self) -> None:
        self._counters.clear()

    def _touch(self, key_id: int, window: int) -> _Counters:
        counters = self._counters.get(key_id)
        if counters is None:
            counters = self._counters[key_id] = _Counters(window)
        else:
            counters.advance(window)
            self._counters.move_to_end(key_id)
        self._forget_stale(window)
        return counters

    def _forget_stale(self, window: int) -> None:
        """Drop counters last used two or more windows ago: nothing in them counts now."""
        while self._counters:
            oldest = next(iter(self._counters.values()))
            if oldest.window > window - 2:
                return
            self._counters.popitem(last=False)


class LocalKeyEvents:
    """`KeyEvents` within one process: `publish` calls every running listener's callback
    directly. For a single replica; several need `store.redis.RedisKeyEvents`."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[[str], None]] = []
        self._closed = asyncio.Event()

    async def publish(self, key_hash_or_all: str) -> None:
        for callback in list(self._callbacks):
            try:
                callback(key_hash_or_all)
            except Exception:  # one faulty listener must not stop the others
                log.exception("key change listener failed on %r", key_hash_or_all)

    async def listen(self, on_change: Callable[[str], None]) -> None:
        """Deliver announcements until cancelled or until `aclose`."""
        self._callbacks.append(on_change)
        try:
            await self._closed.wait()
        finally:
            self._callbacks.remove(on_change)

    async def aclose(self) -> None:
        self._closed.set()
