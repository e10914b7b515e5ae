"""Everything the routes share, built once at start-up from the settings."""

from __future__ import annotations

import asyncio
import logging

from modelport.backends.base import Closeable, Route, Startable
from modelport.backends.registry import build_routes
from modelport.core.catalog import Catalog
from modelport.protocols.anthropic.models import encode_model_list as anthropic_model_list
from modelport.protocols.openai.models import encode_model_list
from modelport.services.catalog import load_catalog
from modelport.services.inference import InferenceService
from modelport.services.keys import KeyService
from modelport.settings import Settings
from modelport.store import open_store
from modelport.store.sql import SqlStore

log = logging.getLogger("modelport.http")


class AppState:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        store: SqlStore,
        keys: KeyService,
        routes: dict[str, list[Route]],
    ) -> None:
        self.settings = settings
        self.store = store
        self.catalog = catalog
        self.keys = keys
        self.routes = routes
        self.inference = InferenceService(catalog, routes)
        self.models_body = encode_model_list(catalog)
        self.anthropic_models_body = anthropic_model_list(
            card for card in catalog.models if not card.hidden
        )

    @classmethod
    async def build(cls, settings: Settings) -> AppState:
        catalog = load_catalog(settings)
        store = await asyncio.to_thread(open_store, settings)
        keys = KeyService(store, ttl=settings.key_cache_ttl)
        routes = build_routes(catalog, settings)
        state = cls(settings, catalog, store, keys, routes)
        for model_routes in routes.values():
            for route in model_routes:
                if isinstance(route.backend, Startable):
                    await route.backend.start()
        log.info(
            "serving %d model(s) with backends: %s",
            len(routes),
            ", ".join(sorted(routes)) or "none",
        )
        return state

    async def aclose(self) -> None:
        for model_routes in self.routes.values():
            for route in model_routes:
                if isinstance(route.backend, Closeable):
                    try:
                        await route.backend.aclose()
                    except Exception:
                        log.exception("closing backend %s failed", route.backend.name)
        await asyncio.to_thread(self.store.close)
