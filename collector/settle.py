"""Final verdicts: clicks move from pending_clicks into clicks with their verdict, and only then count and act.

A click arrives in pending_clicks (collector/ingest.py) due CLICKEDGE_COLLECTOR_VERDICT_HOLD later, so that
the other clicks of its burst have arrived by then. ``settle`` takes the due clicks (``FOR UPDATE SKIP
LOCKED``: collectors share the work), reads the clicks of the same contact and campaign around them,
classifies them (collector/classify.py) and, in one statement of one transaction, moves them to clicks with
their verdicts, keeps the report counters and applies the link actions of people's first clicks. A verdict
is written once, when final; nothing reads one before. A click moved twice (its batch delivered again after
it settled) conflicts in clicks and counts nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import uuid
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import orjson

from collector import actions, stored_agents
from collector.classify import Decision, Fetch, Policy, classify
from collector.networks import Network, NetworkList, contains, prefix
from collector.rules import QUALIFYING_CLICK
from common.events import Click

_T = TypeVar("_T", int, datetime)  # a click's time: microseconds, or as PostgreSQL returns it

MAX_HOLD = 60.0  # seconds a click may wait for its verdict, at most (the contract)

# A pass's claimed clicks, copied whole into a per-connection temporary table: the settling statement reads
# them there (the planner sees how many), so they do not travel to the collector and back.
CREATE_CLAIM_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS claim_stage (LIKE pending_clicks) ON COMMIT DELETE ROWS
"""
# The due clicks, oldest first, taken out of pending_clicks (by their row addresses: no join over the queue)
# into claim_stage; another collector's are skipped. A pass that fails rolls back and leaves them waiting.
CLAIM = """
WITH due AS (
    DELETE FROM pending_clicks WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM pending_clicks WHERE due_at <= $1 ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED
    ))
    RETURNING *
)
INSERT INTO claim_stage SELECT * FROM due
RETURNING contact_id, clicked_at, event_id, campaign_id, link_id, sent_at, client_ip, user_agent, method, signals
"""

# The clicks of the claimed ones' contacts within the claim's time span (widened by the context window),
# settled or not: one index scan of each table's primary key (contact_id, clicked_at) with the contacts as
# an array, in the partitions the span touches. decide() keeps, per contact and campaign, what lies near.
CONTEXT = """
SELECT contact_id, clicked_at, event_id, campaign_id, link_id, sent_at, client_ip, user_agent, method, signals
FROM clicks WHERE contact_id = ANY($1::bigint[]) AND clicked_at BETWEEN $2 AND $3
UNION ALL
SELECT contact_id, clicked_at, event_id, campaign_id, link_id, sent_at, client_ip, user_agent, method, signals
FROM pending_clicks WHERE contact_id = ANY($1::bigint[]) AND clicked_at BETWEEN $2 AND $3
"""

# One statement: move the decided clicks, then derive every counter and first click from the rows actually
# inserted into clicks (RETURNING), as ingest did before verdicts. "counted" is a person's click: verdict
# human, or any click of a campaign that counts everything. Rows are locked in key order so collectors
# cannot deadlock. The decided rows are read from a staging table joined to the verdicts by event id, so
# the planner's estimates downstream start from the batch's size, not from a three-column join it would
# guess at one row (it then joined the batch's pairs in a nested loop: 1.7 s a 5,000-click batch).
_FROM_CLAIM = """
WITH decided AS (
    SELECT s.*, v.verdict, v.reasons, v.stored_agent
    FROM claim_stage s
    JOIN unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) AS v(event_id, verdict, reasons, stored_agent)
        USING (event_id)
), moved AS (
    SELECT event_id FROM claim_stage  -- the claim took them out of pending_clicks
"""
# A batch judged in its own ingest transaction (a hold of 0): straight from ingest's staging table, which
# holds each click's verdict, reasons and stored agent too; nothing waited in pending_clicks.
_FROM_STAGE = """
WITH decided AS (
    SELECT s.*, now() AS received_at FROM click_stage s
), moved AS (
    SELECT event_id FROM decided
"""
# What is stored of a click's address (privacy by default): its network, an IPv4 address's /24 or an IPv6
# address's /48 (as an inet such as 192.0.2.0/24), unless the campaign keeps full addresses; with
# CLICKEDGE_COLLECTOR_CLIENT_IPS=full, the address as it came.
TRUNCATED_IP = """CASE WHEN k.full_client_ips THEN d.client_ip
         ELSE network(set_masklen(d.client_ip, CASE family(d.client_ip) WHEN 4 THEN 24 ELSE 48 END))::inet END"""
