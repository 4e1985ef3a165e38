"""The collector's binary COPY encoder: what PostgreSQL reads back is exactly what was encoded."""

from __future__ import annotations

import asyncio
import struct
from datetime import UTC, datetime, timedelta

import asyncpg
from hypothesis import given, settings
from hypothesis import strategies as st

from collector import ingest
from collector.copy_binary import HEADER, TRAILER, encode_stage_rows
from common.events import METHODS, Click, EventIds, decode_batch
from common.signals import MAX_SIGNALS
from loadtests.run import stage_records

_ids = EventIds()


def clicks(rows: list[tuple[int | None, str, str, str]], signals: list[int | None] | None = None) -> list[Click]:
    at = 1_790_000_000_000_000
    wire = [
        [_ids.next(at // 1000), at + n * 7, 4_000_000_000 + n, n % 5, contact, n, 65535, ip, ua, method]
        for n, (contact, ip, ua, method) in enumerate(rows)
    ]
    for row, value in zip(wire, signals or [], strict=False):
        row.append(value)  # an edge that records signals (or says it has none: null); else an older edge
    return decode_batch({"v": 1, "edge": "edge-é", "clicks": wire})[1]


def test_stream_framing() -> None:
    data = encode_stage_rows("e", clicks([(5, "192.0.2.1", "ua", "GET")]))
    assert data.startswith(HEADER) and data.endswith(TRAILER)
    assert struct.unpack_from(">h", data, len(HEADER))[0] == len(ingest.STAGE_COLUMNS)
    judged = encode_stage_rows("e", clicks([(5, "192.0.2.1", "ua", "GET")]), [("human", "", None)])
    assert struct.unpack_from(">h", judged, len(HEADER))[0] == len(ingest.JUDGED_COLUMNS)
    assert encode_stage_rows("e", []) == HEADER + TRAILER


row = st.tuples(
    st.one_of(st.none(), st.integers(1, 2**63 - 1)),
    st.sampled_from(["", "192.0.2.1", "0.0.0.0", "2001:db8::1", "::ffff:192.0.2.9", "fe80::1"]),
    st.text(max_size=40).map(lambda s: s.replace("\x00", "")),
    st.sampled_from(sorted(METHODS)),
)


verdict = st.tuples(
    st.sampled_from(["human", "scanner", "preview", "script"]),
    st.sampled_from(["", "fast", "burst,fast,mail_client", "é"]),
    st.sampled_from([None, "", "Chrome; Windows", "Mobile Safari; iOS"]),
)


@settings(max_examples=25, deadline=None)
@given(
    rows=st.lists(row, max_size=20),
    signals=st.lists(st.one_of(st.none(), st.integers(0, MAX_SIGNALS))),
    verdicts=st.one_of(st.none(), st.lists(verdict, min_size=20, max_size=20)),
)
def test_postgresql_reads_back_every_value(
    database_url: str,
    rows: list[tuple[int | None, str, str, str]],
    signals: list[int | None],
    verdicts: list[tuple[str, str, str | None]] | None,
) -> None:
    batch = clicks(rows, signals)
    asyncio.run(_round_trip(database_url, batch, None if verdicts is None else verdicts[: len(batch)]))


async def _round_trip(
    database_url: str, batch: list[Click], verdicts: list[tuple[str, str, str | None]] | None
) -> None:
    # With verdicts (a batch judged at once), each row carries its click's verdict, reasons and stored agent.
    names = ingest.STAGE_COLUMNS if verdicts is None else ingest.JUDGED_COLUMNS
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await ingest.prepare_connection(conn)
            data = encode_stage_rows("edge-é", batch, verdicts)
            await conn.copy_to_table("click_stage", source=memoryview(data), columns=names, format="binary")
            columns = ", ".join(names)  # constant names
            got = await conn.fetch(f"SELECT {columns} FROM click_stage ORDER BY event_id")  # noqa: S608
    finally:
        await conn.close()
    # What asyncpg's own COPY would have been given for these clicks, as Python values.
    records = stage_records("edge-é", batch)
    if verdicts is not None:
        records = [(*r, *v) for r, v in zip(records, verdicts, strict=True)]
    assert [tuple(r) for r in got] == sorted(records, key=lambda r: r[2])


def test_timestamps_before_and_after_postgresqls_epoch() -> None:
    # timestamptz is microseconds from 2000-01-01: a 1970 send time is negative, and must stay exact.
    [c] = clicks([(1, "", "", "GET")])
    data = encode_stage_rows("e", [c])
    fields = struct.unpack_from(">h" + "iq" * 2, data, len(HEADER))
    since_2000 = datetime.fromtimestamp(c.clicked_at_us / 1e6, UTC) - datetime(2000, 1, 1, tzinfo=UTC)
    assert fields[4] == round(since_2000 / timedelta(microseconds=1))
    assert c.sent_at < datetime(2000, 1, 1, tzinfo=UTC).timestamp()
