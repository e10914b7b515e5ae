"""The body deadline and the cap on requests in flight per client address, in-process
(tests/e2e/test_slow_clients.py drives them through the real server)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from modelport.core.errors import PayloadTooLarge, RateLimited, RequestTimeout
from modelport.http.client_limits import BodyDeadlines, RequestsPerClient
from modelport.http.exchange import read_limited


async def paced(chunks: list[bytes], every: float) -> AsyncIterator[bytes]:
    for chunk in chunks:
        await asyncio.sleep(every)
        yield chunk


async def forever() -> AsyncIterator[bytes]:
    yield b"{"
    await asyncio.Event().wait()
    yield b"}"  # never reached


@pytest.mark.asyncio
async def test_a_body_that_stops_coming_is_cut_off_after_the_timeout() -> None:
    deadlines = BodyDeadlines(0.2, 0)
    start = time.monotonic()
    with pytest.raises(RequestTimeout) as caught:
        await read_limited(forever(), 1000, deadlines)
    elapsed = time.monotonic() - start
    assert 0.2 <= elapsed < 0.2 + 0.05 + 0.3  # the timeout, a tick, room for a busy machine
    assert caught.value.status == 408
    assert "0.2 s" in caught.value.message


@pytest.mark.asyncio
async def test_every_byte_received_buys_time_at_the_minimum_rate() -> None:
    """0.2 s plus 1 s per 1,000 bytes: 100-byte chunks every 0.08 s (1,250 bytes/s) take
    0.8 s in all, four times the bare timeout, and arrive whole."""
    deadlines = BodyDeadlines(0.2, 1000)
    chunks = [b"x" * 100] * 10
    assert await read_limited(paced(chunks, 0.08), 10_000, deadlines) == b"x" * 1000


@pytest.mark.asyncio
async def test_a_trickle_below_the_minimum_rate_is_still_cut_off() -> None:
    deadlines = BodyDeadlines(0.2, 1000)
    with pytest.raises(RequestTimeout, match=r"plus 1 s per 1000 bytes"):
        await read_limited(paced([b"x"] * 100, 0.05), 10_000, deadlines)


@pytest.mark.asyncio
async def test_the_timer_rests_while_nothing_is_read_and_starts_again() -> None:
    deadlines = BodyDeadlines(0.2, 1000)
    assert await read_limited(paced([b"ab", b"cd"], 0), 100, deadlines) == b"abcd"
    await asyncio.sleep(0.15)  # past a tick with nothing pending: the timer is not re-armed
    with pytest.raises(RequestTimeout):
        await read_limited(forever(), 100, deadlines)


@pytest.mark.asyncio
async def test_the_size_limit_still_applies() -> None:
    with pytest.raises(PayloadTooLarge):
        await read_limited(paced([b"x" * 60, b"x" * 60], 0), 100, BodyDeadlines(5, 0))


@pytest.mark.asyncio
async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    """Server shutdown or a client gone: the read's task is cancelled, not timed out."""
    deadlines = BodyDeadlines(5, 0)
    task = asyncio.ensure_future(read_limited(forever(), 100, deadlines))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The deadline machinery still works for the next read.
    with pytest.raises(RequestTimeout):
        await read_limited(forever(), 100, BodyDeadlines(0.1, 0))


@pytest.mark.asyncio
async def test_many_reads_are_cut_off_independently() -> None:
    deadlines = BodyDeadlines(0.2, 0)
    slow = [asyncio.ensure_future(read_limited(forever(), 100, deadlines)) for _ in range(5)]
    quick = [
        asyncio.ensure_future(read_limited(paced([b"ok"], 0.05), 100, deadlines)) for _ in range(5)
    ]
    results = await asyncio.gather(*slow, *quick, return_exceptions=True)
    assert all(isinstance(result, RequestTimeout) for result in results[:5])
    assert results[5:] == [b"ok"] * 5


def test_requests_per_client_are_capped_per_address() -> None:
    cap = RequestsPerClient(2)
    cap.enter("10.0.0.1")
    cap.enter("10.0.0.1")
    cap.enter("10.0.0.2")  # another address has its own count
    with pytest.raises(RateLimited) as caught:
        cap.enter("10.0.0.1")
    assert caught.value.status == 429
    assert caught.value.retry_after == 1.0
    assert caught.value.code == "too_many_concurrent_requests"
    cap.leave("10.0.0.1")
    cap.enter("10.0.0.1")  # a slot came free
    for address in ("10.0.0.1", "10.0.0.1", "10.0.0.2"):
        cap.leave(address)
    assert cap.in_flight("10.0.0.1") == cap.in_flight("10.0.0.2") == 0
