"""Loading the model catalog: the shipped data file merged with the operator's entries."""

from __future__ import annotations

import tomllib
from importlib import resources

from modelport.core.catalog import Catalog, ConfigError, ModelCard, build_catalog
from modelport.core.errors import ModelNotFound, clip
from modelport.settings import Settings


def load_catalog(settings: Settings) -> Catalog:
    text = resources.files("modelport").joinpath("data", "catalog.toml").read_text("utf-8")
    try:
        shipped = tomllib.loads(text)["models"]
    except (tomllib.TOMLDecodeError, KeyError) as exc:
        raise ConfigError(f"the shipped catalog is broken: {exc}") from None
    return build_catalog(shipped, settings.models)


def resolve_model(catalog: Catalog, model_id: str) -> ModelCard:
    """Find a card by its id, or by the part after the vendor prefix when that is unique
    ("qwen3-8b" finds "qwen/qwen3-8b"), as clients configured with bare names send."""
    card = catalog.get(model_id)
    if card is not None:
        return card
    matches = [c for c in catalog.models if c.id.rsplit("/", 1)[-1] == model_id]
    if len(matches) == 1:
        return matches[0]
    raise ModelNotFound(
        f"The model '{clip(model_id)}' does not exist. GET /v1/models lists the available models.",
        param="model",
    )