FULL_IP = "d.client_ip"
# An anonymous campaign's clicks are stored without their contact (0): counted, never a contact's.
_DERIVE = f"""), settled AS (
    INSERT INTO clicks (contact_id, clicked_at, event_id, campaign_id, link_id, sent_at, key_id, client_ip,
                        user_agent, method, edge, received_at, signals, verdict, verdict_reasons)
    SELECT CASE WHEN k.anonymous THEN 0 ELSE d.contact_id END AS contact_id, d.clicked_at, d.event_id,
           d.campaign_id, d.link_id, d.sent_at, d.key_id, @CLIENT_IP@, coalesce(d.stored_agent, d.user_agent),
           d.method, d.edge, d.received_at, d.signals, d.verdict, string_to_array(d.reasons, ',')
    FROM decided d LEFT JOIN campaigns k USING (campaign_id)
    ORDER BY 1, d.clicked_at, d.event_id
    ON CONFLICT DO NOTHING
    RETURNING contact_id, clicked_at, event_id, campaign_id, link_id, verdict, verdict_reasons
), judged AS (
    SELECT s.*, (s.verdict = 'human' OR coalesce(k.count_everything, false)) AS counted
    FROM settled s LEFT JOIN campaigns k USING (campaign_id)
), inserted AS (
    -- people's clicks: what the unique-click, clicker and action tables are kept from
    SELECT * FROM judged WHERE counted
), batch_pairs AS (
    -- this batch's first and last click, and count, per contact x link
    SELECT campaign_id, link_id, contact_id, min(clicked_at) AS first_click, max(clicked_at) AS last_click,
           count(*) AS clicks,
           string_to_array((array_agg(array_to_string(verdict_reasons, ',') ORDER BY clicked_at, event_id))[1], ',')
               AS first_reasons
    FROM inserted WHERE contact_id <> 0
    GROUP BY campaign_id, link_id, contact_id
), pairs AS (
    -- first and last click per contact x link; (xmax = 0) tells a new pair (a unique click) from an update
    INSERT INTO link_clickers AS lc (campaign_id, link_id, contact_id, first_click, last_click, clicks, first_reasons)
    SELECT campaign_id, link_id, contact_id, first_click, last_click, clicks, first_reasons FROM batch_pairs
    ORDER BY campaign_id, link_id, contact_id
    ON CONFLICT (campaign_id, link_id, contact_id) DO UPDATE
        SET first_click = least(lc.first_click, EXCLUDED.first_click),
            last_click = greatest(lc.last_click, EXCLUDED.last_click),
            clicks = lc.clicks + EXCLUDED.clicks,
            first_reasons = CASE WHEN EXCLUDED.first_click < lc.first_click
                                 THEN EXCLUDED.first_reasons ELSE lc.first_reasons END
    RETURNING campaign_id, link_id, contact_id, first_click, (xmax = 0) AS is_new
), clickers AS (
    -- A contact's first click in the campaign can only be one of this batch's pairs whose first click is
    -- this batch's: a new pair, or an earlier click an edge delivered late. Only those are offered; a new
    -- row is a new clicker, an update only moves the first click earlier.
    INSERT INTO campaign_clickers AS cc (campaign_id, contact_id, first_click)
    SELECT p.campaign_id, p.contact_id, min(p.first_click)
    FROM pairs p JOIN batch_pairs b USING (campaign_id, link_id, contact_id)
    WHERE p.is_new OR p.first_click = b.first_click
    GROUP BY p.campaign_id, p.contact_id ORDER BY p.campaign_id, p.contact_id
    ON CONFLICT (campaign_id, contact_id) DO UPDATE SET first_click = EXCLUDED.first_click
        WHERE EXCLUDED.first_click < cc.first_click
    RETURNING campaign_id, (xmax = 0) AS is_new
), per_link AS (
    INSERT INTO link_click_counts AS c (campaign_id, link_id, clicks, last_click, unique_clicks,
                                        scanner_clicks, preview_clicks, script_clicks)
    SELECT t.campaign_id, t.link_id, t.n, t.last, coalesce(u.n, 0), t.scanner, t.preview, t.script
    FROM (SELECT campaign_id, link_id, count(*) FILTER (WHERE counted) AS n,
                 max(clicked_at) FILTER (WHERE counted) AS last,
                 count(*) FILTER (WHERE NOT counted AND verdict = 'scanner') AS scanner,
                 count(*) FILTER (WHERE NOT counted AND verdict = 'preview') AS preview,
                 count(*) FILTER (WHERE NOT counted AND verdict = 'script') AS script
          FROM judged GROUP BY campaign_id, link_id) t
    LEFT JOIN (SELECT campaign_id, link_id, count(*) AS n FROM pairs WHERE is_new
               GROUP BY campaign_id, link_id) u USING (campaign_id, link_id)
    ORDER BY t.campaign_id, t.link_id
    ON CONFLICT (campaign_id, link_id) DO UPDATE
        SET clicks = c.clicks + EXCLUDED.clicks,
            last_click = greatest(c.last_click, EXCLUDED.last_click),
            unique_clicks = c.unique_clicks + EXCLUDED.unique_clicks,
            scanner_clicks = c.scanner_clicks + EXCLUDED.scanner_clicks,
            preview_clicks = c.preview_clicks + EXCLUDED.preview_clicks,
            script_clicks = c.script_clicks + EXCLUDED.script_clicks
), per_campaign AS (
    INSERT INTO campaign_stats AS s (campaign_id, clicks, unique_clicks, unique_clickers,
                                     scanner_clicks, preview_clicks, script_clicks)
    SELECT t.campaign_id, t.n, coalesce(u.n, 0), coalesce(k.n, 0), t.scanner, t.preview, t.script
    FROM (SELECT campaign_id, count(*) FILTER (WHERE counted) AS n,
                 count(*) FILTER (WHERE NOT counted AND verdict = 'scanner') AS scanner,
                 count(*) FILTER (WHERE NOT counted AND verdict = 'preview') AS preview,
                 count(*) FILTER (WHERE NOT counted AND verdict = 'script') AS script
          FROM judged GROUP BY campaign_id) t
    LEFT JOIN (SELECT campaign_id, count(*) AS n FROM pairs WHERE is_new GROUP BY campaign_id) u
        USING (campaign_id)
    LEFT JOIN (SELECT campaign_id, count(*) AS n FROM clickers WHERE is_new GROUP BY campaign_id) k
        USING (campaign_id)
    ORDER BY t.campaign_id
    ON CONFLICT (campaign_id) DO UPDATE
        SET clicks = s.clicks + EXCLUDED.clicks,
            unique_clicks = s.unique_clicks + EXCLUDED.unique_clicks,
            unique_clickers = s.unique_clickers + EXCLUDED.unique_clickers,
            scanner_clicks = s.scanner_clicks + EXCLUDED.scanner_clicks,
            preview_clicks = s.preview_clicks + EXCLUDED.preview_clicks,
            script_clicks = s.script_clicks + EXCLUDED.script_clicks
), hourly AS (
    INSERT INTO campaign_hourly AS h (campaign_id, hour, clicks, scanner_clicks, preview_clicks, script_clicks)
    -- the UTC hour: date_bin is arithmetic, where date_trunc with a zone looks the zone up for every row
    SELECT campaign_id, date_bin('1 hour', clicked_at, '2000-01-01 00:00+00'), count(*) FILTER (WHERE counted),
           count(*) FILTER (WHERE NOT counted AND verdict = 'scanner'),
           count(*) FILTER (WHERE NOT counted AND verdict = 'preview'),
           count(*) FILTER (WHERE NOT counted AND verdict = 'script')
    FROM judged
    GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (campaign_id, hour) DO UPDATE
        SET clicks = h.clicks + EXCLUDED.clicks,
            scanner_clicks = h.scanner_clicks + EXCLUDED.scanner_clicks,
            preview_clicks = h.preview_clicks + EXCLUDED.preview_clicks,
            script_clicks = h.script_clicks + EXCLUDED.script_clicks
), first_clicks AS (
    -- Each contact's first qualifying click of this batch on a link with actions: one row per contact x link,
    -- whatever event ids a batch repeats.
    SELECT DISTINCT ON (i.campaign_id, i.link_id, i.contact_id)
           i.campaign_id, i.link_id, i.contact_id, i.event_id, i.clicked_at
    FROM judged i
    JOIN links l ON l.campaign_id = i.campaign_id AND l.link_id = i.link_id AND l.actions <> '[]'
    WHERE {QUALIFYING_CLICK}
    ORDER BY i.campaign_id, i.link_id, i.contact_id, i.clicked_at
), applied AS (
    -- The row proves a first click's actions were applied, once.
    INSERT INTO applied_link_actions (campaign_id, link_id, contact_id, event_id)
    SELECT campaign_id, link_id, contact_id, event_id FROM first_clicks
    ON CONFLICT DO NOTHING
    RETURNING campaign_id, link_id, contact_id
)
SELECT (SELECT coalesce(jsonb_object_agg(verdict, n), '{{}}')
        FROM (SELECT verdict, count(*) AS n FROM settled GROUP BY verdict) v) AS verdicts,
       (SELECT count(*) FROM moved) AS moved,
       (SELECT coalesce(jsonb_agg(jsonb_build_object(
            'campaign_id', f.campaign_id, 'link_id', f.link_id, 'contact_id', f.contact_id,
            'event_id', f.event_id, 'clicked_at', f.clicked_at)), '[]')
        FROM applied a JOIN first_clicks f USING (campaign_id, link_id, contact_id)) AS applied
"""  # noqa: S608 - constants only
# The settling statements: of claimed clicks, and of a batch judged at once; with full addresses kept.
SETTLE = _FROM_CLAIM + _DERIVE.replace("@CLIENT_IP@", TRUNCATED_IP)
SETTLE_STAGED = _FROM_STAGE + _DERIVE.replace("@CLIENT_IP@", TRUNCATED_IP)
SETTLE_FULL_IPS = _FROM_CLAIM + _DERIVE.replace("@CLIENT_IP@", FULL_IP)
SETTLE_STAGED_FULL_IPS = _FROM_STAGE + _DERIVE.replace("@CLIENT_IP@", FULL_IP)

