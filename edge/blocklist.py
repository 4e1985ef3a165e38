"""The kill switch at the edge: which links must not redirect. Pure: no framework imports.

The collector keeps the blocks (collector/blocks.py); edge/blocklist_sync.py fetches them. One frozen
``Blocklist`` per version of the list, swapped whole when a new one arrives: a request sees one list or the
other, never half of one. While the list is empty (``entries`` is 0) the redirect path asks nothing more;
otherwise two lookups of an integer (the campaign, the link) and, when hosts are blocked, one of the
destination in the answers already worked out for this list. Working one out takes a lookup per label of
the destination's host: ``login.phish.example`` is blocked by a block of itself, of ``phish.example`` or of
``example``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import orjson

from common.files import write_private
from common.limits import MAX_ID

MAX_HOST = 253
MAX_SEEN = 65_536  # destinations whose answer is kept; then the cache starts again (a bound, not a policy)
_WHOLE = 1 << 32  # a whole campaign's key: link ids stop at 2**32 - 1


@dataclass(frozen=True, slots=True)
class Blocklist:
    campaigns: frozenset[int] = frozenset()
    links: frozenset[tuple[int, int]] = frozenset()
    hosts: frozenset[str] = frozenset()
    etag: str = ""  # the collector's version of it ("": none fetched)
    # Made once per list, for the redirect path: how many entries; campaigns and links as one set of integers
    # (no tuple built per request); each destination's answer, once its host was looked at.
    entries: int = field(init=False, compare=False)
    _ids: frozenset[int] = field(init=False, compare=False, repr=False)
    _seen: dict[str, bool] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "entries", len(self.campaigns) + len(self.links) + len(self.hosts))
        ids = {c << 33 | _WHOLE for c in self.campaigns} | {c << 33 | k for c, k in self.links}
        setattr_(self, "_ids", frozenset(ids))
        setattr_(self, "_seen", {})

    def blocks(self, campaign_id: int, link_id: int, destination: str) -> bool:
        key = campaign_id << 33
        ids = self._ids
        if key | _WHOLE in ids or key | link_id in ids:
            return True
        if not self.hosts:
            return False
        seen = self._seen
        known = seen.get(destination)
        if known is None:
            if len(seen) >= MAX_SEEN:
                seen.clear()
            known = seen[destination] = self._host_blocked(host_of(destination))
        return known

    def _host_blocked(self, host: str) -> bool:
        while True:
            if host in self.hosts:
                return True
            dot = host.find(".")
            if dot < 0:
                return False
            host = host[dot + 1 :]

    @classmethod
    def parse(cls, body: bytes, etag: str) -> Blocklist:
        """The list as the collector sends it, or ValueError saying what is wrong with it."""
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"block list is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise ValueError("block list must be a JSON object")
        campaigns, links, hosts = doc.get("campaigns"), doc.get("links"), doc.get("hosts")
        if not isinstance(campaigns, list) or not all(_is_id(c) for c in campaigns):
            raise ValueError("block list: campaigns must be an array of ids")
        if not isinstance(links, list) or not all(
            isinstance(pair, list) and len(pair) == 2 and _is_id(pair[0]) and _is_id(pair[1]) for pair in links
        ):
            raise ValueError("block list: links must be an array of [campaign, link] pairs")
        if not isinstance(hosts, list) or not all(isinstance(h, str) and 0 < len(h) <= MAX_HOST for h in hosts):
            raise ValueError("block list: hosts must be an array of host names")
        return cls(frozenset(campaigns), frozenset((c, k) for c, k in links), frozenset(hosts), etag)

    def dump(self) -> bytes:
        """What ``load`` reads back: the list as fetched, with its ETag."""
        return orjson.dumps(
            {
                "etag": self.etag,
                "campaigns": sorted(self.campaigns),
                "links": sorted(self.links),
                "hosts": sorted(self.hosts),
            }
        )

    def save(self, path: Path) -> None:
        """Write it to ``path`` whole or not at all (a temporary file renamed over it)."""
        write_private(path, self.dump().decode())

    @classmethod
    def load(cls, path: Path) -> Blocklist | None:
        """The list last saved at ``path``; None when there is none (or it cannot be read: logged by the
        caller, which then waits for the collector)."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        doc = orjson.loads(raw)
        return cls.parse(raw, str(doc.get("etag", ""))) if isinstance(doc, dict) else None


def host_of(destination: str) -> str:
    """The host of an http(s) URL as a token carries it (ASCII, validated at minting), in lower case."""
    start = destination.find("//") + 2
    end = len(destination)
    for mark in "/?#":
        found = destination.find(mark, start)
        if 0 <= found < end:
            end = found
    host = destination[start:end].rpartition("@")[2]
    if host.startswith("["):  # an IPv6 literal
        return host[: host.find("]") + 1].lower()
    return host.partition(":")[0].rstrip(".").lower()


def _is_id(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_ID
