"""Which address a request came from, for per-address limits (authentication failures).

By default the peer of the TCP connection, and X-Forwarded-For is ignored: any client can
write that header, so believing it would let one client pose as many, or as someone else.
Behind a reverse proxy every request's peer is the proxy; list the proxy's addresses (or
networks) in `MODELPORT_TRUSTED_PROXIES` and the client is then read from X-Forwarded-For,
right to left, skipping the trusted hops: the first address a trusted proxy did not write
itself is the client. Only the standard library's `ipaddress` is used.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from modelport.core.catalog import ConfigError
from modelport.http.exchange import Exchange

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_MAX_HOPS = 20  # X-Forwarded-For entries looked at; a longer chain is a client's invention
_MAX_REMEMBERED = 4096


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or CIDR networks ("10.0.0.5", "10.0.0.0/8", "::1"); ConfigError naming a bad
    one."""
    networks: list[Network] = []
    for entry in entries:
        text = entry.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ConfigError(
                f"trusted_proxies: {text!r} is not an IP address or network (CIDR)"
            ) from None
    return tuple(networks)


class ClientAddresses:
    """Resolves a request's client address: the peer, or with trusted proxies configured the
    address they forwarded for."""

    __slots__ = ("_known", "_trusted")

    def __init__(self, trusted_proxies: Iterable[str] = ()) -> None:
        self._trusted = parse_networks(trusted_proxies)
        self._known: dict[str, bool] = {}  # address → trusted, for the addresses seen

    def of(self, exchange: Exchange) -> str:
        peer = exchange.client
        if not self._trusted or not self.is_trusted(peer):
            return peer
        forwarded = exchange.header("x-forwarded-for")
        if not forwarded:
            return peer
        return self.resolve(peer, forwarded)

    def resolve(self, peer: str, forwarded: str) -> str:
        """The client behind a trusted `peer` that sent X-Forwarded-For `forwarded`."""
        address = peer
        for hop in reversed(forwarded.split(",")[-_MAX_HOPS:]):
            if not self.is_trusted(address):
                break
            candidate = _bare(hop)
            if candidate is None:
                break  # not an address: nothing to its left can be believed either
            address = candidate
        return address

    def is_trusted(self, address: str) -> bool:
        known = self._known.get(address)
        if known is None:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                known = False
            else:
                known = any(ip in network for network in self._trusted)
            if len(self._known) >= _MAX_REMEMBERED:
                self._known.clear()
            self._known[address] = known
        return known


def _bare(hop: str) -> str | None:
    """An X-Forwarded-For entry as a plain IP address ("[::1]:80" and "1.2.3.4:80" lose their
    port), or None when it is not one."""
    text = hop.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None
