"""Everything the routes share, built once at start-up from the settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from modelport.backends.base import Closeable, Route, Startable
from modelport.backends.llamacpp import LlamaCppEngine
from modelport.backends.registry import build_routes
from modelport.core.catalog import Catalog
from modelport.protocols.anthropic.models import encode_model_list as anthropic_model_list
from modelport.protocols.openai.models import encode_model_list
from modelport.services import codes
from modelport.services.catalog import load_catalog
from modelport.services.console import ConsoleAccounts
from modelport.services.credit import CreditBook, process_owner
from modelport.services.inference import InferenceService
from modelport.services.keys import KeyService
from modelport.services.limits import (
    InProcessRateLimiter,
    KeyEvents,
    LocalKeyEvents,
    RateLimiter,
)
from modelport.services.metering import Metering
from modelport.settings import Settings
from modelport.store import open_store
from modelport.store.sql import SqlStore
from modelport.web.site import Site

log = logging.getLogger("modelport.http")

LEASE_SWEEP_SECONDS = 60.0  # how often each replica gives back the leases of dead processes


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
        credit_events: KeyEvents | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.billing_store = store
        self.catalog = catalog
        self.keys = keys
        self.routes = routes
        self.limiter = limiter or InProcessRateLimiter()
        self.key_events = key_events or LocalKeyEvents()
        # Over Redis, a replica short of an account's credit asks the others to give theirs
        # back (services/credit.py); a lone process has no one to ask.
        self.credit_events = credit_events
        self.inference = InferenceService(catalog, routes)
        self.credit = CreditBook(
            store,
            owner=process_owner(),
            ttl=settings.hold_ttl,
            reclaim=self._ask_for_credit if credit_events is not None else None,
        )
        self.metering = Metering(self.inference, store, self.credit, self.limiter)
        self.models_body = encode_model_list(catalog)
        self.anthropic_models_body = anthropic_model_list(
            card for card in catalog.models if not card.hidden
        )
        # Failed top-up code redemptions per account, shared by the API and the console.
        self.code_throttle = codes.new_throttle()
        self.console = ConsoleAccounts(
            store, policy=settings.signup, signup_credit=settings.signup_credit
        )
        self.site = Site(
            catalog,
            public_url=settings.public_url,
            fallback_url=f"http://{settings.host}:{settings.port}",
            store=store,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Future[None]] = set()

    @classmethod
    async def build(cls, settings: Settings) -> AppState:
        catalog = load_catalog(settings)
        store = await asyncio.to_thread(open_store, settings)
        keys = KeyService(store, ttl=settings.key_cache_ttl)
        routes = build_routes(catalog, settings)
        limiter: RateLimiter
        events: KeyEvents
        credit_events: KeyEvents | None = None
        if settings.redis_url:
            from modelport.store.redis import RedisKeyEvents, RedisRateLimiter

            prefix = settings.redis_prefix
            limiter = RedisRateLimiter(settings.redis_url, prefix=prefix)
            events = RedisKeyEvents(settings.redis_url, channel=f"{prefix}:keys")
            credit_events = RedisKeyEvents(settings.redis_url, channel=f"{prefix}:credit")
        else:
            limiter, events = InProcessRateLimiter(), LocalKeyEvents()
        state = cls(
            settings,
            catalog,
            store,
            keys,
            routes,
            limiter=limiter,
            key_events=events,
            credit_events=credit_events,
        )
        for model_routes in routes.values():
            for route in model_routes:
                backend = route.backend
                # Local models load on first use unless the operator asks to preload them.
                if isinstance(backend, Startable) and (
                    settings.preload or not isinstance(backend, LlamaCppEngine)
                ):
                    await backend.start()
        state._tasks = [
            asyncio.create_task(events.listen(keys.forget), name="key-events"),
            asyncio.create_task(state._keep_credit(), name="credit-leases"),
        ]
        if credit_events is not None:
            state._tasks.append(
                asyncio.create_task(credit_events.listen(state._credit_asked), name="credit")
            )
        log.info(
            "serving %d model(s) with backends: %s",
            len(routes),
            ", ".join(sorted(routes)) or "none",
        )
        return state

    async def _ask_for_credit(self, account_id: int) -> None:
        assert self.credit_events is not None
        await self.credit_events.publish(str(account_id))

    def _credit_asked(self, message: str) -> None:
        """Another replica is short of an account's credit: give back what ours do not use."""
        if message.isdigit():
            task = asyncio.ensure_future(self.credit.give_back(int(message)))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _keep_credit(self) -> None:
        """Renew this process's credit leases (a heartbeat, every quarter of their TTL), give
        back idle ones, and give back the leases of processes that died: at start, then every
        minute (each replica does it; the store makes it safe to race)."""
        heartbeat = max(self.settings.hold_ttl / 4, 0.5)
        swept = float("-inf")
        while True:
            try:
                await self.credit.tick()
                now = asyncio.get_running_loop().time()
                if now - swept >= LEASE_SWEEP_SECONDS:
                    swept = now
                    released = await asyncio.to_thread(
                        self.store.release_expired_leases, datetime.now(UTC)
                    )
                    if released:
                        log.warning(
                            "gave back %d expired credit lease(s) of processes that stopped",
                            released,
                        )
            except Exception:
                log.exception("keeping credit leases failed; retrying")
            await asyncio.sleep(heartbeat)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        try:
            await self.metering.aclose()  # write what is pending, give back every lease
        except Exception:
            log.exception("closing the metering stage failed")
        await self.limiter.aclose()
        if self.credit_events is not None:
            await self.credit_events.aclose()
        await self.key_events.aclose()
        await self.site.aclose()
        for model_routes in self.routes.values():
            for route in model_routes:
                if isinstance(route.backend, Closeable):
                    try:
                        await route.backend.aclose()
                    except Exception:
                        log.exception("closing backend %s failed", route.backend.name)
        await asyncio.to_thread(self.store.close)
