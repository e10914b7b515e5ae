"""Money in nano-yuan and the catalog: exact prices, merging the operator's file."""

from __future__ import annotations

import tomllib
from importlib import resources

import msgspec
import pytest

from modelport.core.catalog import (
    ConfigError,
    DefaultParameters,
    LlamaCppBackend,
    OpenAICompatBackend,
    build_catalog,
    with_default_sampling,
)
from modelport.core.money import format_cny, nano_per_token
from modelport.core.types import ChatRequest, Message, Reasoning, Sampling, TextPart

SEED_PRICES = {
    "qwen/qwen3-coder": ("0.00375", "0.015", 3750, 15000),
    "qwen/qwen3-8b": ("0.0005", "0.00175", 500, 1750),
    "qwen/qwen3-30b-a3b": ("0.0012", "0.00375", 1200, 3750),
    "qwen/qwen3-235b-a22b": ("0.0025", "0.00675", 2500, 6750),
    "qwen/qwen3-235b-a22b-thinking-2507": ("0.00275", "0.0095", 2750, 9500),
}


def shipped() -> list[dict[str, object]]:
    text = resources.files("modelport").joinpath("data", "catalog.toml").read_text()
    models: list[dict[str, object]] = tomllib.loads(text)["models"]
    return models


def test_prices_are_exact_integers_per_token() -> None:
    assert nano_per_token("0.00175") == 1750
    assert nano_per_token("0") == 0
    with pytest.raises(ValueError, match="whole number"):
        nano_per_token("0.0000001")
    with pytest.raises(ValueError, match="decimal"):
        nano_per_token("cheap")
    with pytest.raises(ValueError, match="non-negative"):
        nano_per_token("-1")


def test_format_cny() -> None:
    assert format_cny(1750) == "0.00000175"
    assert format_cny(10**9) == "1"
    assert format_cny(1_500_000_000) == "1.5"
    assert format_cny(-5) == "-0.000000005"


def test_shipped_catalog_has_the_seed_models_with_their_prices() -> None:
    catalog = build_catalog(shipped())
    for model_id, (per_1k_in, per_1k_out, nano_in, nano_out) in SEED_PRICES.items():
        card = catalog.get(model_id)
        assert card is not None, model_id
        assert (card.pricing.input_per_1k, card.pricing.output_per_1k) == (per_1k_in, per_1k_out)
        assert (card.pricing.input_nano, card.pricing.output_nano) == (nano_in, nano_out)
        assert card.context_length == (262144 if model_id == "qwen/qwen3-coder" else 131072)
        assert not card.configured
    assert catalog.get("qwen/qwen3-coder").thinking == "none"  # type: ignore[union-attr]
    assert catalog.get("qwen/qwen3-8b").thinking == "hybrid"  # type: ignore[union-attr]
    thinking = catalog.get("qwen/qwen3-235b-a22b-thinking-2507")
    assert thinking is not None
    assert thinking.thinking == "always"
    local = catalog.get("local/smollm2-135m-instruct")
    assert local is not None
    assert local.configured
    assert local.pricing.cost_nano(1000, 1000) == 0
    assert isinstance(local.backends[0], LlamaCppBackend)


def test_cost_is_prompt_times_input_plus_completion_times_output() -> None:
    card = build_catalog(shipped()).get("qwen/qwen3-8b")
    assert card is not None
    assert card.pricing.cost_nano(1000, 2000) == 1000 * 500 + 2000 * 1750


def test_operator_overrides_merge_by_id() -> None:
    catalog = build_catalog(
        shipped(),
        [
            {
                "id": "qwen/qwen3-8b",
                "pricing": {"output_per_1k": "0.002"},
                "backends": [{"kind": "openai_compat", "url": "http://127.0.0.1:9/v1"}],
            },
            {"id": "acme/new", "name": "New", "description": "d", "context_length": 4096},
        ],
    )
    card = catalog.get("qwen/qwen3-8b")
    assert card is not None
    assert card.pricing.input_per_1k == "0.0005"  # kept from the shipped entry
    assert card.pricing.output_per_1k == "0.002"
    assert isinstance(card.backends[0], OpenAICompatBackend)
    assert card.description.startswith("The small dense member")
    assert catalog.get("acme/new") is not None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"id": "qwen/qwen3-8b", "pricing": {"input_per_1k": "0.00000001"}}, "whole number"),
        ({"id": "qwen/qwen3-8b", "backends": [{"kind": "tpu", "url": "x"}]}, "kind"),
        ({"id": "qwen/qwen3-8b", "backends": [{"kind": "llamacpp"}]}, "path"),
        ({"id": "qwen/qwen3-8b", "contxt_length": 5}, "contxt_length"),
        ({"id": "x/new", "name": "n"}, "description"),
        ({"name": "no id"}, "id"),
    ],
)
def test_bad_operator_entries_fail_at_start_up_naming_the_problem(
    override: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build_catalog(shipped(), [override])


def test_default_sampling_fills_only_unset_values_for_the_mode_in_use() -> None:
    catalog = build_catalog(shipped())
    hybrid = catalog.get("qwen/qwen3-8b")
    thinking_only = catalog.get("qwen/qwen3-235b-a22b-thinking-2507")
    local = catalog.get("local/smollm2-135m-instruct")
    assert hybrid is not None and thinking_only is not None and local is not None
    request = ChatRequest(
        model="qwen/qwen3-8b",
        messages=(Message("user", (TextPart("hi"),)),),
        sampling=Sampling(temperature=0.2),
    )
    filled = with_default_sampling(hybrid, request).sampling
    assert (filled.temperature, filled.top_p, filled.top_k, filled.min_p) == (0.2, 0.95, 20, 0)
    off = msgspec.structs.replace(request, reasoning=Reasoning(effort="none"))
    assert with_default_sampling(hybrid, off).sampling.top_p == 0.8
    disabled = msgspec.structs.replace(request, reasoning=Reasoning(enabled=False))
    assert with_default_sampling(hybrid, disabled).sampling.top_p == 0.8
    # A model that always thinks ignores "off"; the local card's defaults fill only what is
    # unset; a model without defaults is left alone.
    assert with_default_sampling(thinking_only, off).sampling.top_p == 0.95
    local_filled = with_default_sampling(local, request).sampling
    assert (local_filled.temperature, local_filled.top_p) == (0.2, 0.9)
    bare = msgspec.structs.replace(local, default_parameters=DefaultParameters())
    assert with_default_sampling(bare, request) is request
    assert hybrid.thinks(Reasoning()) and not hybrid.thinks(Reasoning(effort="none"))
