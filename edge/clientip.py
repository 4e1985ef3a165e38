"""Which address clicked: the TCP peer, or X-Forwarded-For when the peer is a trusted proxy."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_HOPS = 20  # a longer chain is not believed beyond its last MAX_HOPS entries


class ClientIP:
    __slots__ = ("_is_trusted", "_networks")

    def __init__(self, trusted: Sequence[Network]) -> None:
        self._networks = tuple(trusted)
        # Peers are few (the load balancers): remember each verdict instead of parsing it per request.
        self._is_trusted = lru_cache(maxsize=4096)(self._check)

    @property
    def enabled(self) -> bool:
        return bool(self._networks)

    def _check(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._networks)

    def resolve(self, peer: str, forwarded_for: str | None) -> str:
        """The client's address: walk X-Forwarded-For from the right while hops are trusted proxies."""
        if not forwarded_for or not self._networks or not self._is_trusted(peer):
            return peer
        hops = [h.strip() for h in forwarded_for.split(",")[-MAX_HOPS:]]
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                return hop if _is_ip(hop) else peer
        first = hops[0]
        return first if _is_ip(first) else peer


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