PENDING_STATE = "SELECT count(*), extract(epoch FROM now() - min(received_at)) FROM pending_clicks"


@dataclass(frozen=True)
class Judge:
    """What settles clicks: the classifier's policy, the scanner networks (read each pass: the file may
    have been reloaded), the operator's allow-listed networks, the hold, and what a click row keeps of the
    client (docs/privacy.md): its full address or its network (the default), its agent or the agent's families."""

    policy: Policy = Policy()
    scanners: Callable[[], NetworkList] = NetworkList
    allowed: tuple[Network, ...] = ()
    hold: float = 0.0  # seconds a click waits for its burst; 0: settled in its ingest transaction
    full_client_ips: bool = False
    reduce_agents: bool = False  # CLICKEDGE_COLLECTOR_USER_AGENTS=reduced: store agents' families only
    # Tombstones of erased contacts are made with it (collector/contacts.py); empty: none are checked.
    erasure_key: bytes = field(default=b"", repr=False)

    def stored_agent(self, user_agent: str) -> str | None:
        """What a click row keeps of ``user_agent`` instead of it (None: the agent itself)."""
        return stored_agents.reduced(user_agent) if self.reduce_agents else None

    @property
    def context(self) -> timedelta:
        p = self.policy
        return timedelta(seconds=max(p.burst_window, p.echo_window, p.decoy_window))


