"""Sealed reasoning: opaque, opened only with the key it was sealed with, refused when
altered."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from modelport.protocols.openai.sealed import PREFIX, seal, unseal

KEY = b"k" * 32


@given(st.text(max_size=2000))
def test_a_sealed_text_opens_with_its_key_only(text: str) -> None:
    sealed = seal(text, KEY)
    assert sealed.startswith(PREFIX)
    assert unseal(sealed, KEY) == text
    assert unseal(sealed, b"x" * 32) is None


def test_the_same_text_seals_differently_and_hides_its_words() -> None:
    first, second = seal("secret plan", KEY), seal("secret plan", KEY)
    assert first != second and "secret" not in first


@given(st.integers(min_value=len(PREFIX), max_value=200), st.sampled_from("AB-_"))
def test_any_altered_character_is_refused(position: int, replacement: str) -> None:
    sealed = seal("a thought worth keeping", KEY)
    position = min(position, len(sealed) - 1)
    if sealed[position] == replacement:
        return
    altered = sealed[:position] + replacement + sealed[position + 1 :]
    assert unseal(altered, KEY) is None


def test_garbage_is_refused_not_raised() -> None:
    for garbage in ("", "mp1.", "mp1.!!!", "xx." + "A" * 100, PREFIX + "A" * 10_000_000):
        assert unseal(garbage, KEY) is None
