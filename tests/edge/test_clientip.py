"""Client address resolution behind trusted proxies."""

from __future__ import annotations

import ipaddress

from edge.clientip import CACHE_ENTRIES, MAX_ADDRESS_CHARS, ClientIP

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


def test_an_ipv6_zone_is_dropped_whatever_it_holds() -> None:
    resolver = ClientIP(LB)
    # The reviewer's record: a 5,000-byte zone made a click the spool could not read back.
    assert resolver.resolve("10.0.0.1", "fe80::1%" + "z" * 5000) == "fe80::1"
    # Header bytes that are not UTF-8 arrive as surrogates: they never reach a record.
    assert resolver.resolve("10.0.0.1", "fe80::1%\udcff\udcfe") == "fe80::1"
    assert resolver.resolve("10.0.0.1", "fe80::2%eth0, 10.0.0.9") == "fe80::2"


def test_addresses_are_recorded_in_canonical_form() -> None:
    resolver = ClientIP(LB)
    assert resolver.resolve("10.0.0.1", " 2001:DB8:0:0::5 ") == "2001:db8::5"
    assert resolver.resolve("10.0.0.1", "::ffff:198.51.100.1") == "::ffff:c633:6401"
    assert resolver.resolve("10.0.0.1", "198.51.100.001") == "10.0.0.1"  # not an address: the peer


def test_the_verdict_cache_holds_no_long_strings() -> None:
    resolver = ClientIP(LB)
    for n in range(100):
        assert resolver.address(f"{n}" + "x" * 8000) is None  # refused before the cache
    assert resolver._lookup.cache_info().currsize == 0
    for n in range(2 * CACHE_ENTRIES):
        resolver.address(f"198.51.{n // 256 % 256}.{n % 256}")
    info = resolver._lookup.cache_info()
    assert info.currsize == CACHE_ENTRIES  # at most this many entries of at most MAX_ADDRESS_CHARS each
    assert len("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255") == MAX_ADDRESS_CHARS
