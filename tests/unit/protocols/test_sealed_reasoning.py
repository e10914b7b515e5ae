"""Sealed reasoning: opaque, opened only with the key it was sealed with, refused when
altered."""

from __future__ import annotations

import base64

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


def test_another_spelling_of_the_same_bytes_is_refused() -> None:
    # The character before the padding carries bits the decoder drops: changing only those
    # decodes to the same bytes (the hypothesis test above found it now and then).
    sealed = seal("a thought worth keeping", KEY)
    body = sealed.rstrip("=")
    assert len(body) < len(sealed)  # this length is padded
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    same_bytes = [
        body[:-1] + letter + sealed[len(body) :]
        for letter in alphabet
        if letter != body[-1]
        and base64.urlsafe_b64decode(body[len(PREFIX) : -1] + letter + sealed[len(body) :])
        == base64.urlsafe_b64decode(sealed[len(PREFIX) :])
    ]
    assert same_bytes  # there are such spellings
    assert all(unseal(spelling, KEY) is None for spelling in same_bytes)
    # and characters the decoder would skip
    assert unseal(sealed[:10] + "\n" + sealed[10:], KEY) is None
    assert unseal(sealed, KEY) == "a thought worth keeping"


def test_garbage_is_refused_not_raised() -> None:
    for garbage in ("", "mp1.", "mp1.!!!", "xx." + "A" * 100, PREFIX + "A" * 10_000_000):
        assert unseal(garbage, KEY) is None