SETTLE_AT_ONCE = Judge()  # the default policy, no scanner networks, no hold


@dataclass(frozen=True, slots=True)
class Settled:
    claimed: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)  # clicks moved, by verdict (redeliveries left out)
    applied: tuple[actions.AppliedClick, ...] = ()

    @property
    def settled(self) -> int:
        return sum(self.verdicts.values())


async def settle(
    conn: asyncpg.Connection,
    judge: Judge,
    *,
    limit: int = 2000,
    until: datetime | None = None,
) -> Settled:
    """Settle up to ``limit`` clicks due by ``until`` (default: the transaction's now()), in the caller's
    transaction or one of its own."""
    async with conn.transaction():
        await conn.execute(CREATE_CLAIM_STAGE)
        await conn.execute("DELETE FROM claim_stage")  # (an earlier pass of the caller's transaction)
        due = until if until is not None else await conn.fetchval("SELECT now()")
        claimed = await conn.fetch(CLAIM, due, limit)
        if not claimed:
            return Settled()
        decoys = await _decoys(conn, {r["campaign_id"] for r in claimed})
        context = await _context(conn, claimed, judge.context)
        # In a worker thread: a pass over contacts with thousands of clicks in their context takes seconds of
        # CPU, and on the event loop it held up every ingest request (they timed out: 503s, and edges
        # resent batches already committed). The thread and the loop share the GIL in 5 ms turns.
        decisions = await asyncio.to_thread(decide, claimed, context, judge, decoys)
        keys = [r["event_id"] for r in claimed]
        verdicts = [decisions[k.bytes] for k in keys]
        statement = SETTLE_FULL_IPS if judge.full_client_ips else SETTLE
        return await _write(
            conn,
            len(keys),
            statement,
            keys,
            [d.verdict for d in verdicts],
            [",".join(d.reasons) for d in verdicts],
            [judge.stored_agent(r["user_agent"]) for r in claimed],
        )


