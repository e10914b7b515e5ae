"""One contract, every implementation: the in-process and the Redis rate limiters must give the
same answers, and both key-change event buses must deliver. The Redis side runs against a real
server (MODELPORT_TEST_REDIS_URL, default redis://127.0.0.1:6379/0) with a unique key prefix
per test, deleted afterwards; it is skipped, saying why, only when no server answers.

Times are injected: T is the start of a one-minute window, so `T + 30` is half-way through it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
import redis
from redis.asyncio import Redis

from modelport.core.errors import RateLimited
from modelport.services.limits import (
    FORGET_ALL,
    InProcessRateLimiter,
    KeyEvents,
    LocalKeyEvents,
    RateLimiter,
)
from modelport.store.redis import RedisKeyEvents, RedisRateLimiter

REDIS_URL = os.environ.get("MODELPORT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
T = 6_000_000.0  # a window boundary (100,000 minutes after the epoch)
KEY = 7


@pytest.fixture(scope="session")
def redis_server() -> str:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        pytest.skip(f"no Redis server answers at {REDIS_URL} ({exc}); set MODELPORT_TEST_REDIS_URL")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """A key prefix no other test (or parallel run) uses; its keys are deleted afterwards."""
    unique = f"modelport-test-{uuid.uuid4().hex}"
    yield unique
    if "redis_server" in request.fixturenames:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            stale = list(client.scan_iter(match=f"{unique}:*"))
            if stale:
                client.delete(*stale)
        finally:
            client.close()


@dataclass
class Subject:
    """A limiter under test, with what the contract needs to know about its storage."""

    limiter: RateLimiter
    stored: Callable[[], Awaitable[int]]  # how many keys' counters are stored


@pytest_asyncio.fixture(params=["in_process", "redis"])
async def subject(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[Subject]:
    if request.param == "in_process":
        local = InProcessRateLimiter()

        async def stored_locally() -> int:
            return len(local)

        yield Subject(local, stored_locally)
        await local.aclose()
        return
    url = request.getfixturevalue("redis_server")
    shared = RedisRateLimiter(url, prefix=prefix)
    client = Redis.from_url(url)

    async def stored_in_redis() -> int:
        return len({key async for key in client.scan_iter(match=f"{prefix}:*")})

    yield Subject(shared, stored_in_redis)
    await shared.aclose()
    await client.aclose()


async def admitted(limiter: RateLimiter, attempts: int, at: float, **limits: int | None) -> int:
    """How many of `attempts` requests at `at` are admitted."""
    count = 0
    for _ in range(attempts):
        try:
            await limiter.admit(KEY, rpm=limits.get("rpm"), tpm=limits.get("tpm"), now=at)
        except RateLimited:
            continue
        count += 1
    return count


async def refusal(limiter: RateLimiter, at: float, **limits: int | None) -> RateLimited:
    with pytest.raises(RateLimited) as raised:
        await limiter.admit(KEY, rpm=limits.get("rpm"), tpm=limits.get("tpm"), now=at)
    return raised.value


async def assert_retry_after_is_exact(
    limiter: RateLimiter, refused: RateLimited, at: float, **limits: int | None
) -> None:
    """A client that waits the advised seconds gets in, and not a second earlier."""
    assert refused.retry_after is not None
    await refusal(limiter, at + refused.retry_after - 1, **limits)
    await limiter.admit(
        KEY, rpm=limits.get("rpm"), tpm=limits.get("tpm"), now=at + refused.retry_after
    )


# ------------------------------------------------------------------------------------ requests


@pytest.mark.asyncio
async def test_rpm_admits_exactly_the_limit_then_says_when_to_retry(subject: Subject) -> None:
    limiter = subject.limiter
    assert await admitted(limiter, 5, T + 10, rpm=5) == 5
    refused = await refusal(limiter, T + 10, rpm=5)
    assert refused.status == 429
    # At T + 72 the five requests of the previous minute weigh 48/60 (4 requests): room for one.
    assert refused.retry_after == 62
    assert refused.message == "Rate limit: 5 requests per minute for this key; retry in 62 s"
    await assert_retry_after_is_exact(limiter, refused, T + 10, rpm=5)


@pytest.mark.asyncio
async def test_refused_requests_do_not_count(subject: Subject) -> None:
    limiter = subject.limiter
    assert await admitted(limiter, 3, T, rpm=3) == 3
    assert await admitted(limiter, 50, T + 1, rpm=3) == 0
    # Two minutes on, only admitted requests could weigh anything, and none do any more.
    assert await admitted(limiter, 5, T + 120, rpm=3) == 3


@pytest.mark.asyncio
async def test_the_previous_minute_counts_by_how_much_of_it_is_still_in_the_window(
    subject: Subject,
) -> None:
    limiter = subject.limiter
    assert await admitted(limiter, 10, T + 5, rpm=10) == 10
    # 90 s after the window began, half the previous window lies within the last minute.
    assert await admitted(limiter, 10, T + 90, rpm=10) == 5


@pytest.mark.asyncio
async def test_a_burst_across_a_window_edge_is_not_doubled(subject: Subject) -> None:
    limiter = subject.limiter
    assert await admitted(limiter, 10, T + 59.5, rpm=10) == 10
    assert await admitted(limiter, 10, T + 60, rpm=10) == 0
    assert await admitted(limiter, 10, T + 66, rpm=10) == 1  # the old burst now weighs 9


@pytest.mark.asyncio
async def test_a_limit_of_one_request_is_worded_in_the_singular(subject: Subject) -> None:
    await subject.limiter.admit(KEY, rpm=1, tpm=None, now=T)
    refused = await refusal(subject.limiter, T, rpm=1)
    assert refused.message.startswith("Rate limit: 1 request per minute for this key; retry in")


# -------------------------------------------------------------------------------------- tokens


@pytest.mark.asyncio
async def test_tpm_counts_finished_requests_tokens_and_frees_up(subject: Subject) -> None:
    limiter = subject.limiter
    await limiter.admit(KEY, rpm=None, tpm=1000, now=T)
    await limiter.add_tokens(KEY, 999, now=T + 1)
    await limiter.admit(KEY, rpm=None, tpm=1000, now=T + 2)  # one token of budget is left
    await limiter.add_tokens(KEY, 101, now=T + 3)
    refused = await refusal(limiter, T + 4, tpm=1000)
    assert refused.status == 429
    assert refused.message == (
        f"Rate limit: 1000 tokens per minute for this key; retry in {refused.retry_after:g} s"
    )
    assert refused.retry_after is not None and 60 < refused.retry_after < 120
    await assert_retry_after_is_exact(limiter, refused, T + 4, tpm=1000)


@pytest.mark.asyncio
async def test_the_limit_that_frees_up_last_is_the_one_reported(subject: Subject) -> None:
    limiter = subject.limiter
    assert await admitted(limiter, 2, T, rpm=2, tpm=100) == 2
    await limiter.add_tokens(KEY, 1000, now=T)
    refused = await refusal(limiter, T + 1, rpm=2, tpm=100)
    assert "100 tokens per minute" in refused.message
    await assert_retry_after_is_exact(limiter, refused, T + 1, rpm=2, tpm=100)


# ------------------------------------------------------------------------------ keys and costs


@pytest.mark.asyncio
async def test_keys_are_limited_independently(subject: Subject) -> None:
    limiter = subject.limiter
    other = KEY + 1
    for _ in range(3):
        await limiter.admit(other, rpm=3, tpm=None, now=T)
    await limiter.add_tokens(other, 5000, now=T)
    with pytest.raises(RateLimited):
        await limiter.admit(other, rpm=3, tpm=None, now=T)
    with pytest.raises(RateLimited):
        await limiter.admit(other, rpm=None, tpm=1000, now=T)
    assert await admitted(limiter, 3, T, rpm=3, tpm=1000) == 3


@pytest.mark.asyncio
async def test_a_key_without_limits_is_always_admitted_and_stores_nothing(
    subject: Subject,
) -> None:
    assert await admitted(subject.limiter, 500, T) == 500
    assert await subject.stored() == 0


@pytest.mark.asyncio
async def test_concurrent_requests_never_exceed_the_limit(subject: Subject) -> None:
    limiter = subject.limiter
    results = await asyncio.gather(
        *(limiter.admit(KEY, rpm=10, tpm=None, now=T) for _ in range(100)),
        return_exceptions=True,
    )
    assert results.count(None) == 10
    assert all(isinstance(r, RateLimited) for r in results if r is not None)


@pytest.mark.asyncio
async def test_implementations_agree_on_every_answer(redis_server: str, prefix: str) -> None:
    """The same random traffic gets the same answers, word for word, from both."""
    local = InProcessRateLimiter()
    shared = RedisRateLimiter(redis_server, prefix=prefix)
    rng = random.Random(20260101)
    now = T + rng.uniform(0, 60)
    answers: dict[str, list[str]] = {"local": [], "redis": []}
    try:
        for _ in range(300):
            now += rng.choice([0, 0, 0.25, 1, 7, 20, 45])
            key = rng.randint(1, 3)
            rpm, tpm = ((None, 300), (2, None), (5, 900))[key - 1]
            tokens = rng.randint(0, 200) if rng.random() < 0.3 else None
            for name, limiter in (("local", local), ("redis", shared)):
                if tokens is not None:
                    await limiter.add_tokens(key, tokens, now=now)
                    answers[name].append("tokens")
                    continue
                try:
                    await limiter.admit(key, rpm=rpm, tpm=tpm, now=now)
                    answers[name].append("admitted")
                except RateLimited as exc:
                    answers[name].append(f"{exc.message} / {exc.retry_after}")
    finally:
        await local.aclose()
        await shared.aclose()
    assert answers["local"] == answers["redis"]
    assert any(answer.startswith("Rate limit") for answer in answers["local"])


# ----------------------------------------------------------------------------- Redis replicas


@pytest.mark.asyncio
async def test_replicas_share_one_limit(redis_server: str, prefix: str) -> None:
    first = RedisRateLimiter(redis_server, prefix=prefix)
    second = RedisRateLimiter(redis_server, prefix=prefix)
    try:
        results = await asyncio.gather(
            *(
                replica.admit(KEY, rpm=10, tpm=None, now=T)
                for _ in range(50)
                for replica in (first, second)
            ),
            return_exceptions=True,
        )
        assert results.count(None) == 10
        await first.add_tokens(KEY, 2000, now=T)
        with pytest.raises(RateLimited, match="1000 tokens per minute"):
            await second.admit(KEY, rpm=None, tpm=1000, now=T)
    finally:
        await first.aclose()
        await second.aclose()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.asyncio
async def test_a_limiter_that_cannot_reach_redis_lets_requests_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter = RedisRateLimiter(f"redis://127.0.0.1:{closed_port()}/0", pause_after_failure=0)
    try:
        with caplog.at_level(logging.WARNING, logger="modelport.redis"):
            assert await admitted(limiter, 5, T, rpm=1, tpm=1) == 5
            await limiter.add_tokens(KEY, 100, now=T)
    finally:
        await limiter.aclose()
    warnings = [r for r in caplog.records if "Redis unavailable" in r.getMessage()]
    assert len(warnings) == 1  # once a minute, not once a request


class Outage:
    """A TCP relay in front of Redis that can drop every connection and refuse new ones
    (`go_down`), or go silent: keep connections open but lose everything sent (`frozen`)."""

    def __init__(self, target: str) -> None:
        self._target = redis.connection.parse_url(target)
        self.up = True
        self.frozen = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/{self._target.get('db', 0)}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        host, port = self._target.get("host", "127.0.0.1"), self._target.get("port", 6379)
        up_reader, up_writer = await asyncio.open_connection(host, port)
        self._writers.update((writer, up_writer))
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                if self.frozen:
                    continue
                sink.write(data)
                await sink.drain()
        except OSError:
            pass
        finally:
            sink.close()

    def go_down(self) -> None:
        self.up = False
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def aclose(self) -> None:
        self.go_down()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest_asyncio.fixture
async def outage(redis_server: str) -> AsyncIterator[Outage]:
    relay = Outage(redis_server)
    yield relay
    await relay.aclose()


@pytest.mark.asyncio
async def test_limits_come_back_with_redis(outage: Outage, prefix: str) -> None:
    limiter = RedisRateLimiter(await outage.start(), prefix=prefix, pause_after_failure=0)
    try:
        assert await admitted(limiter, 3, T, rpm=2) == 2
        outage.go_down()
        assert await admitted(limiter, 3, T, rpm=2) == 3
        outage.up = True
        assert await admitted(limiter, 3, T, rpm=2) == 0  # the counts survived the outage
    finally:
        await limiter.aclose()


# ---------------------------------------------------------------------------------- key events


async def eventually(condition: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting until {what}")


@dataclass
class Bus:
    """Two ends of a key-change bus: `publisher` and `listener` (one object when in-process)."""

    publisher: KeyEvents
    listener: KeyEvents
    announces_subscription: bool  # whether listening begins with FORGET_ALL


@pytest_asyncio.fixture(params=["local", "redis"])
async def bus(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[Bus]:
    if request.param == "local":
        local = LocalKeyEvents()
        yield Bus(local, local, announces_subscription=False)
        await local.aclose()
        return
    url = request.getfixturevalue("redis_server")
    channel = f"{prefix}:keys"
    publisher = RedisKeyEvents(url, channel=channel)
    listener = RedisKeyEvents(url, channel=channel)
    yield Bus(publisher, listener, announces_subscription=True)
    await publisher.aclose()
    await listener.aclose()


async def start_listening(bus: Bus, on_change: Callable[[str], None]) -> asyncio.Task[None]:
    """Start a listener and return once it is listening (a change published before that is
    not heard, by design); on Redis, its subscription's FORGET_ALL is already delivered."""
    calls: list[str] = []

    def record(message: str) -> None:
        calls.append(message)
        on_change(message)

    task = asyncio.create_task(bus.listener.listen(record))
    await asyncio.sleep(0)
    if bus.announces_subscription:
        await eventually(lambda: calls == [FORGET_ALL], "the listener subscribed")
    return task


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest_asyncio.fixture
async def heard(bus: Bus) -> AsyncIterator[list[str]]:
    """What a listener hears after it has started listening."""
    messages: list[str] = []
    task = await start_listening(bus, messages.append)
    messages.clear()
    yield messages
    await stop(task)


