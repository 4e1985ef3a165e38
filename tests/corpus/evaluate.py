"""Runs the labelled corpus through the collector's real write path on PostgreSQL and scores the verdicts.

Each scenario is a campaign whose links all have an action. Clicks arrive in time order, each a second after
it was made (an edge's shipping), through ``ingest.ingest``; each waits the hold in pending_clicks and is
settled by ``settle.settle``, the statements production runs. Only the clock is simulated: a click's due
time is set to its simulated arrival plus the hold, and settling runs up to each arrival's simulated time,
so a corpus spread over weeks runs in seconds. Then every verdict is compared with the click's label, and
every applied link action with the label of the click that fired it.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson

from collector import campaigns, ingest, settle
from common import signals
from common.events import Click, EventIds
from links.rewrite import LinkSlot
from tests.corpus.scenarios import DECOY_LINK, Labelled, Scenario, agent

ACTIONS = [{"type": "add_tag", "tag": "clicked"}]
FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)


@dataclass(slots=True)
class Score:
    scenario: str
    humans: int = 0
    humans_mislabelled: int = 0
    machines: int = 0
    machines_caught: int = 0  # labelled as any machine verdict
    actions: int = 0
    actions_by_machines: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def recall(self) -> float | None:
        """Of the machines' clicks, the share labelled a machine's."""
        return self.machines_caught / self.machines if self.machines else None

    @property
    def precision(self) -> float | None:
        """Of the clicks labelled a machine's, the share that were."""
        labelled = self.machines_caught + self.humans_mislabelled
        return self.machines_caught / labelled if labelled else None

    @property
    def human_error(self) -> float | None:
        """Of the people's clicks, the share labelled a machine's."""
        return self.humans_mislabelled / self.humans if self.humans else None

    def add(self, other: Score) -> None:
        self.humans += other.humans
        self.humans_mislabelled += other.humans_mislabelled
        self.machines += other.machines
        self.machines_caught += other.machines_caught
        self.actions += other.actions
        self.actions_by_machines += other.actions_by_machines
        self.reasons.update(other.reasons)


def headers_get(headers: dict[str, str]) -> Callable[[str], str | None]:
    folded = {k.lower(): v for k, v in headers.items()}
    return lambda name: folded.get(name.lower())


async def evaluate(
    conn: asyncpg.Connection,
    scenarios: Sequence[Scenario],
    judge: settle.Judge,
    *,
    first_campaign: int,
    hold: float = 30.0,
    ship_delay: float = 1.0,
) -> list[Score]:
    """Scores per scenario, then the total (named "all")."""
    await ingest.prepare_connection(conn)
    sent = datetime.now(UTC).replace(microsecond=0) - timedelta(days=25)
    ids = EventIds()
    truth: dict[uuid.UUID, tuple[str, Labelled]] = {}
    arrivals: list[tuple[float, Click]] = []
    for offset, scenario in enumerate(scenarios):
        campaign_id = first_campaign + offset
        await _register(conn, campaign_id, scenario)
        for click in scenario.clicks:
            at = sent + timedelta(seconds=click.at)
            event = ids.next_bytes(int(at.timestamp() * 1000))
            truth[uuid.UUID(bytes=event)] = (scenario.name, click)
            arrivals.append(
                (
                    click.at + ship_delay,
                    Click(
                        event,
                        int(at.timestamp() * 1_000_000),
                        campaign_id,
                        click.link,
                        campaign_id * 10_000 + click.message + 1,
                        int(sent.timestamp()),
                        1,
                        ipaddress.ip_address(click.ip).packed,
                        agent(click.user_agent, at.timestamp()),
                        click.method,
                        signals.header_signals(headers_get(click.headers)),
                    ),
                )
            )
    arrivals.sort(key=lambda a: a[0])
    waiting = replace(judge, hold=3600.0)  # nothing falls due by the real clock; due times are set below
    for tick in _ticks(arrivals):
        arrived = tick[0][0]
        await settle.settle(conn, judge, until=sent + timedelta(seconds=arrived), limit=ingest.NO_LIMIT)
        batch = [c for _, c in tick]
        await ingest.ingest(conn, "corpus", batch, judge=waiting)
        await conn.execute(
            "UPDATE pending_clicks SET due_at = $2 WHERE event_id = ANY($1::uuid[])",
            [uuid.UUID(bytes=c.event_id) for c in batch],
            sent + timedelta(seconds=arrived + hold),
        )
    await settle.settle(conn, judge, until=FAR_FUTURE, limit=ingest.NO_LIMIT)
    return await _score(conn, scenarios, truth, first_campaign)


def _ticks(arrivals: list[tuple[float, Click]]) -> list[list[tuple[float, Click]]]:
    """Arrivals grouped as an edge ships them: a batch per second."""
    ticks: list[list[tuple[float, Click]]] = []
    for arrival in arrivals:
        if ticks and arrival[0] - ticks[-1][0][0] < 1.0:
            ticks[-1].append(arrival)
        else:
            ticks.append([arrival])
    return ticks


async def _register(conn: asyncpg.Connection, campaign_id: int, scenario: Scenario) -> None:
    await campaigns.upsert_campaign(conn, campaign_id, name=scenario.name)
    slots = [LinkSlot(i, f"https://shop.example.com/{i}", f"L{i}", "html") for i in range(1, scenario.links + 1)]
    if scenario.decoy:
        slots.append(LinkSlot(DECOY_LINK, "https://shop.example.com/", "decoy", "html"))
    await campaigns.register_links(conn, campaign_id, slots)
    await conn.execute(
        "UPDATE links SET actions = $2, decoy = (link_id = $3) WHERE campaign_id = $1",
        campaign_id,
        orjson.dumps(ACTIONS).decode(),
        DECOY_LINK,
    )


async def _score(
    conn: asyncpg.Connection,
    scenarios: Sequence[Scenario],
    truth: dict[uuid.UUID, tuple[str, Labelled]],
    first_campaign: int,
) -> list[Score]:
    campaign_ids = [first_campaign + i for i in range(len(scenarios))]
    scores = {s.name: Score(s.name) for s in scenarios}
    rows = await conn.fetch(
        "SELECT event_id, verdict, verdict_reasons FROM clicks WHERE campaign_id = ANY($1::bigint[])", campaign_ids
    )
    assert len(rows) == len(truth), "every click of the corpus settled"
    for row in rows:
        name, click = truth[row["event_id"]]
        score = scores[name]
        machine = row["verdict"] != "human"
        if click.label == "human":
            score.humans += 1
            score.humans_mislabelled += machine
        else:
            score.machines += 1
            score.machines_caught += machine
        score.reasons.update(row["verdict_reasons"])
    applied = await conn.fetch(
        "SELECT event_id FROM applied_link_actions WHERE campaign_id = ANY($1::bigint[])", campaign_ids
    )
    for row in applied:
        name, click = truth[row["event_id"]]
        scores[name].actions += 1
        scores[name].actions_by_machines += click.label != "human"
    total = Score("all")
    for score in scores.values():
        total.add(score)
    return [*scores.values(), total]


def table(scores: Sequence[Score]) -> str:
    """The scores as a Markdown table."""

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f} %"

    lines = [
        "| scenario | machine clicks | labelled a machine's (recall) | precision | people's clicks | "
        "people's labelled a machine's | actions fired | by machines |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in scores:
        lines.append(
            f"| {s.scenario} | {s.machines} | {pct(s.recall)} | {pct(s.precision)} | {s.humans} | "
            f"{pct(s.human_error)} | {s.actions} | {s.actions_by_machines} |"
        )
    return "\n".join(lines)
