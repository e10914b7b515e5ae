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
from modelport.http.client_address import ClientAddresses
from modelport.protocols.anthropic.models import encode_model_list as anthropic_model_list
from modelport.protocols.openai.models import encode_model_list
from modelport.services import codes, metrics
from modelport.services.catalog import load_catalog
from modelport.services.circuit import keep_probing
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
GAUGE_SECONDS = 1.0  # how often queue depths and the write-behind backlog are sampled
READY_DATABASE_SECONDS = 2.0  # /readyz waits this long for the database


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
        self.addresses = ClientAddresses(settings.trusted_proxies)
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
        # /v1/models lists the models this server can answer (a backend is configured);
        # `?all=true` the whole catalog, as the website does.
        configured = set(routes)
        self.models_body = encode_model_list(catalog, configured)
        self.all_models_body = encode_model_list(catalog)
        self.anthropic_models_body = anthropic_model_list(
            card for card in catalog.models if not card.hidden and card.id in configured
        )
        self.all_anthropic_models_body = anthropic_model_list(
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
            fallback_url=(
                f"{'https' if settings.tls_cert else 'http'}://{settings.host}:{settings.port}"
            ),
            store=store,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Future[None]] = set()
        self._ping: asyncio.Future[None] | None = None  # /readyz's database ping in flight

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
                # Local models load on first use unless the operator asks to preload them
                # (all of them, or a backend with `preload = true`).
                if isinstance(backend, Startable) and (
                    settings.preload
                    or not isinstance(backend, LlamaCppEngine)
                    or backend.config.preload
                ):
                    await backend.start()
        state._tasks = [
            asyncio.create_task(events.listen(keys.forget), name="key-events"),
            asyncio.create_task(state._keep_credit(), name="credit-leases"),
            asyncio.create_task(state._sample_gauges(), name="gauges"),
        ]
        for guard, probed, interval in state.inference.probed():
            state._tasks.append(
                asyncio.create_task(
                    keep_probing(guard, probed.probe, interval), name=f"probe {guard.name}"
                )
            )
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

    def sample_gauges(self) -> None:
        """Set the gauges that are states rather than events (this process's): requests in
        flight per model and per backend, each in-process engine's queue and the billing
        write-behind backlog. Sampled each GAUGE_SECONDS and at every scrape, rather than
        moved on every request (which cost the request path four lock round trips). Hands
        the request counters' tallies to the metrics library first (services/metrics.py)."""
        metrics.flush()
        in_flight = self.metering.in_flight
        for model in self.routes:
            metrics.in_flight.labels(model).set(in_flight.get(model, 0))
        per_backend: dict[str, int] = {}
        for guard in self.inference.guards():  # backends of one name count together
            per_backend[guard.name] = per_backend.get(guard.name, 0) + guard.in_flight
        for name, count in per_backend.items():
            metrics.backend_in_flight.labels(name).set(count)
        for model_routes in self.routes.values():
            for route in model_routes:
                backend = route.backend
                if isinstance(backend, LlamaCppEngine):
                    metrics.queue_depth.labels(backend.name).set(backend.queue_depth)
        pending, lag = self.store.write_backlog()
        metrics.billing_pending.set(pending)
        metrics.billing_lag.set(lag)

    async def _sample_gauges(self) -> None:
        while True:
            try:
                self.sample_gauges()
            except Exception:
                log.exception("sampling the gauges failed")
            await asyncio.sleep(GAUGE_SECONDS)

    async def readiness(self) -> tuple[bool, dict[str, object]]:
        """Whether this process should get traffic: its database answers, and every
        configured model has a backend whose circuit is not open. With what was found."""
        report: dict[str, object] = {}
        ready = True
        # One ping at a time: a database that stalls holds one thread, not one per probe (a
        # probe every second would otherwise take every thread of the default pool).
        ping = self._ping
        if ping is None or ping.done():
            ping = self._ping = asyncio.ensure_future(asyncio.to_thread(self.store.ping))
            ping.add_done_callback(_retrieved)  # a late failure is not "never retrieved"
        try:
            await asyncio.wait_for(asyncio.shield(ping), READY_DATABASE_SECONDS)
            report["database"] = "ok"
        except TimeoutError:
            ready = False
            report["database"] = f"no answer within {READY_DATABASE_SECONDS:g} s"
        except Exception as exc:
            ready = False
            report["database"] = str(exc) or type(exc).__name__
        down = self.inference.unready()
        if down:
            ready = False
            report["models_unavailable"] = down
        report["status"] = "ready" if ready else "not_ready"
        return ready, report

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
        metrics.flush()  # a stopping worker's last counts, into its metrics files
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


def _retrieved(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