@pytest.mark.asyncio
async def test_a_published_change_reaches_the_listener(bus: Bus, heard: list[str]) -> None:
    await bus.publisher.publish("ab" * 32)
    await bus.publisher.publish(FORGET_ALL)
    await eventually(lambda: len(heard) == 2, "both changes arrived")
    assert heard == ["ab" * 32, FORGET_ALL]


@pytest.mark.asyncio
async def test_every_listener_hears_every_change(bus: Bus, heard: list[str]) -> None:
    others: list[str] = []
    task = await start_listening(bus, others.append)
    others.clear()
    await bus.publisher.publish("cd" * 32)
    await eventually(lambda: heard == others == ["cd" * 32], "both heard it")
    await stop(task)


@pytest.mark.asyncio
async def test_a_listener_survives_a_failing_callback(bus: Bus, heard: list[str]) -> None:
    seen: list[str] = []

    def explode(message: str) -> None:
        seen.append(message)
        raise RuntimeError("callback bug")

    task = await start_listening(bus, explode)
    for message in ("ef" * 32, "01" * 32):
        await bus.publisher.publish(message)
        await eventually(lambda m=message: seen[-1:] == heard[-1:] == [m], "both heard it")
    assert not task.done()
    await stop(task)


@pytest.mark.asyncio
async def test_redis_listener_resubscribes_and_forgets_everything_after_an_outage(
    outage: Outage, prefix: str, redis_server: str
) -> None:
    channel = f"{prefix}:keys"
    listener = RedisKeyEvents(await outage.start(), channel=channel, min_backoff=0.02)
    publisher = RedisKeyEvents(redis_server, channel=channel)
    messages: list[str] = []
    task = asyncio.create_task(listener.listen(messages.append))
    try:
        await eventually(lambda: messages == [FORGET_ALL], "the listener subscribed")
        outage.go_down()
        await publisher.publish("lost" * 16)  # nobody is connected to hear this
        await asyncio.sleep(0.1)  # a few refused reconnections
        outage.up = True
        # What it missed is covered: it forgets every cached key on resubscribing.
        await eventually(lambda: messages == [FORGET_ALL, FORGET_ALL], "it resubscribed")
        await publisher.publish("01" * 32)
        await eventually(lambda: messages[-1] == "01" * 32, "it hears changes again")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await listener.aclose()
        await publisher.aclose()


