"""Throttling authentication failures per client address.

An address that fails authentication `limit` times within `window` seconds (counted from its
first failure) is refused with 429 and Retry-After until that window ends, before its key is
looked at: guessing keys, or flooding the key store with lookups of made-up ones, costs one
window per `limit` tries. Other addresses are not affected. IPv6 clients are counted per /64
(one host usually holds a whole /64, and rotating addresses within it is free).

Counts live in this process's memory (each worker counts on its own) and are bounded: past
`max_addresses` the expired ones are dropped, then the oldest. A request whose address is
unknown ("", as over a Unix socket) is not counted: throttling all of them together would let
one client lock out every other. Imports `core` only.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import time
from collections.abc import Callable

from modelport.core.errors import RateLimited

TOO_MANY_FAILURES = "too_many_authentication_failures"


@functools.lru_cache(maxsize=4096)
def _ipv6_bucket(address: str) -> str:
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return ip.exploded[:19] + "::/64"


def address_bucket(address: str) -> str:
    """What failures are counted against: the address, or an IPv6 address's /64."""
    return address if ":" not in address else _ipv6_bucket(address)


class AuthThrottle:
    """Failed authentications per address (IPv6: per /64) in fixed windows."""

    __slots__ = ("_clock", "_entries", "_max_addresses", "_next_sweep", "limit", "window")

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        max_addresses: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self._max_addresses = max_addresses
        self._clock = clock
        # bucket → (when its window began, failures in it)
        self._entries: dict[str, tuple[float, int]] = {}
        self._next_sweep = 0.0

    @property
    def active(self) -> bool:
        """Whether any address has failed lately (else `check` has nothing to look at)."""
        return bool(self._entries)

    def check(self, address: str) -> None:
        """Raise RateLimited when `address` has used up its failures for now. Costs a length
        test while no address has failed (the usual case)."""
        if not self._entries or not address:
            return
        now = self._clock()
        if now >= self._next_sweep:  # windows that ended: back to the free path when all did
            self._sweep(now)
        entry = self._entries.get(address_bucket(address))
        if entry is None or entry[1] < self.limit:
            return
        left = entry[0] + self.window - now
        if left > 0:
            raise RateLimited(
                "Too many failed authentication attempts from your address; "
                f"try again in {math.ceil(left)} s.",
                code=TOO_MANY_FAILURES,
                retry_after=left,
            )

    def failed(self, address: str) -> None:
        """Count one failed authentication from `address` ("": unknown, not counted)."""
        if not address:
            return
        bucket = address_bucket(address)
        now = self._clock()
        entry = self._entries.get(bucket)
        if entry is None or now - entry[0] >= self.window:
            if entry is None and len(self._entries) >= self._max_addresses:
                self._sweep(now)
                if len(self._entries) >= self._max_addresses:  # a flood from many addresses
                    for oldest in list(self._entries)[: max(1, self._max_addresses // 4)]:
                        del self._entries[oldest]
            self._entries[bucket] = (now, 1)
        else:
            self._entries[bucket] = (entry[0], entry[1] + 1)

    def _sweep(self, now: float) -> None:
        for bucket in [b for b, (start, _) in self._entries.items() if now - start >= self.window]:
            del self._entries[bucket]
        self._next_sweep = now + self.window
