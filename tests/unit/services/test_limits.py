"""The sliding-window arithmetic and what only the in-process versions promise (memory, clock
steps, closing). The behaviour both limiters share is in tests/contract/test_rate_limits.py."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelport.core.errors import RateLimited
from modelport.services.limits import (
    WINDOW_MS,
    InProcessRateLimiter,
    LimitKind,
    LocalKeyEvents,
    budget,
    to_retry_seconds,
    window_wait_ms,
)

T = 6_000_000.0  # a window boundary


def scaled_usage(previous: int, current: int, elapsed_ms: int, later_ms: int) -> int:
    """Usage x WINDOW_MS `later_ms` from now, straight from the definition: the newest
    window's count plus the one before it weighted by its share of the last minute."""
    moment = elapsed_ms + later_ms
    if moment < WINDOW_MS:
        return previous * (WINDOW_MS - moment) + current * WINDOW_MS
    if moment < 2 * WINDOW_MS:
        return current * (2 * WINDOW_MS - moment)
    return 0


@given(
    previous=st.integers(0, 10**6),
    current=st.integers(0, 10**6),
    limit=st.integers(0, 10**6),
    kind=st.sampled_from(["requests", "tokens"]),
    elapsed=st.integers(0, WINDOW_MS - 1),
)
def test_the_wait_is_the_first_moment_the_usage_fits(
    previous: int, current: int, limit: int, kind: LimitKind, elapsed: int
) -> None:
    room = budget(limit, kind)
    wait = window_wait_ms(previous, current, room, elapsed)
    if wait is None:
        assert scaled_usage(previous, current, elapsed, 2 * WINDOW_MS) > room
        return
    assert scaled_usage(previous, current, elapsed, wait) <= room
    assert wait == 0 or scaled_usage(previous, current, elapsed, wait - 1) > room


@pytest.mark.parametrize("kind", ["requests", "tokens"])
def test_a_limit_admits_usage_up_to_it(kind: LimitKind) -> None:
    # 99 used: room for one more request, and tokens are still under 100.
    assert window_wait_ms(0, 99, budget(100, kind), 0) == 0
    # 100 used: a request would be the 101st, and no token budget is left.
    assert window_wait_ms(0, 100, budget(100, kind), 0) != 0


@pytest.mark.parametrize(
    ("wait_ms", "seconds"), [(1, 1), (999, 1), (1000, 1), (1001, 2), (61_455, 62), (None, 60)]
)
def test_retry_after_rounds_up_to_whole_seconds(wait_ms: int | None, seconds: int) -> None:
    assert to_retry_seconds(wait_ms) == seconds


@pytest.mark.asyncio
async def test_a_limit_of_zero_refuses_with_a_minute_to_wait() -> None:
    with pytest.raises(RateLimited, match="0 requests per minute") as raised:
        await InProcessRateLimiter().admit(1, rpm=0, tpm=None, now=T)
    assert raised.value.retry_after == 60


@pytest.mark.asyncio
async def test_memory_holds_only_keys_used_in_the_last_two_minutes() -> None:
    limiter = InProcessRateLimiter()
    for key in range(1000):
        await limiter.admit(key, rpm=10, tpm=None, now=T + 1)
    await limiter.add_tokens(5000, 10, now=T + 61)
    assert len(limiter) == 1001  # last minute's counts still weigh on this one
    await limiter.admit(9000, rpm=10, tpm=None, now=T + 120)
    assert len(limiter) == 2  # key 5000 (used a minute ago) and key 9000


@pytest.mark.asyncio
async def test_a_clock_stepping_back_does_not_reset_a_key() -> None:
    limiter = InProcessRateLimiter()
    await limiter.admit(1, rpm=2, tpm=None, now=T + 65)
    await limiter.admit(1, rpm=2, tpm=None, now=T + 65)
    with pytest.raises(RateLimited):
        await limiter.admit(1, rpm=2, tpm=None, now=T + 30)


@pytest.mark.asyncio
async def test_closing_local_events_ends_their_listeners() -> None:
    events = LocalKeyEvents()
    heard: list[str] = []
    listener = asyncio.create_task(events.listen(heard.append))
    await asyncio.sleep(0)
    await events.publish("ab" * 32)
    await events.aclose()
    await asyncio.wait_for(listener, timeout=5)
    await events.publish("cd" * 32)
    assert heard == ["ab" * 32]
