"""Click charts for the report pages, as inline SVG. Pure: no I/O and no framework, so a page embeds the string
and a test reads it.

The input is a campaign report's ``hourly`` entries (collector/reports.py). ``bucket`` keeps hours when the
range spans at most three days, else sums whole UTC days; past MAX_BUCKETS days each bucket covers several
whole days (``Series.step``), so no range makes more than MAX_BUCKETS rows (or points on the page).

``render`` tells people from machines by more than colour: a solid line with filled circles, a dashed line with
hollow squares, and a legend that names both. The markup has no script and no style (the pages'
Content-Security-Policy forbids inline style): presentation attributes, and class names a stylesheet may
override (``chart``, ``grid``, ``axis``, ``legend``, ``series-people``, ``series-machines``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any, Literal

Unit = Literal["hour", "day"]

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
HOURLY_SPAN = timedelta(days=3)  # the longest range still drawn by the hour (73 buckets)
MAX_BUCKETS = 400  # a campaign running for years gets buckets of several days, not 100,000 hours

WIDTH, HEIGHT = 720, 300
LEFT, RIGHT, TOP, BOTTOM = 56, 56, 40, 36  # room for the value labels, the legend above and the dates below
PEOPLE, MACHINES = "#1f5fbf", "#b35c00"


@dataclass(frozen=True, slots=True)
class Point:
    """One hour of a report: people's clicks, and machines' (every automated verdict together)."""

    at: datetime
    people: int
    machines: int


@dataclass(frozen=True, slots=True)
class Row:
    """One bucket, from ``at`` (UTC) for the series' step."""

    at: datetime
    people: int
    machines: int


@dataclass(frozen=True, slots=True)
class Series:
    """Buckets in time order, zero-filled: an hour each, or ``step`` (one or more whole days) each."""

    unit: Unit
    rows: list[Row]
    step: timedelta = HOUR


def from_report(hourly: Iterable[Mapping[str, Any]]) -> list[Point]:
    """Points from a campaign report's ``hourly`` entries (``{"hour", "clicks", "automated": {verdict: n}}``)."""
    return [Point(datetime.fromisoformat(e["hour"]), e["clicks"], sum(e["automated"].values())) for e in hourly]


