"""Redis versions of the rate limiter and the key-change events, shared by every replica.

They implement `services.limits.RateLimiter` and `services.limits.KeyEvents` (services see
only those protocols; this module is the driver side and imports nothing from `services`).
The sliding-window rules and arithmetic are the ones `services/limits.py` states, repeated
here in Lua so that deciding and counting is one atomic round trip; the contract suite in
tests/contract/test_rate_limits.py holds both versions to the same answers.

**Failure policy: fail open.** A gateway whose rate limiter cannot reach Redis keeps serving:
`admit` admits and `add_tokens` drops the count, with one warning a minute at most. After a
failure the limiter does not ask Redis again for `pause_after_failure` seconds, so an
unreachable server adds no latency to every request. Commands are never retried: a late
answer is worth less than an open door.

Layout: `{prefix}:ratelimit:{<key id>}:<window>` is a hash with `r` (requests) and `t`
(tokens) for one key and one minute (window = Unix minute), expiring three minutes after its
last write; the braces keep a key's windows in one Redis Cluster slot. Key-change events are plain
pub/sub messages on one channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from modelport.core.errors import RateLimited

log = logging.getLogger("modelport.redis")

WINDOW_MS = 60_000
WINDOW_TTL_MS = 3 * WINDOW_MS  # a window is read as "previous" until two minutes after it began
NEVER_RETRY_S = 60
WARN_EVERY_S = 60.0
FORGET_ALL = "*"

# KEYS: this window's hash, the previous window's. ARGV: rpm or "", tpm or "", milliseconds
# into this window, window length, hash lifetime. Returns {0} when admitted (the request is
# counted if there is an RPM), else {1 for requests or 2 for tokens, wait in ms or -1: never}.
_ADMIT = """
local rpm = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
local elapsed = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local current = redis.call('HMGET', KEYS[1], 'r', 't')
local previous = redis.call('HMGET', KEYS[2], 'r', 't')

local function wait(prev, curr, budget)
  prev = tonumber(prev) or 0
  curr = tonumber(curr) or 0
  if prev * (window - elapsed) + curr * window <= budget then return 0 end
  if budget < 0 then return -1 end
  if curr * window <= budget then
    return window - math.floor((budget - curr * window) / prev) - elapsed
  end
  return 2 * window - math.floor(budget / curr) - elapsed
end

local kind, longest = 0, 0
if rpm then
  local w = wait(previous[1], current[1], (rpm - 1) * window)
  if w ~= 0 then kind, longest = 1, w end
end
if tpm then
  local w = wait(previous[2], current[2], tpm * window - 1)
  if w ~= 0 and (kind == 0 or longest ~= -1 and (w == -1 or w > longest)) then
    kind, longest = 2, w
  end
