"""PostgreSQL's binary COPY format for the collector's staging rows. Pure: no framework imports.

asyncpg's ``copy_records_to_table`` sends every value through its general codec machinery, which made
the client's CPU the larger part of staging a batch. These rows have one fixed shape
(``ingest.STAGE_COLUMNS``), so the stream is built here with one ``struct.pack`` per row and a few byte
strings (the measured choice: see loadtests/README.md, section "Results: the harness", collector ingest).

Format (PostgreSQL documentation, "COPY", binary format): a signature, flags and header extension; then
per row a 16-bit field count and each field as a 32-bit length (-1 for NULL) followed by its value in
the type's binary send format; then a 16-bit -1.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from common.events import Click

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER = SIGNATURE + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
FIELDS = 12
_PG_EPOCH_US = 946_684_800_000_000  # timestamptz counts microseconds from 2000-01-01 UTC
_PG_EPOCH_S = _PG_EPOCH_US // 1_000_000
# contact_id, clicked_at, event_id, campaign_id, link_id, sent_at, key_id: each as (length, value)
_FIXED = struct.Struct(">h" + "iq" * 2 + "i16s" + "iq" * 3 + "ii")
_LENGTH = struct.Struct(">i").pack
_NULL = _LENGTH(-1)
_INT4 = struct.Struct(">ii").pack  # an integer column: its length (4), then the value
# inet: family (PGSQL_AF_INET 2, PGSQL_AF_INET6 3), prefix bits, is_cidr, address length, address
_INET4 = struct.pack(">iBBBB", 8, 2, 32, 0, 4)
_INET6 = struct.pack(">iBBBB", 20, 3, 128, 0, 16)


def _text(value: str) -> bytes:
    data = value.encode()
    return _LENGTH(len(data)) + data


def encode_stage_rows(
    edge: str, clicks: Iterable[Click], verdicts: Sequence[tuple[str, str, str | None]] | None = None
) -> bytes:
    """The binary COPY stream of ``clicks`` in ``ingest.STAGE_COLUMNS`` order (contact 0: anonymous); with
    ``verdicts`` (each click's verdict, comma-joined reasons and stored agent or None, in order), in
    ``ingest.JUDGED_COLUMNS``."""
    pack = _FIXED.pack
    edge_field = _text(edge)
    methods: dict[str, bytes] = {}
    judged: dict[tuple[str, str, str | None], bytes] = {}  # each distinct verdict's fields, encoded once
    fields = FIELDS if verdicts is None else FIELDS + 3
    parts = [HEADER]
    append = parts.append
    for i, c in enumerate(clicks):
        ip = c.client_ip
        method = methods.get(c.method)
        if method is None:
            method = methods[c.method] = _text(c.method)
        append(
            pack(
                fields,
                8,
                c.contact_id or 0,
                8,
                c.clicked_at_us - _PG_EPOCH_US,
                16,
                c.event_id,
                8,
                c.campaign_id,
                8,
                c.link_id,
                8,
                (c.sent_at - _PG_EPOCH_S) * 1_000_000,
                4,
                c.key_id,
            )
        )
        append(_NULL if ip is None else (_INET4 if len(ip) == 4 else _INET6) + ip)
        append(_text(c.user_agent))
        append(method)
        append(_NULL if c.signals is None else _INT4(4, c.signals))
        append(edge_field)
        if verdicts is not None:
            verdict = verdicts[i]
            encoded = judged.get(verdict)
            if encoded is None:
                agent = _NULL if verdict[2] is None else _text(verdict[2])
                encoded = judged[verdict] = _text(verdict[0]) + _text(verdict[1]) + agent
            append(encoded)
    append(TRAILER)
    return b"".join(parts)
