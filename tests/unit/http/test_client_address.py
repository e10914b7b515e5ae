"""The client address: the peer, or what trusted proxies forwarded."""

from __future__ import annotations

from typing import Any

import pytest

from modelport.core.catalog import ConfigError
from modelport.http.client_address import ClientAddresses
from modelport.http.rsgi import peer_address


@pytest.mark.parametrize(
    ("granian", "address"),
    [
        ("127.0.0.1:8000", "127.0.0.1"),
        ("[::1]:8000", "::1"),
        ("[2001:db8::5]:1", "2001:db8::5"),
        ("", ""),
        ("unix", "unix"),
    ],
)
def test_granian_client_strings(granian: str, address: str) -> None:
    assert peer_address(granian) == address


class FakeExchange:
    def __init__(self, client: str, forwarded: str | None) -> None:
        self.client = client
        self.forwarded = forwarded

    def header(self, name: str) -> str | None:
        return self.forwarded if name == "x-forwarded-for" else None


def test_without_trusted_proxies_the_header_is_not_read() -> None:
    exchange: Any = FakeExchange("10.0.0.1", "203.0.113.1")
    assert ClientAddresses().of(exchange) == "10.0.0.1"
    assert ClientAddresses(["10.0.0.0/8"]).of(exchange) == "203.0.113.1"
    assert ClientAddresses(["192.0.2.0/24"]).of(exchange) == "10.0.0.1"


@pytest.mark.parametrize(
    ("forwarded", "client"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("198.51.100.1, 203.0.113.7", "203.0.113.7"),  # the client wrote the first entry
        ("203.0.113.7, 10.0.0.9", "203.0.113.7"),  # a second trusted hop is skipped
        ("10.0.0.8, 10.0.0.9", "10.0.0.8"),  # only proxies: the leftmost
        ("not-an-ip, 10.0.0.9", "10.0.0.9"),  # garbage stops the walk at the last good hop
        ("[2001:db8::7]:443", "2001:db8::7"),
        ("203.0.113.7:5000", "203.0.113.7"),
        ("", "10.0.0.1"),
    ],
)
def test_the_client_is_the_first_untrusted_hop_from_the_right(forwarded: str, client: str) -> None:
    addresses = ClientAddresses(["10.0.0.0/8"])
    assert addresses.resolve("10.0.0.1", forwarded) == client


def test_an_untrusted_peer_is_the_client() -> None:
    addresses = ClientAddresses(["10.0.0.0/8", "::1"])
    assert addresses.resolve("192.0.2.1", "203.0.113.7") == "192.0.2.1"
    assert addresses.is_trusted("::1")
    assert not addresses.is_trusted("")


def test_a_bad_proxy_entry_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="trusted_proxies.*'10.0.0.300'"):
        ClientAddresses(["10.0.0.300"])
