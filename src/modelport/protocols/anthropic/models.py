"""The model list in Anthropic shape: `{"data": [{"type": "model", …}], "has_more", "first_id",
"last_id"}`. Pure: imports only core, msgspec and stdlib."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import msgspec

from modelport.core.catalog import ModelCard


def created_at(card: ModelCard) -> str:
    """The card's `created` (Unix seconds, 0 when unknown) as an RFC 3339 UTC time."""
    return datetime.fromtimestamp(card.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def model_object(card: ModelCard) -> dict[str, Any]:
    return {
        "type": "model",
        "id": card.id,
        "display_name": card.name,
        "created_at": created_at(card),
        # Optional in Anthropic's model object; they tell a client the real limits.
        "max_input_tokens": card.context_length,
        "max_tokens": card.max_output_tokens,
        "lifecycle": "active",
    }


def encode_model(card: ModelCard) -> bytes:
    return msgspec.json.encode(model_object(card))


def encode_model_list(cards: Iterable[ModelCard]) -> bytes:
    """One page holding every card given (the caller leaves out hidden ones)."""
    data = [model_object(card) for card in cards]
    return msgspec.json.encode(
        {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )
