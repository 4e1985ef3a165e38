"""The click event wire format shared by edge and collector. Pure: no framework imports.

On the edge a click is kept as (16-byte event id, payload), the payload being the JSON array of the
row's fields after the event id, in FIELDS order. A batch comes to the collector in one of two forms:

- the spool's own records (``Content-Type: application/x-clickedge-spool``, the edge's name in the
  ``Clickedge-Edge`` header): the bytes the edge's spool holds, framed and checksummed as common/frames.py
  says. What the edge ships: it decodes and re-encodes nothing;
- a JSON object ``{"v": 1, "edge": NAME, "clicks": [ROW, ...]}``, each row an array in FIELDS order, the
  event id as 32 hex digits (for scripts and older edges; the dead-letter file keeps batches this way).

The collector checks every record or row and rejects the whole batch with a reason naming the record or row
and field when one is wrong.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from dataclasses import dataclass
from itertools import count
from typing import Any

import orjson

from common import frames
from common.limits import MAX_CONTACT, MAX_ID, MAX_KEY_ID
from common.signals import MAX_SIGNALS

WIRE_VERSION = 1
FIELDS = (
    "event_id",
    "clicked_at_us",
    "campaign_id",
    "link_id",
    "contact_id",
    "sent_at",
    "key_id",
    "client_ip",
    "user_agent",
    "method",
    "signals",
    "outcome",
)
# What the edge did with the request: a row without an outcome was redirected. "blocked": the kill switch
# stopped it (410); the collector keeps it with the clicks it refused, never as a click. "unsubscribe": a
# one-click unsubscribe (RFC 8058), a POST to /u/<token> (link_id 0, a contact); applied, never a click.
REDIRECT = "redirect"
BLOCKED = "blocked"
UNSUBSCRIBE = "unsubscribe"
OUTCOMES = frozenset({BLOCKED, UNSUBSCRIBE})  # the outcomes a row may name
MAX_USER_AGENT = 512
# On a 400 for a batch, the collector's answer carries this header: the batch itself is invalid and the edge
# sets it aside (dead letter). A 4xx without it came from something else (a wrong URL, a proxy) and is retried.
BATCH_REJECTED_HEADER = "Clickedge-Batch-Rejected"
MAX_EDGE_NAME = 64
SPOOL_CONTENT_TYPE = "application/x-clickedge-spool"  # a batch as the spool's records (common/frames.py)
EDGE_HEADER = "Clickedge-Edge"  # the shipping edge's name, with a batch of spool records
MAX_BATCH_CLICKS = 10_000
METHODS = frozenset({"GET", "HEAD"})  # of a redirected or blocked request
UNSUBSCRIBE_METHOD = "POST"  # of an unsubscribe, and only of one
_MAX_U32 = MAX_ID
_MAX_BIGINT = MAX_CONTACT
_MAX_U16 = MAX_KEY_ID
_MAX_CLICKED_US = _MAX_U32 * 1_000_000
_NFIELDS = len(FIELDS)
# Rows from edges that predate ``signals`` (and records they spooled before an upgrade) have one value
# fewer: their signals are unknown (None), which is not the same as a request that sent no such header.
# ``outcome`` comes only when the request was not redirected.
_NFIELDS_WITH_SIGNALS = _NFIELDS - 1
_NFIELDS_BEFORE_SIGNALS = _NFIELDS - 2


class EventIds:
    """Time-ordered UUIDv7 event ids, unique per process without a syscall per click.

    48 bits of Unix milliseconds, then 42 random bits drawn once per process and a 32-bit counter.
    Time order keeps inserts into the click index append-mostly.
    """

    __slots__ = ("_counter", "_node")

    def __init__(self) -> None:
        self._node = int.from_bytes(os.urandom(6), "big") >> 6  # 42 bits
        self._counter = count(int.from_bytes(os.urandom(4), "big"))

    def next(self, now_ms: int) -> str:
        return f"{self.next_int(now_ms):032x}"

    def next_bytes(self, now_ms: int) -> bytes:
        return self.next_int(now_ms).to_bytes(16, "big")

    def next_int(self, now_ms: int) -> int:
        seq = next(self._counter) & 0xFFFFFFFF
        return (
            (now_ms & 0xFFFFFFFFFFFF) << 80
            | 0x7 << 76
            | (self._node >> 30) << 64
            | 0b10 << 62
            | (self._node & 0x3FFFFFFF) << 32
            | seq
        )


def now_us() -> int:
    return time.time_ns() // 1000


class BatchError(ValueError):
    """A batch that can never be accepted as sent (HTTP 400); the message names the row and field."""


@dataclass(frozen=True, slots=True)
class Click:
    """One checked click, its values as plain as the wire's: the collector only re-encodes them for COPY,
    and building UUID, datetime and ipaddress objects was most of the cost of checking a batch."""

    event_id: bytes  # the UUID's 16 bytes
    clicked_at_us: int  # Unix microseconds
    campaign_id: int
    link_id: int
    contact_id: int | None
    sent_at: int  # Unix seconds
    key_id: int
    client_ip: bytes | None  # the packed address: 4 bytes (IPv4) or 16 (IPv6)
    user_agent: str
    method: str
    signals: int | None  # common/signals.py's bits; None when the edge recorded none (an older edge)
    outcome: str = REDIRECT  # REDIRECT, or one of OUTCOMES


# Where an edge fetches the kill switch's block list from its collector (collector/blocks.py), with the
# ingest secret and an ETag.
EDGE_BLOCKLIST_PATH = "/v1/edge/blocklist"


def click_payload(
    clicked_at_us: int,
    campaign_id: int,
    link_id: int,
    contact_id: int | None,
    sent_at: int,
    key_id: int,
    client_ip: str,
    user_agent: str,
    method: str,
    signals: int,
    outcome: str | None = None,
) -> bytes:
    """A click's fields after its event id, as the edge spools them (FIELDS[1:], a JSON array).

    Bounded: with a parsed address and GET or HEAD, the longest payload (512 characters that JSON escapes
    as six bytes each) is well under the spool's 4 KiB record limit, whatever the user agent holds."""
    user_agent = user_agent[:MAX_USER_AGENT]
    fields: tuple[Any, ...] = (
        clicked_at_us,
        campaign_id,
        link_id,
        contact_id,
        sent_at,
        key_id,
        client_ip,
        user_agent,
        method,
        signals,
    )
    if outcome is not None:
        fields += (outcome,)
    try:
        return orjson.dumps(fields)
    except orjson.JSONEncodeError:
        # Header bytes that are not UTF-8 arrive as lone surrogates: keep the rest, one U+FFFD for each.
        clean = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in user_agent)
        return orjson.dumps((*fields[:7], clean, *fields[8:]))


def payload_clicked_at_us(payload: bytes) -> int:
    """The click time of a spooled payload, without parsing the rest."""
    return int(payload[1 : payload.index(b",")])


def encode_spooled_batch(edge: str, records: list[tuple[bytes, bytes]]) -> bytes:
    """The batch body for spooled (event id, payload) records: each row is ``["<hex id>", *payload]``."""
    rows = b",".join(b'["' + event_id.hex().encode() + b'",' + payload[1:] for event_id, payload in records)
    return b'{"v":%d,"edge":%b,"clicks":[%b]}' % (WIRE_VERSION, orjson.dumps(edge), rows)


def spooled_as_json(edge: str, body: bytes) -> bytes:
    """A batch of spool records (what the edge ships) as the JSON batch: for the dead-letter file, which a
    person reads and may send again with curl."""
    return encode_spooled_batch(edge, frames.parse(body, final=True).records)


def decode_spooled(edge: str, body: bytes) -> list[Click]:
    """Check a batch of spool records from ``edge`` and return its clicks, or raise BatchError."""
    check_edge_name(edge)
    try:
        records = frames.decode(body, MAX_BATCH_CLICKS)
    except frames.FrameError as exc:
        raise BatchError(str(exc)) from None
    try:
        # Every payload at once, with one call into orjson; a payload that is not one array fails the count.
        rows = orjson.loads(b"[%b]" % b",".join(payload for _, payload in records))
    except orjson.JSONDecodeError:
        rows = None
    if type(rows) is not list or len(rows) != len(records):
        rows = [_payload(i, payload) for i, (_, payload) in enumerate(records)]  # finds the one to name
    return [_click(i, event_id, fields) for i, ((event_id, _), fields) in enumerate(zip(records, rows, strict=True))]


def _payload(i: int, payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise BatchError(f"clicks[{i}] payload is not valid JSON: {exc}") from None


def check_edge_name(edge: object) -> str:
    if not isinstance(edge, str) or not 0 < len(edge) <= MAX_EDGE_NAME:
        raise BatchError(f"'edge' must be a string of 1 to {MAX_EDGE_NAME} characters")
    return edge


def decode_batch(doc: Any) -> tuple[str, list[Click]]:
    """Check a parsed batch document and return (edge name, clicks), or raise BatchError."""
    if not isinstance(doc, dict):
        raise BatchError("batch must be a JSON object")
    if doc.get("v") != WIRE_VERSION:
        raise BatchError(f"unsupported batch version {doc.get('v')!r}; expected {WIRE_VERSION}")
    edge = check_edge_name(doc.get("edge"))
    rows = doc.get("clicks")
    if not isinstance(rows, list):
        raise BatchError("'clicks' must be an array")
    if len(rows) > MAX_BATCH_CLICKS:
        raise BatchError(f"batch has {len(rows)} clicks; at most {MAX_BATCH_CLICKS} are accepted")
    return edge, [_row(i, row) for i, row in enumerate(rows)]


def _row(i: int, row: Any) -> Click:
    if type(row) is not list or not _NFIELDS_BEFORE_SIGNALS <= len(row) <= _NFIELDS:
        raise BatchError(
            f"clicks[{i}] must be an array of {_NFIELDS_WITH_SIGNALS} values: {', '.join(FIELDS[:-1])} (or without "
            "signals; or with an outcome after them)"
        )
    event_id = row[0]
    try:
        # fromhex takes pairs of hex digits (and spaces between them, which the length check refuses).
        eid = bytes.fromhex(event_id) if len(event_id) == 32 else b""
    except (TypeError, ValueError):
        eid = b""
    if len(eid) != 16:
        raise _bad(i, "event_id", "must be 32 hex digits")
    return _click(i, eid, row[1:])


def _click(i: int, eid: bytes, fields: Any) -> Click:
    """A click from its event id and the fields after it (FIELDS[1:], a JSON row's or a spooled payload's)."""
    # Every click of every batch passes here: written for speed (C-level parsers first, no closures).
    if type(fields) is not list or not _NFIELDS_BEFORE_SIGNALS - 1 <= len(fields) <= _NFIELDS - 1:
        raise BatchError(
            f"clicks[{i}] must hold {_NFIELDS_WITH_SIGNALS - 1} values after the event id: "
            f"{', '.join(FIELDS[1:-1])} (or without signals; or with an outcome after them)"
        )
    clicked_us, campaign, link, contact, sent_at, key_id, ip, ua, method = fields[: _NFIELDS_BEFORE_SIGNALS - 1]
    signals = fields[_NFIELDS_BEFORE_SIGNALS - 1] if len(fields) >= _NFIELDS_BEFORE_SIGNALS else None
    outcome = REDIRECT
    if len(fields) == _NFIELDS - 1:
        outcome = fields[_NFIELDS_WITH_SIGNALS - 1]
        if type(outcome) is not str or outcome not in OUTCOMES:
            raise _bad(i, "outcome", f"must be one of {sorted(OUTCOMES)} (or absent: redirected)")
    if signals is not None and (type(signals) is not int or not 0 <= signals <= MAX_SIGNALS):
        raise _bad(i, "signals", f"must be null or an integer from 0 to {MAX_SIGNALS}")
    if (
        type(clicked_us) is not int
        or not 0 <= clicked_us <= _MAX_CLICKED_US
        or type(campaign) is not int
        or not 0 <= campaign <= _MAX_U32
        or type(link) is not int
        or not 0 <= link <= _MAX_U32
        or type(sent_at) is not int
        or not 0 <= sent_at <= _MAX_U32
        or type(key_id) is not int
        or not 0 <= key_id <= _MAX_U16
    ):
        _check_ints(i, fields)
    if contact is not None and (type(contact) is not int or not 1 <= contact <= _MAX_BIGINT):
        raise _bad(i, "contact_id", f"must be null or an integer from 1 to {_MAX_BIGINT}")
    if type(ip) is not str:
        raise _bad(i, "client_ip", "must be a string")
    try:
        addr = _parse_ip(ip) if ip else None
    except ValueError:
        raise _bad(i, "client_ip", "is not an IP address") from None
    if type(ua) is not str or len(ua) > MAX_USER_AGENT:
        raise _bad(i, "user_agent", f"must be a string of at most {MAX_USER_AGENT} characters")
    if outcome == UNSUBSCRIBE:
        if method != UNSUBSCRIBE_METHOD:
            raise _bad(i, "method", f"must be {UNSUBSCRIBE_METHOD} for an unsubscribe")
        if contact is None:
            raise _bad(i, "contact_id", "must name the contact for an unsubscribe")
    elif type(method) is not str or method not in METHODS:
        raise _bad(i, "method", f"must be one of {sorted(METHODS)}")
    return Click(
        eid,
        clicked_us,
        campaign,
        link,
        contact,
        sent_at,
        key_id,
        addr,
        ua.replace("\x00", "") if "\x00" in ua else ua,
        method,
        signals,
        outcome,
    )


def _bad(i: int, field: str, why: str) -> BatchError:
    return BatchError(f"clicks[{i}].{field} {why}")


def _check_ints(i: int, fields: list[Any]) -> None:
    """Raise for the first integer field out of its range (the fast check found one)."""
    for field, value, high in (
        ("clicked_at_us", fields[0], _MAX_CLICKED_US),
        ("campaign_id", fields[1], _MAX_U32),
        ("link_id", fields[2], _MAX_U32),
        ("sent_at", fields[4], _MAX_U32),
        ("key_id", fields[5], _MAX_U16),
    ):
        if type(value) is not int or not 0 <= value <= high:
            raise _bad(i, field, f"must be an integer from 0 to {high}")


def _parse_ip(text: str) -> bytes:
    """The packed address. inet_pton is C and strict; ipaddress takes the rest (an IPv6 zone, say) and
    raises ValueError for what is not an address."""
    try:
        return socket.inet_pton(socket.AF_INET, text)
    except OSError:
        pass
    try:
        return socket.inet_pton(socket.AF_INET6, text)
    except OSError:
        pass
    return ipaddress.ip_address(text).packed
