"""What the application enforces against clients that hold the server without using it: a
deadline on reading a request body, and a cap on the requests one client address has in flight.

The header timeout (which is also the idle keep-alive timeout) and the connection cap are
granian's (`server.py`); docs/configuration.md says what each layer enforces and what is left
to a reverse proxy. Neither class here adds a task or a timer per request: a request pays a
set insertion and removal around its body read, and a dict update on the way in and out.
Imports only `core`.
"""

from __future__ import annotations

import asyncio
from time import monotonic

from modelport.core.errors import RateLimited, RequestTimeout


class BodyRead:
    """One request body being read: its task, when it must have arrived, the bytes so far."""

    __slots__ = ("deadline", "expired", "received", "task")

    def __init__(self, task: asyncio.Task[object], deadline: float) -> None:
        self.task = task
        self.deadline = deadline
        self.received = 0
        self.expired = False


class BodyDeadlines:
    """The request bodies being read in this process, and when each must have arrived.

    A body has `timeout` seconds, plus one more for every `min_rate` bytes that arrived, so a
    large body on a slow link gets longer and a trickle does not. One timer, armed only while
    a read is pending, looks at them every `tick` seconds and cancels a late read's task; the
    read then raises RequestTimeout. A timer per request would cost ~3 µs under uvloop
    (asyncio.timeout ~10 µs); registering here costs well under one.
    """

    __slots__ = ("_loop", "_pending", "_per_byte", "_tick", "_timer", "timeout")

    def __init__(self, timeout: float, min_rate: int) -> None:
        self.timeout = timeout
        self._per_byte = 1.0 / min_rate if min_rate else 0.0
        # How late a cut may come: a quarter of the timeout, at most a second.
        self._tick = min(1.0, timeout / 4)
        self._pending: set[BodyRead] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def begin(self) -> BodyRead:
        """Register the current task's body read; pair with `end`."""
        # current_task() with the loop given costs a third of finding the running loop.
        loop = self._loop
        task = None if loop is None else asyncio.current_task(loop)
        if loop is None or task is None:  # the first read, or one on another loop (tests)
            loop = self._loop = asyncio.get_running_loop()
            task = asyncio.current_task(loop)
            assert task is not None
            self._timer = None
        read = BodyRead(task, monotonic() + self.timeout)
        self._pending.add(read)
        if self._timer is None:
            self._timer = loop.call_later(self._tick, self._sweep)
        return read

    def end(self, read: BodyRead) -> None:
        self._pending.discard(read)

    def error(self) -> RequestTimeout:
        allowance = f", plus 1 s per {round(1 / self._per_byte)} bytes" if self._per_byte else ""
        return RequestTimeout(
            f"The request body did not arrive in time ({self.timeout:g} s{allowance})."
        )

    def _sweep(self) -> None:
        now = monotonic()
        per_byte = self._per_byte
        for read in tuple(self._pending):
            if not read.expired and read.deadline + read.received * per_byte <= now:
                read.expired = True
                read.task.cancel()  # raises in the read at its next await, not here
        if self._pending and self._loop is not None:
            self._timer = self._loop.call_later(self._tick, self._sweep)
        else:
            self._timer = None


class RequestsPerClient:
    """Requests in flight per client address in this process; one more than `limit` is
    refused with 429 and Retry-After, before its body is read."""

    __slots__ = ("_counts", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts: dict[str, int] = {}

    def enter(self, address: str) -> None:
        """Count a request from `address`, or raise RateLimited; pair with `leave`."""
        count = self._counts.get(address, 0)
        if count >= self.limit:
            raise RateLimited(
                f"Too many requests in flight from your address: at most {self.limit} at once.",
                code="too_many_concurrent_requests",
                retry_after=1.0,
            )
        self._counts[address] = count + 1

    def leave(self, address: str) -> None:
        count = self._counts[address] - 1
        if count:
            self._counts[address] = count
        else:
            del self._counts[address]

    def in_flight(self, address: str) -> int:
        return self._counts.get(address, 0)