def bucket(points: Sequence[Point], start: datetime | None = None, end: datetime | None = None) -> Series:
    """The points from ``start`` to ``end`` (both included; by default the points' own span), bucketed.

    Hourly when the range spans at most HOURLY_SPAN, else by UTC day, several days a bucket when the range is
    longer than MAX_BUCKETS days. No points at all make an empty series; a range without points, zeros."""
    if not points:
        return Series("hour", [])
    first = _utc(start) if start is not None else min(_utc(p.at) for p in points)
    last = _utc(end) if end is not None else max(_utc(p.at) for p in points)
    if last < first:
        raise ValueError(f"the range ends ({last.isoformat()}) before it starts ({first.isoformat()})")
    unit: Unit
    if last - first <= HOURLY_SPAN:
        unit, step, origin = "hour", HOUR, first.replace(minute=0, second=0, microsecond=0)
    else:
        origin = first.replace(hour=0, minute=0, second=0, microsecond=0)
        days = (last - origin) // DAY + 1
        unit, step = "day", DAY * -(-days // MAX_BUCKETS)
    count = (last - origin) // step + 1
    people, machines = [0] * count, [0] * count
    for p in points:
        at = _utc(p.at)
        # The range itself, not its buckets: a click before ``start`` stays out though its hour is drawn.
        if first <= at <= last:
            i = (at - origin) // step
            people[i] += p.people
            machines[i] += p.machines
    return Series(unit, [Row(origin + i * step, people[i], machines[i]) for i in range(count)], step)


def label(at: datetime, unit: Unit) -> str:
    """The bucket's start in UTC: ``2026-12-01 14:00`` for an hour, ``2026-12-01`` for a day."""
    return _utc(at).strftime("%Y-%m-%d %H:%M" if unit == "hour" else "%Y-%m-%d")


def table(series: Series) -> list[tuple[str, int, int]]:
    """The rows for the HTML table beside the chart: (label, people, machines)."""
    return [(label(r.at, series.unit), r.people, r.machines) for r in series.rows]


def describe(series: Series) -> str:
    """One sentence for the chart's description: the range, the totals and the people's peak."""
    rows = series.rows
    if not rows:
        return "No clicks yet."
    people, machines = sum(r.people for r in rows), sum(r.machines for r in rows)
    by = series.unit if series.step in (HOUR, DAY) else f"{series.step.days} days"
    peak = max(rows, key=lambda r: r.people)  # the first of equal peaks
    most = f"people's peak {peak.people} at {label(peak.at, series.unit)}" if people else "none by people"
    return (
        f"From {label(rows[0].at, series.unit)} to {label(rows[-1].at, series.unit)} UTC, by {by}: "
        f"{people} clicks by people and {machines} by machines; {most}."
    )


def render(series: Series, *, id_prefix: str = "chart", title: str) -> str:
    """The chart as an inline, accessible SVG element; an empty series says there are no clicks yet."""
    rows = series.rows
    ids = escape(id_prefix)
    height = HEIGHT if rows else 40
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-labelledby="{ids}-title {ids}-desc"><title id="{ids}-title">{escape(title)}</title>'
        f'<desc id="{ids}-desc">{escape(describe(series))}</desc>'
    ]
    if not rows:
        out.append(f'<text x="{WIDTH // 2}" y="24" text-anchor="middle" font-size="14">No clicks yet</text></svg>')
        return "".join(out)
    step, ceiling = _scale(max(max(r.people, r.machines) for r in rows))
    width, bottom = WIDTH - LEFT - RIGHT, HEIGHT - BOTTOM
    xs = [LEFT + (width * i / (len(rows) - 1) if len(rows) > 1 else width / 2) for i in range(len(rows))]

    def y(value: int) -> float:
        return bottom - (bottom - TOP) * value / ceiling

    out.append('<g class="grid" stroke="#d0d0d0" stroke-width="1">')
    out += [
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}"/>'
        for v in range(step, ceiling + 1, step)
    ]
    out.append('</g><g class="axis" font-size="11" fill="#333">')
    out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{bottom}" y2="{bottom}" stroke="#333"/>')
    out += [
        f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v}</text>' for v in range(0, ceiling + 1, step)
    ]
    out += [
        f'<text x="{xs[i]:.1f}" y="{bottom + 18}" text-anchor="middle">{escape(label(rows[i].at, series.unit))}</text>'
        for i in _ticks(len(rows))
    ]
    out.append("</g>")
    # Machines first: where both are equal, the person's circle shows inside the machines' square.
    for name, colour, values in (
        ("machines", MACHINES, [r.machines for r in rows]),
        ("people", PEOPLE, [r.people for r in rows]),
    ):
        dash = ' stroke-dasharray="6 4"' if name == "machines" else ""
        line = " ".join(f"{x:.1f},{y(v):.1f}" for x, v in zip(xs, values, strict=True))
        out.append(f'<g class="series-{name}" stroke="{colour}" stroke-width="2">')
        out.append(f'<polyline points="{line}" fill="none"{dash}/>')
        for x, v, r in zip(xs, values, rows, strict=True):
            tip = f"{label(r.at, series.unit)}: {r.people} by people, {r.machines} by machines"
            data = f' data-at="{r.at.isoformat()}" data-people="{r.people}" data-machines="{r.machines}"'
            out.append(f"{_mark(name, colour, x, y(v), data)}<title>{escape(tip)}</title>{_close(name)}")
        out.append("</g>")
    out.append('<g class="legend" font-size="12" fill="#333">')
    for offset, name, colour, text in ((0, "people", PEOPLE, "People"), (110, "machines", MACHINES, "Machines")):
        x0, dash = LEFT + offset, ' stroke-dasharray="6 4"' if name == "machines" else ""
        out.append(f'<g class="series-{name}" stroke="{colour}" stroke-width="2">')
        out.append(f'<line x1="{x0}" x2="{x0 + 24}" y1="16" y2="16"{dash}/>{_mark(name, colour, x0 + 12, 16)}')
        out.append(f'{_close(name)}</g><text x="{x0 + 30}" y="20">{text}</text>')
    out.append("</g></svg>")
    return "".join(out)


def _mark(name: str, colour: str, x: float, y: float, data: str = "") -> str:
    """The opening tag of a series' marker: a filled circle for people, a hollow square for machines."""
    if name == "people":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colour}"{data}>'
    return f'<rect x="{x - 4:.1f}" y="{y - 4:.1f}" width="8" height="8" fill="#fff"{data}>'


def _close(name: str) -> str:
    return "</circle>" if name == "people" else "</rect>"


def _scale(top: int) -> tuple[int, int]:
    """A round step (1, 2 or 5 times a power of ten) for at most four grid lines, and the maximum it reaches."""
    rough = max(1, -(-top // 4))
    magnitude = 10 ** (len(str(rough)) - 1)
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= rough)
    return step, step * max(1, -(-top // step))


def _ticks(count: int, most: int = 5) -> list[int]:
    """The indexes of the rows whose dates label the time axis: evenly spread, the first and the last."""
    return sorted({round(i * (count - 1) / (most - 1)) for i in range(most)})


def _utc(at: datetime) -> datetime:
    # The reports' hours are UTC; a naive time (none of the reports' own) is taken as UTC, not as local time.
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
