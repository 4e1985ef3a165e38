"""The collector's write path: one batch, one transaction, exactly-once effects.

Rows are copied in binary (encoded by collector/copy_binary.py) into a per-connection temporary
staging table, then moved into ``pending_clicks`` with ``ON CONFLICT DO NOTHING``, where each waits for its
verdict (CLICKEDGE_COLLECTOR_VERDICT_HOLD). collector/settle.py later moves them into ``clicks`` and
derives everything else from a click (report counters, first clicks, link actions, webhooks to send) from
the rows it moved, in the same transaction. With a hold of 0 a batch is judged at once instead, with what
the database holds around it, and written from the staging table into ``clicks`` in this transaction. A
batch's one-click unsubscribes are carried out in the same transaction (collector/unsubscribes.py). A
redelivered batch therefore changes nothing, and the caller answers 200 only after COMMIT.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

import asyncpg

from collector import contacts, settle, unsubscribes
from collector.copy_binary import encode_stage_rows
from collector.networks import stored
from common import events
from common.events import Click

STAGE_COLUMNS = (
    "contact_id",
    "clicked_at",
    "event_id",
    "campaign_id",
    "link_id",
    "sent_at",
    "key_id",
    "client_ip",
    "user_agent",
    "method",
    "signals",
    "edge",
)
# A batch judged at once (a hold of 0) is staged with each click's verdict, its reasons (comma-joined) and
# what its row keeps of its agent instead of it (NULL: the agent itself).
JUDGED_COLUMNS = (*STAGE_COLUMNS, "verdict", "reasons", "stored_agent")

# Created once per pooled connection; ON COMMIT DELETE ROWS empties it after every batch.
CREATE_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS click_stage (
    contact_id bigint, clicked_at timestamptz, event_id uuid, campaign_id bigint, link_id bigint,
    sent_at timestamptz, key_id integer, client_ip inet, user_agent text, method text, signals integer, edge text,
    verdict text, reasons text, stored_agent text
) ON COMMIT DELETE ROWS
"""

# A click waits in pending_clicks for its verdict (collector/settle.py), due $1 seconds from now. One already
# settled (its batch delivered again) is not taken again; one already waiting conflicts. Either way the
# RETURNING rows are the clicks this batch brought.
MOVE_STAGED = """
WITH inserted AS (
    INSERT INTO pending_clicks (contact_id, clicked_at, event_id, campaign_id, link_id, sent_at, key_id,
                                client_ip, user_agent, method, signals, edge, due_at)
    SELECT s.contact_id, s.clicked_at, s.event_id, s.campaign_id, s.link_id, s.sent_at, s.key_id,
           s.client_ip, s.user_agent, s.method, s.signals, s.edge, now() + make_interval(secs => $1)
    FROM click_stage s
    WHERE NOT EXISTS (SELECT 1 FROM clicks c WHERE c.contact_id = s.contact_id AND c.clicked_at = s.clicked_at
                                               AND c.event_id = s.event_id)
    ORDER BY s.contact_id, s.clicked_at, s.event_id
    ON CONFLICT DO NOTHING
    RETURNING contact_id, clicked_at, event_id
)
SELECT contact_id, clicked_at, event_id FROM inserted
"""


# Clicks refused for their time: kept once per event id, with the values as received.
REFUSE = """
INSERT INTO refused_clicks (event_id, reason, edge, clicked_at_us, campaign_id, link_id, contact_id, sent_at,
                            key_id, client_ip, user_agent, method, signals)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[],
                     $8::bigint[], $9::integer[], $10::inet[], $11::text[], $12::text[], $13::integer[])
ON CONFLICT (event_id) DO NOTHING
RETURNING reason
"""
FUTURE = "future"
TOO_OLD = "too_old"
# A request the edge answered 410 because the link was blocked (the kill switch): kept, never a click.
BLOCKED = events.BLOCKED
REASONS = (FUTURE, TOO_OLD, BLOCKED)


@dataclass(frozen=True, slots=True)
class Refused:
    click: Click
    reason: str  # one of REASONS


@dataclass(frozen=True, slots=True)
class IngestResult:
    received: int
    inserted: int
    first_clicks_with_actions: int = 0  # of the clicks settled with the batch (a hold of 0)
    refused: int = 0  # clicks of this batch refused for their time
    newly_refused: tuple[tuple[str, int], ...] = ()  # (reason, count) of those not refused before
    verdicts: tuple[tuple[str, int], ...] = ()  # clicks settled with the batch (a hold of 0), by verdict
    unsubscribes: int = 0  # one-click unsubscribes of this batch, new or not
    unsubscribes_applied: int = 0  # of them, those that did something (collector/unsubscribes.py)

    @property
    def duplicates(self) -> int:
        return self.received - self.inserted - self.refused - self.unsubscribes


def split_outcomes(clicks: list[Click]) -> tuple[list[Click], list[Refused], list[Click]]:
    """The clicks; the requests the edge blocked (kept in refused_clicks with their reason); and the one-click
    unsubscribes (collector/unsubscribes.py)."""
    if all(c.outcome == events.REDIRECT for c in clicks):
        return clicks, [], []
    return (
        [c for c in clicks if c.outcome == events.REDIRECT],
        [Refused(c, BLOCKED) for c in clicks if c.outcome == events.BLOCKED],
        [c for c in clicks if c.outcome == events.UNSUBSCRIBE],
    )