async def settle_staged(conn: asyncpg.Connection, clicks: int, judge: Judge) -> Settled:
    """Write the batch ingest has staged with its verdicts (judge_batch) into clicks, in the caller's
    transaction: a hold of 0. ``clicks``: how many distinct clicks it stages."""
    return await _write(conn, clicks, SETTLE_STAGED_FULL_IPS if judge.full_client_ips else SETTLE_STAGED)


async def _write(conn: asyncpg.Connection, claimed: int, statement: str, *args: Any) -> Settled:
    """Run a settling statement (SETTLE or SETTLE_STAGED), then apply the link actions of the first clicks it
    reports; in the caller's transaction."""
    row = await conn.fetchrow(statement, *args)
    assert row is not None
    applied = _applied(row["applied"])
    if applied:
        await actions.apply(conn, applied)
    return Settled(claimed, orjson.loads(row["verdicts"]), tuple(applied))


async def pending_state(conn: asyncpg.Connection) -> tuple[int, float]:
    """Clicks waiting for their verdict, and the oldest one's wait in seconds (0 when none waits)."""
    row = await conn.fetchrow(PENDING_STATE)
    assert row is not None
    return int(row[0]), float(row[1] or 0.0)


def decide(
    claimed: Sequence[Any], context: Sequence[Any], judge: Judge, decoys: set[tuple[int, int]]
) -> dict[Hashable, Decision]:
    """The decisions for the claimed rows (of pending_clicks), with the rows of ``context``; ``decoys``: the
    (campaign, link) pairs that are decoy links."""
    scanners = judge.scanners()
    addresses: dict[Any, tuple[bytes | None, bool, bool]] = {}  # per address: (network, scanner's, allowed)

    def fetched(rows: Iterable[Any]) -> list[tuple[int, int, Fetch]]:
        return [
            (r["campaign_id"], r["contact_id"], _fetch(r, scanners, judge.allowed, addresses, decoys)) for r in rows
        ]

    mine = {r["event_id"] for r in claimed}  # the context holds them too: made into fetches once
    others = (r for r in context if r["event_id"] not in mine)
    return decide_fetches(fetched(claimed), fetched(others), judge.policy)


