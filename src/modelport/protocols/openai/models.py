"""The model list in OpenAI shape, enriched OpenRouter-style (context, pricing, parameters)."""

from __future__ import annotations

from typing import Any

import msgspec

from modelport.core.catalog import Catalog, ModelCard


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
        "thinking": card.thinking,
        "tool_format": card.tool_format,
        "configured": card.configured,
    }


def encode_model_list(catalog: Catalog) -> bytes:
    data = [model_object(card) for card in catalog.models if not card.hidden]
    return msgspec.json.encode({"object": "list", "data": data})


def encode_model(card: ModelCard) -> bytes:
    return msgspec.json.encode(model_object(card))
