"""Everything the routes share, built once at start-up from the settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from modelport.backends.base import Closeable, Route, Startable
from modelport.backends.registry import build_routes
from modelport.core.catalog import Catalog
from modelport.protocols.anthropic.models import encode_model_list as anthropic_model_list
from modelport.protocols.openai.models import encode_model_list
from modelport.services.billing import BillingService
from modelport.services.catalog import load_catalog
from modelport.services.inference import InferenceService
from modelport.services.keys import KeyService
from modelport.services.limits import (
    InProcessRateLimiter,
    KeyEvents,
    LocalKeyEvents,
    RateLimiter,
)
from modelport.settings import Settings
from modelport.store import open_store
from modelport.store.sql import SqlStore

log = logging.getLogger("modelport.http")

HOLD_SWEEP_SECONDS = 60.0


class AppState:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        store: SqlStore,
        keys: KeyService,
        routes: dict[str, list[Route]],
        *,
        limiter: RateLimiter | None = None,
        key_events: KeyEvents | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.billing_store = store
        self.catalog = catalog
        self.keys = keys
        self.routes = routes
        self.limiter = limiter or InProcessRateLimiter()
        self.key_events = key_events or LocalKeyEvents()
        self.inference = InferenceService(catalog, routes)
        self.inference.billing = BillingService(
            store,
            self.limiter,
            self.inference.prompt_size,
            self.inference.output_size,
            hold_ttl=settings.hold_ttl,
        )
        self.models_body = encode_model_list(catalog)
        self.anthropic_models_body = anthropic_model_list(
            card for card in catalog.models if not card.hidden
        )
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def build(cls, settings: Settings) -> AppState:
        catalog = load_catalog(settings)
        store = await asyncio.to_thread(open_store, settings)
        keys = KeyService(store, ttl=settings.key_cache_ttl)
        routes = build_routes(catalog, settings)
        limiter: RateLimiter
        events: KeyEvents
        if settings.redis_url:
            from modelport.store.redis import RedisKeyEvents, RedisRateLimiter

            prefix = settings.redis_prefix
            limiter = RedisRateLimiter(settings.redis_url, prefix=prefix)
            events = RedisKeyEvents(settings.redis_url, channel=f"{prefix}:keys")
        else:
            limiter, events = InProcessRateLimiter(), LocalKeyEvents()
        state = cls(settings, catalog, store, keys, routes, limiter=limiter, key_events=events)
        for model_routes in routes.values():
            for route in model_routes:
                if isinstance(route.backend, Startable):
                    await route.backend.start()
        state._tasks = [
            asyncio.create_task(events.listen(keys.forget), name="key-events"),
            asyncio.create_task(state._release_expired_holds(), name="hold-sweeper"),
        ]
        log.info(
            "serving %d model(s) with backends: %s",
            len(routes),
            ", ".join(sorted(routes)) or "none",
        )
        return state

    async def _release_expired_holds(self) -> None:
        """Give back holds left by processes that died mid-request: at start, then every
        minute (each replica does it; the store makes it safe to race)."""
        billing = self.inference.billing
        assert billing is not None
        while True:
            try:
                await billing.release_expired_holds()
            except Exception:
                log.exception("releasing expired holds failed; retrying in a minute")
            await asyncio.sleep(HOLD_SWEEP_SECONDS)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        await self.limiter.aclose()
        await self.key_events.aclose()
        for model_routes in self.routes.values():
            for route in model_routes:
                if isinstance(route.backend, Closeable):
                    try:
                        await route.backend.aclose()
                    except Exception:
                        log.exception("closing backend %s failed", route.backend.name)
        await asyncio.to_thread(self.store.close)