@pytest.mark.asyncio
async def test_redis_listener_notices_a_connection_that_went_silent(
    outage: Outage, prefix: str, redis_server: str
) -> None:
    channel = f"{prefix}:keys"
    url = await outage.start()
    listener = RedisKeyEvents(url, channel=channel, timeout=0.2, ping_interval=0.1)
    publisher = RedisKeyEvents(redis_server, channel=channel)
    messages: list[str] = []
    task = asyncio.create_task(listener.listen(messages.append))
    try:
        await eventually(lambda: messages == [FORGET_ALL], "the listener subscribed")
        outage.frozen = True
        await publisher.publish("lost" * 16)
        await asyncio.sleep(0.5)  # unanswered pings: the listener gives the connection up
        outage.frozen = False
        await eventually(lambda: messages == [FORGET_ALL, FORGET_ALL], "it resubscribed")
        await publisher.publish("02" * 32)
        await eventually(lambda: messages[-1] == "02" * 32, "it hears changes again")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await listener.aclose()
        await publisher.aclose()


@pytest.mark.asyncio
async def test_publishing_without_redis_is_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events = RedisKeyEvents(f"redis://127.0.0.1:{closed_port()}/0")
    try:
        with caplog.at_level(logging.WARNING, logger="modelport.redis"):
            await events.publish(FORGET_ALL)
    finally:
        await events.aclose()
    assert any("not announced" in r.getMessage() for r in caplog.records)
