"""Networks of known link scanners: a dated text file operators can update without a release, reloaded when
it changes. Also each click's network, for telling one network from another.

The file (collector/scanner_networks.txt is the default) has one network per line, a CIDR then a label, and
``#`` comments; a line ``# updated: YYYY-MM-DD`` dates it. A bad line stops start-up (and a reload keeps the
previous list) with the file, line and what is wrong.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("clickedge.collector")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
DEFAULT_FILE = Path(__file__).with_name("scanner_networks.txt")
MAX_LABEL = 64
MAX_ENTRIES = 100_000
UPDATED = re.compile(r"#\s*updated:\s*(\d{4}-\d{2}-\d{2})")


class NetworkFileError(ValueError):
    """A scanner network file that cannot be read; the message names the file, the line and the problem."""


@dataclass(frozen=True, slots=True)
class NetworkList:
    """Networks with labels; ``label`` looks an address up (packed bytes, as clicks carry it)."""

    networks: tuple[tuple[Network, str], ...] = ()
    updated: str = ""  # the file's "# updated:" date, if it has one

    def label(self, packed: bytes | None) -> str | None:
        if packed is None or not self.networks:
            return None
        address = ipaddress.ip_address(packed)
        for network, label in self.networks:
            if address.version == network.version and address in network:
                return label
        return None

    def __len__(self) -> int:
        return len(self.networks)


def parse(text: str, source: str = "<text>") -> NetworkList:
    entries: list[tuple[Network, str]] = []
    updated = ""
    for number, raw in enumerate(text.splitlines(), 1):
        match = UPDATED.match(raw.strip())
        if match:
            updated = match.group(1)
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        cidr, _, label = line.partition(" ")
        label = label.strip() or "scanner"
        try:
            network = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise NetworkFileError(f"{source} line {number}: {cidr!r} is not an IP network (CIDR)") from None
        if len(label) > MAX_LABEL or not label.isprintable():
            raise NetworkFileError(f"{source} line {number}: a label is at most {MAX_LABEL} printable characters")
        entries.append((network, label))
        if len(entries) > MAX_ENTRIES:
            raise NetworkFileError(f"{source}: more than {MAX_ENTRIES} networks")
    return NetworkList(tuple(entries), updated)


def load(path: Path) -> NetworkList:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise NetworkFileError(f"cannot read the scanner network file {path}: {exc}") from None
    return parse(text, str(path))


class Reloading:
    """A network file, read again when its modification time or size changes (``current`` checks at most
    once per call; the caller calls it once per classification pass). A file that became unreadable or
    invalid keeps the previous list, logged once per change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp = _stamp(path)
        self._list = load(path)

    def current(self) -> NetworkList:
        stamp = _stamp(self.path)
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._list = load(self.path)
                log.info("reloaded %d scanner networks from %s", len(self._list), self.path)
            except NetworkFileError as exc:
                log.error("kept the previous scanner networks: %s", exc)
        return self._list


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def prefix(packed: bytes | None) -> bytes | None:
    """The click's network for comparing two clicks: its /24 (IPv4) or /48 (IPv6)."""
    if packed is None:
        return None
    return packed[:3] if len(packed) == 4 else packed[:6]


def stored(packed: bytes, full: bool) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    """A client address as a click row keeps it: whole, or (the default) its network, an IPv4 address's /24 or
    an IPv6 address's /48, written as that network (192.0.2.0/24), as the settling statement stores it."""
    bits = len(packed) * 8
    if full:
        return ipaddress.ip_interface((packed, bits))
    kept = prefix(packed)
    assert kept is not None
    return ipaddress.ip_interface((kept.ljust(len(packed), b"\0"), len(kept) * 8))


def contains(networks: Iterable[Network], packed: bytes | None) -> bool:
    if packed is None:
        return False
    address = ipaddress.ip_address(packed)
    return any(address.version == n.version and address in n for n in networks)
