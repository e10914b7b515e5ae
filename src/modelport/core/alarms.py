"""Deadlines that are nearly always cleared before they come due, on one loop timer for all.

A request sets several: its upstream read timeout (cleared when the bytes arrive), the moment
its whole answer or stream starts watching for the client going away (cleared when the answer
ends first, as most do within milliseconds). A loop timer each costs a timer handle, a heap
push and a cancellation (about 3 µs under uvloop, http/client_limits.py measured; more under
asyncio, whose heap compares in Python); setting and clearing an alarm here is a dict insert
and a pop.

The one timer is armed for the earliest alarm set; when it rings, it calls every alarm due
and is armed again for the earliest left. An alarm cleared before that does not move the
timer: it rings once for nothing, then sleeps until the next. So the timer rings about once
per the shortest delay in use, however many alarms come and go, and each ring looks at the
alarms set at that moment.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Hashable
from typing import Any

# An alarm rings this early at most: libuv (uvloop) runs timers on a millisecond clock.
_EARLY_S = max(time.get_clock_info("monotonic").resolution, 0.001)


class Alarms:
    """One loop's alarms (`alarms_for`); not thread-safe, as the loop is not."""

    __slots__ = ("_due", "_loop", "_timer", "_timer_at")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due: dict[Hashable, tuple[float, Callable[..., object], tuple[Any, ...]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def set(self, key: Hashable, when: float, callback: Callable[..., object], *args: Any) -> None:
        """Call `callback(*args)` at loop time `when` unless `clear(key)` comes first. Setting
        a key that is set replaces its alarm."""
        self._due[key] = (when, callback, args)
        if when < self._timer_at:
            self._arm(when)

    def clear(self, key: Hashable) -> None:
        """Forget `key`'s alarm (nothing if it rang or was never set)."""
        self._due.pop(key, None)

    def __len__(self) -> int:
        return len(self._due)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._ring)

    def _ring(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        due = self._due
        if not due:
            return
        now = self._loop.time() + _EARLY_S
        ringing = [key for key, (when, _, _) in due.items() if when <= now]
        for key in ringing:
            alarm = due.pop(key, None)  # an earlier callback may have cleared it
            if alarm is None:
                continue
            # Called here, not scheduled: an alarm cleared before it rang must never run,
            # and one that rang has run by the time `clear` could come.
            try:
                alarm[1](*alarm[2])
            except Exception as error:
                self._loop.call_exception_handler(
                    {"message": "an alarm's callback failed", "exception": error}
                )
        if due:
            earliest = min(when for when, _, _ in due.values())
            if earliest < self._timer_at:  # a callback may have armed it already
                self._arm(earliest)


# Nearly always one loop per process: the last one asked for is kept at hand. Others (tests
# run many loops) are looked up, and those of closed loops dropped whenever a loop is new.
_last: Alarms | None = None
_by_loop: dict[asyncio.AbstractEventLoop, Alarms] = {}


def alarms_for(loop: asyncio.AbstractEventLoop) -> Alarms:
    """The alarms of `loop`, made on first use."""
    global _last
    last = _last
    if last is not None and last._loop is loop:
        return last
    alarms = _by_loop.get(loop)
    if alarms is None:
        for other in list(_by_loop):  # a copy: a loop in another thread may add its own
            if other.is_closed():
                _by_loop.pop(other, None)
        alarms = _by_loop[loop] = Alarms(loop)
    _last = alarms
    return alarms
