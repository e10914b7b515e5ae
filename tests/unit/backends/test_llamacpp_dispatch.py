"""The instance-choice policy of the local engine, without a model (dispatch.py)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelport.backends.llamacpp.dispatch import Dispatcher, Slot, shared_prefix
from modelport.core.errors import Overloaded


@dataclass
class FakeJob:
    prompt: str
    cancel: threading.Event = field(default_factory=threading.Event)

    def is_cancelled(self) -> bool:
        return self.cancel.is_set()


def full(waiting: int) -> Overloaded:
    return Overloaded(f"full ({waiting} waiting)", retry_after=1.0)


def ready(dispatcher: Dispatcher[FakeJob], *texts: str) -> list[Slot[FakeJob]]:
    """Slots that registered as idle in this order, holding `texts` in their caches."""
    slots = []
    for index, text in enumerate(texts):
        slot: Slot[FakeJob] = Slot(f"#{index}")
        slot.cached_text = text
        assert dispatcher.next_task(slot) is None
        slots.append(slot)
    return slots


def taker(slots: list[Slot[FakeJob]]) -> Slot[FakeJob]:
    (chosen,) = [slot for slot in slots if not slot.inbox.empty()]
    return chosen


@given(st.text(max_size=40), st.text(max_size=40))
def test_shared_prefix_is_the_longest_common_prefix(a: str, b: str) -> None:
    n = shared_prefix(a, b)
    assert a[:n] == b[:n]
    assert n == min(len(a), len(b)) or a[n] != b[n]


def test_a_conversation_goes_back_to_the_instance_holding_its_earlier_turns() -> None:
    dispatcher: Dispatcher[FakeJob] = Dispatcher(4, overloaded=full)
    turn_a = "<s>system: navigator</s><s>user: Malta?</s><s>assistant: 35N</s>"
    turn_b = "<s>system: chef</s><s>user: bread?</s><s>assistant: flour</s>"
    slots = ready(dispatcher, turn_a, turn_b)
    dispatcher.submit(FakeJob(turn_b + "<s>user: rolls?</s>"))
    assert taker(slots) is slots[1]


def test_a_new_conversation_takes_the_longest_idle_instance_not_a_warm_one() -> None:
    dispatcher: Dispatcher[FakeJob] = Dispatcher(4, overloaded=full)
    # The warm caches share the template's opening with the new prompt, but neither would
    # keep half of what it holds: the instance idle the longest gets it.
    slots = ready(
        dispatcher, "", "<s>system: a long talk about ships", "<s>system: voyages across seas"
    )
    dispatcher.submit(FakeJob("<s>system: something else entirely"))
    assert taker(slots) is slots[0]
    # Once it is busy, the next new conversation takes the next longest idle, not the warmest.
    dispatcher.submit(FakeJob("<s>system: and another"))
    assert slots[1].inbox.qsize() == 1


def test_a_repeated_prompt_or_shared_system_prompt_finds_the_warm_instance() -> None:
    dispatcher: Dispatcher[FakeJob] = Dispatcher(4, overloaded=full)
    system = "<s>system: " + "a long shared set of rules. " * 20
    # The warm cache holds the prompt plus a long answer: less than half of it is shared, but
    # the whole new prompt is.
    slots = ready(dispatcher, "", system + "<s>user: q1</s>" + "a long answer " * 100)
    dispatcher.submit(FakeJob(system + "<s>user: q2</s>"))
    assert taker(slots) is slots[1]


def test_without_an_idle_instance_jobs_wait_in_order_and_the_queue_is_bounded() -> None:
    dispatcher: Dispatcher[FakeJob] = Dispatcher(2, overloaded=full)
    first, second, cancelled = FakeJob("1"), FakeJob("2"), FakeJob("3")
    dispatcher.submit(first)
    dispatcher.submit(cancelled)
    with pytest.raises(Overloaded, match="2 waiting"):
        dispatcher.submit(FakeJob("refused"))
    cancelled.cancel.set()  # a cancelled job frees its place
    dispatcher.submit(second)
    slot: Slot[FakeJob] = Slot("#0")
    assert dispatcher.next_task(slot) is first
    assert dispatcher.next_task(slot) is second  # the cancelled one is skipped
    assert dispatcher.next_task(slot) is None
    assert dispatcher.waiting == 0


def test_close_returns_what_was_waiting_and_refuses_more() -> None:
    dispatcher: Dispatcher[FakeJob] = Dispatcher(4, overloaded=full)
    job = FakeJob("x")
    dispatcher.submit(job)
    assert dispatcher.close() == [job]
    with pytest.raises(Overloaded):
        dispatcher.submit(FakeJob("y"))
    assert dispatcher.next_task(Slot("#0")) is None
