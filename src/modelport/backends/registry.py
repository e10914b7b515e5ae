"""Building backends from configuration: one generic registry from `kind` to a factory.

Concrete engines are imported lazily, so a server that serves only upstreams never loads
llama.cpp.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from modelport.backends.base import Backend, Route
from modelport.core.catalog import (
    BackendConfig,
    Catalog,
    ConfigError,
    LlamaCppBackend,
    ModelCard,
    OpenAICompatBackend,
)
from modelport.settings import Settings, resolve_secret

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to implementations; an unknown name raises with the list of known ones."""

    def __init__(self, what: str, entries: Mapping[str, T]) -> None:
        self._what = what
        self._entries = dict(entries)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries))
            raise ConfigError(f"unknown {self._what} {name!r}; known: {known}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)


Factory = Callable[[BackendConfig, ModelCard, Settings], Backend]


def _llamacpp(config: BackendConfig, card: ModelCard, settings: Settings) -> Backend:
    from modelport.backends.llamacpp.engine import LlamaCppEngine

    assert isinstance(config, LlamaCppBackend)
    return LlamaCppEngine(config, card, default_threads=settings.llama_threads)


def _openai_compat(config: BackendConfig, card: ModelCard, settings: Settings) -> Backend:
    from modelport.backends.openai_compat import OpenAICompatEngine

    assert isinstance(config, OpenAICompatBackend)
    return OpenAICompatEngine(config, card, api_key=resolve_secret(config.api_key, settings))


BACKEND_KINDS: Registry[Factory] = Registry(
    "backend kind", {"llamacpp": _llamacpp, "openai_compat": _openai_compat}
)


def _kind(config: BackendConfig) -> str:
    return "llamacpp" if isinstance(config, LlamaCppBackend) else "openai_compat"


def build_routes(catalog: Catalog, settings: Settings) -> dict[str, list[Route]]:
    """One route per configured backend of every model card."""
    routes: dict[str, list[Route]] = {}
    for card in catalog.models:
        for config in card.backends:
            backend = BACKEND_KINDS.get(_kind(config))(config, card, settings)
            routes.setdefault(card.id, []).append(
                Route(
                    backend,
                    priority=config.priority,
                    weight=config.weight,
                    circuit_failures=config.circuit_failures,
                    circuit_cooldown=config.circuit_cooldown,
                    max_concurrency=config.max_concurrency,
                    probe_interval=getattr(config, "probe_interval", None),
                )
            )
    return routes
