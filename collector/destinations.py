"""Where webhooks may go, and webhook URLs made fit to log. Pure: standard library only.

Holders of a ``write`` key name webhook URLs and the collector calls them, so without a policy a write key
reaches whatever the collector's network reaches: ``127.0.0.1``, the cloud metadata service at
``169.254.169.254``, private ranges. ``refusal`` decides for one IP address; the deliverer asks it for
every address it is about to connect to, after DNS (a name that resolves to an internal address, or is
re-pointed to one after it was set, is refused at delivery), and the admin API asks it for IP literals
when a URL is set, to answer a 400 at once. ``CLICKEDGE_WEBHOOK_ALLOW_NETWORKS`` opens chosen ranges.

An IPv6 address can carry an IPv4 one that the packets end up at: IPv4-mapped (``::ffff:127.0.0.1``
is 127.0.0.1 on the wire), NAT64 (``64:ff9b::/96``), 6to4 (``2002::/16``) and Teredo; the IPv4 address
must pass too.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit, urlunsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Networks = Sequence[Network]

ALLOW_SETTING = "CLICKEDGE_WEBHOOK_ALLOW_NETWORKS"
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Private use and shared (carrier-grade NAT) space: ranges an organisation's own hosts live in.
PRIVATE = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)


def refusal(host: str, allow: Networks = ()) -> str | None:
    """Why a webhook may not connect to the IP address ``host``, or None when it may.

    Allowed: a globally routable unicast address, or one in ``allow``. Refused: loopback, link-local,
    private, multicast, unspecified, and every other reserved or not globally routable address.
    """
    try:
        address: Address = ipaddress.ip_address(host)
    except ValueError:
        return f"{host!r} is not an IP address"
    views: list[Address] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            views = [address.ipv4_mapped]  # the same address, written for an IPv6 socket
        elif address in NAT64:
            views = [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]  # the gateway's translation decides
        else:
            views += _embedded(address)
    for view in views:
        if any(view in network for network in allow):
            continue
        kind = _kind(view)
        if kind is not None:
            return f"{host} is {kind}" if str(view) == host else f"{host} embeds {view}, which is {kind}"
    return None


def _kind(address: Address) -> str | None:
    # Order matters: ::1 is also "reserved" and 127.0.0.1 also "private" to ipaddress; name the most telling.
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if any(address in network for network in PRIVATE):
        return "private"
    # ipaddress calls some reserved space global (::7f00:1, 64:ff9b::/96 itself), hence both checks.
    if address.is_reserved or address.is_private or not address.is_global:
        return "reserved (not globally routable)"
    return None


def _embedded(address: ipaddress.IPv6Address) -> list[Address]:
    """The IPv4 addresses a public IPv6 address also delivers to (6to4, a Teredo client)."""
    found: list[Address] = []
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.append(address.teredo[1])
    return found


def userinfo_problem(url: str) -> str | None:
    """A URL with ``user:password@`` would carry a credential in every outbox row, log line and copy of
    the actions; receivers authenticate the request by its signature instead."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return None  # not a URL at all: the caller's other checks say so
    if "@" in netloc:
        return "must not contain a user name or password (user:pass@); receivers verify the signature instead"
    return None


def shown(url: str, *, query: bool = False) -> str:
    """``url`` without its user name and password, and without its query (which may hold a token) unless
    ``query``: what may be logged or shown to a ``read`` key."""
    try:
        scheme, netloc, path, params, _ = urlsplit(url)
    except ValueError:
        return "(a URL that cannot be parsed)"
    return urlunsplit((scheme, netloc.rpartition("@")[2], path, params if query else "", ""))


def scrub(text: str, url: str, *, query: bool = False) -> str:
    """``text`` (an error message) with anything secret of ``url`` removed: the URL itself becomes its
    ``shown`` form, and its user name, password and query (``query=False``), raw or percent-decoded,
    become "...", wherever and however the HTTP client quoted them."""
    text = text.replace(url, shown(url, query=query))
    try:
        netloc, params = urlsplit(url).netloc, urlsplit(url).query
    except ValueError:
        netloc, params = url.partition("://")[2].partition("/")[0], ""
    userinfo = netloc.rpartition("@")[0]
    secrets = {userinfo, *userinfo.split(":", 1)}
    if not query:
        secrets.add(params)
    for secret in sorted({s for raw in secrets for s in (raw, unquote(raw))} - {""}, key=len, reverse=True):
        # Where it stands on its own: a password "p" is taken out of "u:p@", not out of "http".
        text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "...", text)
    return text