end
if kind ~= 0 then return {kind, longest} end
if rpm then
  redis.call('HINCRBY', KEYS[1], 'r', 1)
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
return {0}
"""


class _FailOpen:
    """Remembers an outage: skip Redis for a while after a failure, and warn once a minute."""

    def __init__(self, what: str, pause: float) -> None:
        self._what = what
        self._pause = pause
        self._skip_until = -math.inf
        self._next_warning = -math.inf

    def skipping(self) -> bool:
        return time.monotonic() < self._skip_until

    def failed(self, exc: BaseException) -> None:
        moment = time.monotonic()
        self._skip_until = moment + self._pause
        if moment >= self._next_warning:
            self._next_warning = moment + WARN_EVERY_S
            log.warning("%s: Redis unavailable, letting requests through: %s", self._what, exc)


def _no_retry() -> Retry:
    return Retry(NoBackoff(), 0)


def _rate_limited(kind: int, limit: int, wait_ms: int) -> RateLimited:
    retry_s = NEVER_RETRY_S if wait_ms < 0 else max(1, -(-wait_ms // 1000))
    unit = ("request" if kind == 1 else "token") + ("" if limit == 1 else "s")
    return RateLimited(
        f"Rate limit: {limit} {unit} per minute for this key; retry in {retry_s} s",
        retry_after=retry_s,
    )


class RedisRateLimiter:
    """`RateLimiter` whose counters live in Redis, shared by every replica.

    `timeout` bounds connecting and each command (seconds); at most `max_connections` are
    open at once (more concurrent calls wait for one, up to `timeout`). Any failure, a full
    pool included, admits the request and pauses Redis calls for `pause_after_failure`
    seconds. Keys start with `prefix`, so several installations (or test runs) can share one
    server.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "modelport",
        timeout: float = 0.5,
        max_connections: int = 64,
        pause_after_failure: float = 1.0,
    ) -> None:
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=_no_retry(),
        )
        self._redis = Redis.from_pool(pool)
        self._admit = self._redis.register_script(_ADMIT)
        self._prefix = prefix
        self._outage = _FailOpen("rate limits", pause_after_failure)

    def _key(self, key_id: int, window: int) -> str:
        return f"{self._prefix}:ratelimit:{{{key_id}}}:{window}"

    async def admit(
        self, key_id: int, *, rpm: int | None, tpm: int | None, now: float | None = None
    ) -> None:
        if (rpm is None and tpm is None) or self._outage.skipping():
            return
        window, elapsed = divmod(_now_ms(now), WINDOW_MS)
        try:
            verdict = await self._admit(
                keys=[self._key(key_id, window), self._key(key_id, window - 1)],
                args=[
                    "" if rpm is None else rpm,
                    "" if tpm is None else tpm,
                    elapsed,
                    WINDOW_MS,
                    WINDOW_TTL_MS,
                ],
            )
        except (RedisError, OSError) as exc:
            self._outage.failed(exc)
            return
        kind = int(verdict[0])
        if kind == 0:
            return
        limit = rpm if kind == 1 else tpm
        assert limit is not None  # the script refuses only for a limit it was given
        raise _rate_limited(kind, limit, int(verdict[1]))

    async def add_tokens(self, key_id: int, tokens: int, *, now: float | None = None) -> None:
        if tokens <= 0 or self._outage.skipping():
            return
        key = self._key(key_id, _now_ms(now) // WINDOW_MS)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hincrby(key, "t", tokens)
                pipe.pexpire(key, WINDOW_TTL_MS)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._outage.failed(exc)

    async def aclose(self) -> None:
        await self._redis.aclose()


class RedisKeyEvents:
    """`KeyEvents` over Redis pub/sub on `channel`: a publish on any replica reaches every
    replica's listener, its own included.

    Pub/sub keeps nothing for a listener that is not connected, so each time the listener
    (re)subscribes it first calls `on_change(FORGET_ALL)`: whatever it missed, its cache
    starts afresh. It reconnects after a lost connection with jittered exponential backoff
    from `min_backoff` to `max_backoff` seconds, and pings the server after `ping_interval`
    seconds of silence, so a connection that died without closing is noticed too. A failed
    publish is logged, not raised: the change is already stored, and other replicas' caches
    expire on their own TTL.
    """

    def __init__(
        self,
        url: str,
        *,
        channel: str = "modelport:keys",
        timeout: float = 2.0,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
        ping_interval: float = 10.0,
    ) -> None:
        pool = ConnectionPool.from_url(
            url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=_no_retry()
        )
        self._redis = Redis.from_pool(pool)
        self._channel = channel
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._ping_interval = ping_interval
        self._closed = asyncio.Event()

    async def publish(self, key_hash_or_all: str) -> None:
        try:
            await self._redis.publish(self._channel, key_hash_or_all)
        except (RedisError, OSError) as exc:
            log.warning("key change %r not announced: Redis unavailable: %s", key_hash_or_all, exc)

    async def listen(self, on_change: Callable[[str], None]) -> None:
        """Deliver announcements until cancelled or until `aclose`."""
        failures = 0

        def subscribed() -> None:
            nonlocal failures
            if failures:
                log.info("key change events: Redis is back")
            failures = 0

        while not self._closed.is_set():
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                await self._relay(pubsub, on_change, subscribed)
            except (RedisError, OSError) as exc:
                if self._closed.is_set():
                    return
                if failures == 0:
                    log.warning("key change events: no Redis connection, retrying: %s", exc)
                failures += 1
            finally:
                await _close_quietly(pubsub)
            if failures:
                delay = min(self._max_backoff, self._min_backoff * 2 ** (failures - 1))
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _relay(
        self, pubsub: PubSub, on_change: Callable[[str], None], subscribed: Callable[[], None]
    ) -> None:
        """Pass messages to `on_change` until the connection fails or the events close."""
        loop = asyncio.get_running_loop()
        heard = loop.time()
        while not self._closed.is_set():
            message = await pubsub.get_message(timeout=self._ping_interval)
            if message is None:
                if loop.time() - heard >= 2 * self._ping_interval:
                    raise RedisConnectionError("no answer to PING")
                await pubsub.ping()
                continue
            heard = loop.time()
            kind = message["type"]
            if kind == "subscribe":
                subscribed()
                _deliver(on_change, FORGET_ALL)
            elif kind == "message":
                data = message["data"]
                text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
                _deliver(on_change, text)

    async def aclose(self) -> None:
        self._closed.set()
        await self._redis.aclose()


def _deliver(on_change: Callable[[str], None], text: str) -> None:
    try:
        on_change(text)
    except Exception:  # a faulty callback must not stop the listener
        log.exception("key change listener failed on %r", text)


async def _close_quietly(pubsub: PubSub) -> None:
    with contextlib.suppress(RedisError, OSError):
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated


def _now_ms(now: float | None) -> int:
    return math.floor((time.time() if now is None else now) * 1000)