def check_clock(
    clicks: list[Click], now_us: int, max_skew_us: int, max_age_us: int
) -> tuple[list[Click], list[Refused]]:
    """Split a batch into the clicks to write and those refused for their time.

    A click more than ``max_skew_us`` ahead of the collector's clock comes from an edge whose clock is
    wrong; one older than ``max_age_us`` would land outside every kept partition. They are refused, not
    clamped: clicked_at is part of a click's primary key, so a clamped click would get a new identity on
    every redelivery (clamped to a different "now") and be counted again.
    """
    latest, earliest = now_us + max_skew_us, now_us - max_age_us
    if all(earliest <= c.clicked_at_us <= latest for c in clicks):
        return clicks, []  # the common case: one pass, no copies
    accepted: list[Click] = []
    refused: list[Refused] = []
    for click in clicks:
        if click.clicked_at_us > latest:
            refused.append(Refused(click, FUTURE))
        elif click.clicked_at_us < earliest:
            refused.append(Refused(click, TOO_OLD))
        else:
            accepted.append(click)
    return accepted, refused


async def prepare_connection(conn: asyncpg.Connection) -> None:
    await conn.execute(CREATE_STAGE)


async def ingest(
    conn: asyncpg.Connection,
    edge: str,
    clicks: list[Click],
    refused: Sequence[Refused] = (),
    judge: settle.Judge = settle.SETTLE_AT_ONCE,
    unsubscribing: Sequence[Click] = (),
) -> IngestResult:
    """Write one batch exactly once: its clicks to wait for their verdicts, the refused ones to
    refused_clicks, and its one-click unsubscribes carried out, in one transaction. With a hold of 0 the due
    clicks are settled in that transaction too. Returns after COMMIT; raises on any database error (nothing
    kept)."""
    if not clicks and not refused and not unsubscribing:
        return IngestResult(0, 0)
    received = len(clicks) + len(refused) + len(unsubscribing)
    unsubscribe_rows = len(unsubscribing)
    settled = settle.Settled()
    applied = 0
    async with conn.transaction():
        if judge.erasure_key:
            clicks, refused, unsubscribing = await _without_erased(
                conn, judge.erasure_key, clicks, refused, unsubscribing
            )
        if unsubscribing:
            applied = await unsubscribes.apply(conn, unsubscribes.from_clicks(unsubscribing))
        if not clicks:
            inserted = 0
        elif judge.hold == 0:  # judged now, with what the database holds around them
            decisions = await settle.judge_batch(conn, clicks, judge)
            verdicts = [
                (d.verdict, ",".join(d.reasons), judge.stored_agent(c.user_agent))
                for c, d in zip(clicks, decisions, strict=True)
            ]
            await _stage(conn, edge, clicks, verdicts)
            settled = await settle.settle_staged(conn, len({c.event_id for c in clicks}), judge)
            inserted = settled.settled
        else:
            await _stage(conn, edge, clicks)
            inserted = len(await conn.fetch(MOVE_STAGED, judge.hold))
        newly = await _write_refused(conn, edge, refused, judge) if refused else ()
    return IngestResult(
        received,
        inserted,
        len(settled.applied),
        len(refused),
        newly,
        tuple(sorted(settled.verdicts.items())),
        unsubscribe_rows,
        applied,
    )


async def _without_erased(
    conn: asyncpg.Connection,
    key: bytes,
    clicks: list[Click],
    refused: Sequence[Refused],
    unsubscribing: Sequence[Click],
) -> tuple[list[Click], Sequence[Refused], Sequence[Click]]:
    """The batch with the clicks of erased contacts made anonymous (collector/contacts.py): a spool replayed,
    a late batch or an old link clicked again never brings a contact back. Their unsubscribes are dropped:
    nothing of theirs is left to change."""
    known = {c.contact_id for c in (*clicks, *(r.click for r in refused), *unsubscribing) if c.contact_id}
    erased = await contacts.erased_among(conn, key, known)
    if not erased:
        return clicks, refused, unsubscribing
    return (
        [replace(c, contact_id=None) if c.contact_id in erased else c for c in clicks],
        [Refused(replace(r.click, contact_id=None), r.reason) if r.click.contact_id in erased else r for r in refused],
        [c for c in unsubscribing if c.contact_id not in erased],
    )


NO_LIMIT = 2**31 - 1  # settle everything due (the corpus's simulation)


async def _stage(
    conn: asyncpg.Connection,
    edge: str,
    clicks: list[Click],
    verdicts: Sequence[tuple[str, str, str | None]] | None = None,
) -> None:
    rows = encode_stage_rows(edge, clicks, verdicts)
    columns = STAGE_COLUMNS if verdicts is None else JUDGED_COLUMNS
    # A memoryview: asyncpg would take bytes for a file name.
    await conn.copy_to_table("click_stage", source=memoryview(rows), columns=columns, format="binary")


async def _write_refused(
    conn: asyncpg.Connection, edge: str, refused: Sequence[Refused], judge: settle.Judge
) -> tuple[tuple[str, int], ...]:
    # Sorted by event id: concurrent batches with the same refused clicks lock their rows in one order.
    ordered = sorted(refused, key=lambda r: r.click.event_id)
    clicks = [r.click for r in ordered]
    rows = await conn.fetch(
        REFUSE,
        [uuid.UUID(bytes=c.event_id) for c in clicks],
        [r.reason for r in ordered],
        [edge] * len(clicks),
        [c.clicked_at_us for c in clicks],
        [c.campaign_id for c in clicks],
        [c.link_id for c in clicks],
        [c.contact_id for c in clicks],
        [c.sent_at for c in clicks],
        [c.key_id for c in clicks],
        [stored(c.client_ip, judge.full_client_ips) if c.client_ip else None for c in clicks],
        [judge.stored_agent(c.user_agent) or c.user_agent for c in clicks],
        [c.method for c in clicks],
        [c.signals for c in clicks],
    )
    counts = Counter(r["reason"] for r in rows)
    return tuple((reason, counts[reason]) for reason in REASONS if counts[reason])
