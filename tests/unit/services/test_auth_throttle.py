"""Authentication failures per address: the window, IPv6 prefixes, bounded memory."""

from __future__ import annotations

import pytest

from modelport.core.errors import RateLimited
from modelport.services.auth_throttle import AuthThrottle, address_bucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_address_is_refused_after_its_failures_until_the_window_ends() -> None:
    clock = Clock()
    throttle = AuthThrottle(3, 60.0, clock=clock)
    assert not throttle.active
    for _ in range(3):
        throttle.check("192.0.2.1")
        throttle.failed("192.0.2.1")
    clock.now += 10
    with pytest.raises(RateLimited) as raised:
        throttle.check("192.0.2.1")
    assert raised.value.status == 429
    assert raised.value.retry_after == pytest.approx(50.0)
    assert "50 s" in raised.value.message
    throttle.check("192.0.2.2")  # another address: fine
    clock.now += 50
    throttle.check("192.0.2.1")  # the window ended
    assert not throttle.active  # and is forgotten: the fast path is back


def test_failures_spread_over_windows_do_not_add_up() -> None:
    clock = Clock()
    throttle = AuthThrottle(2, 60.0, clock=clock)
    throttle.failed("192.0.2.1")
    clock.now += 61
    throttle.failed("192.0.2.1")
    throttle.check("192.0.2.1")


def test_ipv6_addresses_count_per_64_and_mapped_ipv4_as_ipv4() -> None:
    assert address_bucket("2001:db8:1:2:aaaa::1") == address_bucket("2001:db8:1:2:bbbb::2")
    assert address_bucket("2001:db8:1:2::1") != address_bucket("2001:db8:1:3::1")
    assert address_bucket("::ffff:192.0.2.1") == "192.0.2.1"
    assert address_bucket("192.0.2.1") == "192.0.2.1"
    assert address_bucket("not:an:address") == "not:an:address"
    throttle = AuthThrottle(1, 60.0, clock=Clock())
    throttle.failed("2001:db8:1:2::1")
    with pytest.raises(RateLimited):
        throttle.check("2001:db8:1:2::ffff")


def test_memory_is_bounded() -> None:
    clock = Clock()
    throttle = AuthThrottle(1, 60.0, max_addresses=100, clock=clock)
    for n in range(1000):
        throttle.failed(f"10.0.{n // 256}.{n % 256}")
    assert len(throttle._entries) <= 100
    with pytest.raises(RateLimited):
        throttle.check("10.0.3.231")  # the latest is still remembered


def test_an_unknown_address_is_not_throttled() -> None:
    throttle = AuthThrottle(1, 60.0, clock=Clock())
    for _ in range(3):
        throttle.failed("")
    throttle.check("")
    assert not throttle.active
