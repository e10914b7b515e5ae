"""The shipped catalog, loaded as the app loads it, carries what the catalog pages show:
family, capability tags that agree with what each card supports, release dates, both
descriptions and the model's facts."""

from __future__ import annotations

import datetime
import re

import pytest

from modelport.core.catalog import CAPABILITIES, Capability, ModelCard
from modelport.services.catalog import load_catalog
from modelport.settings import load_settings

CARDS = load_catalog(load_settings({})).models
SHIPPED = {
    "local/smollm2-135m-instruct",
    "qwen/qwen3-coder",
    "qwen/qwen3-8b",
    "qwen/qwen3-30b-a3b",
    "qwen/qwen3-235b-a22b",
    "qwen/qwen3-235b-a22b-thinking-2507",
}
CJK = re.compile(r"[\u4e00-\u9fff]")


def expected_tags(card: ModelCard) -> set[Capability]:
    """The tags a card's own settings imply: thinking from its mode, tools and structured
    output from what it supports; "code" is a judgement the card makes (a coding model)."""
    tags: set[Capability] = {"text"}
    if card.thinking in ("hybrid", "always"):
        tags.add("thinking")
    if "tools" in card.supported_parameters:
        tags.add("tools")
    if "response_format" in card.supported_parameters:
        tags.add("structured_output")
    if "code" in card.tags:
        tags.add("code")
    return tags


def test_every_shipped_model_is_in_the_catalog() -> None:
    assert {card.id for card in CARDS} >= SHIPPED


@pytest.mark.parametrize("card", CARDS, ids=lambda card: card.id)
def test_card_has_family_and_consistent_tags(card: ModelCard) -> None:
    assert card.family
    assert len(set(card.tags)) == len(card.tags), "a tag is repeated"
    assert set(card.tags) == expected_tags(card)
    # Listed in the vocabulary's order, so that every page shows them alike.
    assert list(card.tags) == [tag for tag in CAPABILITIES if tag in card.tags]


def test_the_coding_model_is_tagged_code() -> None:
    coder = next(card for card in CARDS if card.id == "qwen/qwen3-coder")
    assert "code" in coder.tags
    assert [card.id for card in CARDS if "code" in card.tags] == ["qwen/qwen3-coder"]


@pytest.mark.parametrize("card", CARDS, ids=lambda card: card.id)
def test_card_dates_are_iso_and_ordered(card: ModelCard) -> None:
    released = datetime.date.fromisoformat(card.released)
    updated = datetime.date.fromisoformat(card.updated)
    assert card.released == released.isoformat()  # "2025-04-29", not a shorter form
    assert card.updated == updated.isoformat()
    assert updated >= released
    # `created` (the OpenAI model list's Unix time) is the release day.
    created = datetime.datetime.fromtimestamp(card.created, datetime.UTC).date()
    assert created == released


@pytest.mark.parametrize("card", CARDS, ids=lambda card: card.id)
def test_card_describes_itself_in_both_languages(card: ModelCard) -> None:
    assert card.description.strip()
    assert card.description_zh.strip()
    assert CJK.search(card.description_zh), "the Chinese description has no Chinese in it"
    assert not CJK.search(card.description), "the English description has Chinese in it"


@pytest.mark.parametrize("card", CARDS, ids=lambda card: card.id)
def test_card_facts(card: ModelCard) -> None:
    facts = card.facts
    assert facts.native_context > 0
    assert facts.parameters
    assert facts.license
    assert facts.layers > 0
    if facts.extended_context:
        assert facts.extended_context > facts.native_context
    # A mixture-of-experts model names its experts and its active parameters, or neither.
    assert bool(facts.experts) == bool(facts.active_parameters)