def decide_fetches(
    targets: Sequence[tuple[int, int, Fetch]], context: Sequence[tuple[int, int, Fetch]], policy: Policy
) -> dict[Hashable, Decision]:
    """Decisions for ``targets`` (campaign, contact, fetch): each known contact's clicks classified with
    their clicks around them (``context``, which may repeat targets), an anonymous click (contact 0) alone."""
    groups: dict[tuple[int, int], dict[Hashable, Fetch]] = defaultdict(dict)
    out: dict[Hashable, Decision] = {}
    for campaign, contact, fetch in targets:
        if contact == 0:
            out.update(classify([fetch], policy))
        else:
            groups[(campaign, contact)][fetch.key] = fetch
    for campaign, contact, fetch in context:
        group = groups.get((campaign, contact))
        if group is not None:
            group.setdefault(fetch.key, fetch)
    for fetches in groups.values():
        out.update(classify(list(fetches.values()), policy))
    return out


async def judge_batch(conn: asyncpg.Connection, clicks: Sequence[Click], judge: Judge) -> list[Decision]:
    """The decisions for a batch judged at once (a hold of 0), one per click in order, with what the
    database holds around the batch's clicks as their context."""
    scanners = judge.scanners()
    labels: dict[bytes | None, tuple[bool, bool]] = {}
    decoys = await _decoys(conn, {c.campaign_id for c in clicks})
    targets = [
        (c.campaign_id, c.contact_id or 0, _fetch_click(c, scanners, judge.allowed, labels, decoys)) for c in clicks
    ]
    spans = {
        key: (_at(lo), _at(hi))  # from microseconds: two datetimes a contact, not one a click
        for key, (lo, hi) in _spans((c.campaign_id, c.contact_id or 0, c.clicked_at_us) for c in clicks).items()
    }
    rows = await _near(conn, spans, judge.context)
    addresses: dict[Any, tuple[bytes | None, bool, bool]] = {}
    context = [(r["campaign_id"], r["contact_id"], _fetch(r, scanners, judge.allowed, addresses, decoys)) for r in rows]
    decisions = decide_fetches(targets, context, judge.policy)
    return [decisions[c.event_id] for c in clicks]


DECOY_LINKS = "SELECT campaign_id, link_id FROM links WHERE decoy AND campaign_id = ANY($1::bigint[])"


async def _decoys(conn: asyncpg.Connection, campaigns: set[int]) -> set[tuple[int, int]]:
    """The decoy links of these campaigns, as (campaign, link)."""
    return {(r["campaign_id"], r["link_id"]) for r in await conn.fetch(DECOY_LINKS, sorted(campaigns))}


def _at(clicked_at_us: int) -> datetime:
    return datetime.fromtimestamp(clicked_at_us / 1_000_000, UTC)


def _fetch_click(
    click: Click,
    scanners: NetworkList,
    allowed: tuple[Network, ...],
    labels: dict[bytes | None, tuple[bool, bool]],
    decoys: set[tuple[int, int]],
) -> Fetch:
    packed = click.client_ip
    is_scanner, is_allowed = _labels(packed, scanners, allowed, labels)
    return Fetch(
        key=click.event_id,
        link_id=click.link_id,
        at=click.clicked_at_us / 1_000_000,
        sent_at=click.sent_at,
        method=click.method,
        user_agent=click.user_agent,
        signals=click.signals,
        network=prefix(packed),
        scanner_network=is_scanner,
        allowed_network=is_allowed,
        decoy=(click.campaign_id, click.link_id) in decoys,
    )


def _labels(
    packed: bytes | None,
    scanners: NetworkList,
    allowed: tuple[Network, ...],
    labels: dict[bytes | None, tuple[bool, bool]],
) -> tuple[bool, bool]:
    """(in a scanner network and not allowed, in an allowed network), computed once per address."""
    known = labels.get(packed)
    if known is None:
        is_allowed = contains(allowed, packed)
        known = labels[packed] = (not is_allowed and scanners.label(packed) is not None, is_allowed)
    return known


def _fetch(
    row: Any,
    scanners: NetworkList,
    allowed: tuple[Network, ...],
    addresses: dict[Any, tuple[bytes | None, bool, bool]],
    decoys: set[tuple[int, int]],
) -> Fetch:
    address = row["client_ip"]
    known = addresses.get(address)
    if known is None:
        packed = _packed(address)
        is_scanner, is_allowed = _labels(packed, scanners, allowed, {})
        known = addresses[address] = (prefix(packed), is_scanner, is_allowed)
    network, is_scanner, is_allowed = known
    return Fetch(
        key=row["event_id"].bytes,
        link_id=row["link_id"],
        at=row["clicked_at"].timestamp(),
        sent_at=int(row["sent_at"].timestamp()),
        method=row["method"],
        user_agent=row["user_agent"],
        signals=row["signals"],
        network=network,
        scanner_network=is_scanner,
        allowed_network=is_allowed,
        decoy=(row["campaign_id"], row["link_id"]) in decoys,
    )


def _packed(address: Any) -> bytes | None:
    if address is None:
        return None
    if isinstance(address, ipaddress.IPv4Interface | ipaddress.IPv6Interface):
        address = address.ip
    packed: bytes = address.packed
    return packed


async def _context(conn: asyncpg.Connection, claimed: Sequence[Any], around: timedelta) -> list[Any]:
    """The clicks near the claimed ones of each known contact in the same campaign (the claimed included)."""
    return await _near(conn, _spans((r["campaign_id"], r["contact_id"], r["clicked_at"]) for r in claimed), around)


def _spans(clicks: Iterable[tuple[int, int, _T]]) -> dict[tuple[int, int], tuple[_T, _T]]:
    """Per known contact and campaign, the first and last of their clicks' times."""
    spans: dict[tuple[int, int], tuple[_T, _T]] = {}
    for campaign, contact, at in clicks:
        if contact == 0:
            continue
        lo, hi = spans.get((campaign, contact), (at, at))
        spans[(campaign, contact)] = (min(lo, at), max(hi, at))
    return spans


async def _near(
    conn: asyncpg.Connection, spans: dict[tuple[int, int], tuple[datetime, datetime]], around: timedelta
) -> list[Any]:
    """The stored clicks (settled or waiting) of each contact and campaign within ``around`` of its span."""
    if not spans:
        return []
    contacts = sorted({contact for _, contact in spans})
    lo = min(s[0] for s in spans.values()) - around
    hi = max(s[1] for s in spans.values()) + around
    near = []
    for row in await conn.fetch(CONTEXT, contacts, lo, hi):
        span = spans.get((row["campaign_id"], row["contact_id"]))
        if span is not None and span[0] - around <= row["clicked_at"] <= span[1] + around:
            near.append(row)
    return near


def _applied(raw: str) -> list[actions.AppliedClick]:
    """SETTLE's ``applied`` column: a JSON array of the first clicks whose link actions are now due."""
    return [
        actions.AppliedClick(
            a["campaign_id"],
            a["link_id"],
            a["contact_id"],
            uuid.UUID(a["event_id"]),
            datetime.fromisoformat(a["clicked_at"]),
        )
        for a in orjson.loads(raw)
    ]
