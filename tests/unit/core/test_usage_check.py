"""The bounds a reported usage must fit before it is billed (core/usage_check.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from modelport.core.events import Usage
from modelport.core.usage_check import check_usage, lower_bound, prompt_upper_bound


def check(reported: Usage | None, *, relayed: int = 40, limit: int | None = 100) -> tuple:  # type: ignore[type-arg]
    checked = check_usage(
        reported, prompt_bytes=120, prompt_messages=2, relayed_bytes=relayed, limit=limit
    )
    return checked.recount_prompt, checked.recount_completion, checked.problems


def test_an_honest_usage_is_believed_as_it_is() -> None:
    honest = Usage(30, 10, reasoning_tokens=4, cached_tokens=8)
    checked = check_usage(honest, prompt_bytes=120, prompt_messages=2, relayed_bytes=40, limit=100)
    assert checked == (honest, False, False, ())


def test_missing_usage_is_counted() -> None:
    assert check(None) == (True, True, ("usage_missing",))


def test_a_million_prompt_tokens_for_a_short_prompt_is_not_believed() -> None:
    assert check(Usage(1_000_000, 10))[0] is True
    assert "prompt_implausible" in check(Usage(1_000_000, 10))[2]


def test_no_prompt_tokens_for_a_prompt_is_not_believed() -> None:
    assert check(Usage(0, 10))[0] is True


def test_more_output_than_the_limit_is_not_believed() -> None:
    assert check(Usage(30, 101), limit=100) == (False, True, ("completion_above_limit",))
    assert check(Usage(30, 100), limit=100) == (False, False, ())


def test_nothing_for_relayed_output_is_not_believed() -> None:
    assert check(Usage(30, 0), relayed=200) == (False, True, ("completion_implausible",))
    assert check(Usage(30, 0), relayed=0) == (False, False, ())


def test_negative_counts_are_not_believed() -> None:
    assert check(Usage(-5, 10))[0] is True
    assert check(Usage(30, -1))[1] is True


def test_parts_larger_than_their_whole_are_clamped() -> None:
    checked = check_usage(
        Usage(30, 10, reasoning_tokens=50, cached_tokens=-3),
        prompt_bytes=120,
        prompt_messages=2,
        relayed_bytes=40,
        limit=100,
    )
    assert checked.usage == Usage(30, 10, reasoning_tokens=10, cached_tokens=0)
    assert checked.problems == ("parts_clamped",)


@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=1000))
def test_the_prompt_bounds_hold_any_honest_byte_level_count(size: int, messages: int) -> None:
    # A byte-level tokenizer makes at most one token per byte, and at least one per 16.
    assert lower_bound(size) <= max(size, 1 if size else 0) <= prompt_upper_bound(size, messages)
