"""Which address clicked: the TCP peer, or X-Forwarded-For when the peer is a trusted proxy.

What goes into a click record is always a parsed address in its canonical text form (at most 45
characters), never the header's text: an IPv6 zone (``fe80::1%eth0``) says which of the proxy's own
interfaces a packet came in on, which means nothing here, and is dropped before parsing, so a zone of any
length or bytes cannot reach the spool. Anything that is not an address is not believed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_HOPS = 20  # a longer chain is not believed beyond its last MAX_HOPS entries
MAX_ADDRESS_CHARS = 45  # the longest text form of an address: ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255
# Verdicts are remembered per hop text: at most CACHE_ENTRIES texts of at most MAX_ADDRESS_CHARS characters
# (longer ones are refused before the cache), so the cache holds well under 1 MiB whatever clients send.
CACHE_ENTRIES = 4096


class ClientIP:
    __slots__ = ("_lookup", "_networks")

    def __init__(self, trusted: Sequence[Network]) -> None:
        self._networks = tuple(trusted)
        # Peers are few (the load balancers), client addresses many: remember each verdict instead of parsing
        # it per request, within a bound in bytes as well as entries (see CACHE_ENTRIES).
        self._lookup = lru_cache(maxsize=CACHE_ENTRIES)(self._parse)

    @property
    def enabled(self) -> bool:
        return bool(self._networks)

    def _parse(self, text: str) -> tuple[str, bool] | None:
        """(canonical address, trusted?) for an address of at most MAX_ADDRESS_CHARS, else None."""
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            return None
        return str(ip), any(ip in net for net in self._networks)

    def address(self, text: str) -> tuple[str, bool] | None:
        """(canonical address, trusted?) for one hop of X-Forwarded-For (or a peer), or None."""
        text = text.strip().partition("%")[0]
        if len(text) > MAX_ADDRESS_CHARS:
            return None
        return self._lookup(text)

    def resolve(self, peer: str, forwarded_for: str | None) -> str:
        """The client's address: walk X-Forwarded-For from the right while hops are trusted proxies."""
        if not forwarded_for or not self._networks:
            return peer
        found = self.address(peer)
        if found is None or not found[1]:
            return peer
        hops = forwarded_for.split(",")[-MAX_HOPS:]
        for hop in reversed(hops):
            found = self.address(hop)
            if found is None:
                return peer  # not an address: nothing to the left of it can be believed either
            if not found[1]:
                return found[0]
        found = self.address(hops[0])
        return found[0] if found is not None else peer
