"""Which engine instance serves which request: conversation affinity behind a bounded queue.

Each instance keeps the tokens of its last request in its KV cache, and llama.cpp skips the
part of a new prompt that matches them. A conversation's next turn repeats the whole earlier
prompt, so sending it to the instance that served the previous turn saves re-reading all of
it (seconds on a long conversation). The rule, as llama.cpp's own server picks a slot:

- a new request goes to the idle instance whose cached text shares the longest prefix with
  the request's prompt, counting only prefixes that are at least half of the new prompt or
  half of what the instance holds (a chat template's opening line is shared by every
  conversation and must not pull a new one onto another conversation's cache; a long shared
  system prompt should); among equals (typically: no such instance) the one idle the
  longest, which keeps the caches of recently active conversations for their next turn;
- with no instance idle it waits in a FIFO queue of at most `max_waiting` requests (beyond
  that: `Overloaded`, a 503 with Retry-After); a freed instance takes the oldest waiting one.

Thread-safe: the event loop submits, worker threads ask for their next job; one lock guards
the state. Pure Python, no llama_cpp, so the policy is tested without a model.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class Task(Protocol):
    @property
    def prompt(self) -> str: ...

    def is_cancelled(self) -> bool: ...


T = TypeVar("T", bound=Task)


class Slot(Generic[T]):
    """One instance as the dispatcher sees it: an inbox and the text its KV cache holds."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.inbox: queue.Queue[T | None] = queue.Queue()  # None: stop
        self.cached_text = ""  # written by the slot's own thread between jobs
        self.idle_since = 0


def shared_prefix(a: str, b: str) -> int:
    """Length of the longest common prefix (binary search over slice compares: fast in C)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _reuse(cached: str, task: Task) -> int:
    """The prefix `task` would reuse from `cached`; 0 unless it is at least half of the new
    prompt or half of what the cache holds (a shared template opening is neither)."""
    shared = shared_prefix(cached, task.prompt)
    return shared if 2 * shared >= min(len(cached), len(task.prompt)) else 0


class Dispatcher(Generic[T]):
    def __init__(self, max_waiting: int, *, overloaded: Callable[[int], Exception]) -> None:
        self._lock = threading.Lock()
        self._idle: list[Slot[T]] = []
        self._waiting: deque[T] = deque()
        self._max_waiting = max_waiting
        self._overloaded = overloaded  # builds the error for a full queue
        self._clock = itertools.count(1)
        self._closed = False

    def submit(self, task: T) -> None:
        """Hand `task` to the best idle slot, or queue it; raises when the queue is full."""
        with self._lock:
            if self._closed:
                raise self._overloaded(self._max_waiting)
            if self._idle:
                slot = max(self._idle, key=lambda s: (_reuse(s.cached_text, task), -s.idle_since))
                self._idle.remove(slot)
                slot.inbox.put(task)
                return
            if len(self._waiting) >= self._max_waiting:
                self._drop_cancelled()
            if len(self._waiting) >= self._max_waiting:
                raise self._overloaded(self._max_waiting)
            self._waiting.append(task)

    def next_task(self, slot: Slot[T]) -> T | None:
        """Called by a slot's thread when it is free: the oldest waiting task, or None (the
        slot is now idle and its next task, or its stop signal, arrives in its inbox)."""
        with self._lock:
            while self._waiting and not self._closed:
                task = self._waiting.popleft()
                if not task.is_cancelled():
                    return task
            slot.idle_since = next(self._clock)
            self._idle.append(slot)
            return None

    def close(self) -> list[T]:
        """Accept nothing more; returns the tasks that were still waiting."""
        with self._lock:
            self._closed = True
            waiting = list(self._waiting)
            self._waiting.clear()
            return waiting

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def _drop_cancelled(self) -> None:
        self._waiting = deque(task for task in self._waiting if not task.is_cancelled())
