"""The model list in OpenAI shape, enriched OpenRouter-style (context, pricing, parameters)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import msgspec

from modelport.core.catalog import Catalog, ModelCard, SamplingDefaults
from modelport.core.types import Reasoning


def model_object(card: ModelCard) -> dict[str, Any]:
    per_token_in, per_token_out = card.pricing.per_token_strings()
    return {
        "id": card.id,
        "object": "model",
        "created": card.created,
        "owned_by": card.owned_by,
        "name": card.name,
        "description": card.description,
        "context_length": card.context_length,
        "pricing": {
            "currency": "CNY",
            "input_per_1k": card.pricing.input_per_1k,
            "output_per_1k": card.pricing.output_per_1k,
            "prompt": per_token_in,
            "completion": per_token_out,
        },
        "top_provider": {
            "context_length": card.context_length,
            "max_completion_tokens": card.max_output_tokens,
        },
        "supported_parameters": list(card.supported_parameters),
        # What the model samples with when a request leaves a value unset, OpenRouter-style,
        # for its default mode; both modes of a hybrid model in default_parameters_by_mode.
        "default_parameters": _defaults(card.sampling_defaults(Reasoning())),
        "default_parameters_by_mode": {
            mode: _defaults(values)
            for mode, values in (
                ("thinking", card.default_parameters.thinking),
                ("non_thinking", card.default_parameters.non_thinking),
            )
            if values is not None
        },
        "thinking": card.thinking,
        "tool_format": card.tool_format,
        "configured": card.configured,
    }


def _defaults(values: SamplingDefaults | None) -> dict[str, Any]:
    return msgspec.to_builtins(values) if values is not None else {}


def encode_model_list(catalog: Catalog, only: Collection[str] | None = None) -> bytes:
    """The catalog's visible cards; only those whose ids are in `only`, when given."""
    data = [
        model_object(card)
        for card in catalog.models
        if not card.hidden and (only is None or card.id in only)
    ]
    return msgspec.json.encode({"object": "list", "data": data})


def encode_model(card: ModelCard) -> bytes:
    return msgspec.json.encode(model_object(card))
