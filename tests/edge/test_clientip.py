"""Client address resolution behind trusted proxies."""

from __future__ import annotations

import ipaddress

from edge.clientip import ClientIP

LB = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")]


def test_untrusted_peer_cannot_spoof_its_address() -> None:
    assert ClientIP(LB).resolve("203.0.113.9", "198.51.100.1") == "203.0.113.9"
    assert ClientIP([]).resolve("10.0.0.1", "198.51.100.1") == "10.0.0.1"


def test_trusted_peer_gives_the_rightmost_untrusted_hop() -> None:
    resolver = ClientIP(LB)
    assert resolver.resolve("10.0.0.1", "198.51.100.1") == "198.51.100.1"
    # A client-supplied first entry is ignored: the hop our proxy appended is the one believed.
    assert resolver.resolve("10.0.0.1", "1.2.3.4, 198.51.100.1, 10.0.0.7") == "198.51.100.1"
    assert resolver.resolve("::1", "2001:db8::5") == "2001:db8::5"


def test_garbage_forwarded_for_falls_back_to_the_peer() -> None:
    resolver = ClientIP(LB)
    assert resolver.resolve("10.0.0.1", "not-an-ip") == "10.0.0.1"
    assert resolver.resolve("10.0.0.1", "") == "10.0.0.1"
    assert resolver.resolve("10.0.0.1", None) == "10.0.0.1"


def test_chain_of_only_proxies_gives_the_first_hop() -> None:
    assert ClientIP(LB).resolve("10.0.0.1", "10.1.1.1, 10.2.2.2") == "10.1.1.1"
