"""The report pages' chart (collector/ui/chart.py): bucketing by hour, day or several days, and SVG that parses,
escapes what it is given, carries no script or inline style and marks every bucket of both series."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.classify import AUTOMATED
from collector.ui.chart import (
    DAY,
    HOUR,
    MAX_BUCKETS,
    Point,
    Row,
    Series,
    bucket,
    describe,
    from_report,
    label,
    render,
    table,
)

SVG = "{http://www.w3.org/2000/svg}"
T0 = datetime(2026, 12, 1, 14, tzinfo=UTC)
HOSTILE = ("<script>alert(1)</script>", '"><img src=x onerror=alert(1)>')


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # noqa: S314 - our own output, not untrusted input


def markers(svg: str, name: str) -> list[ET.Element]:
    group = parse(svg).find(f"{SVG}g[@class='series-{name}']")
    assert group is not None
    return [e for e in group if "data-at" in e.attrib]


def test_from_report_reads_the_campaign_reports_hourly_entries() -> None:
    hourly = [
        {"hour": "2026-12-01T14:00:00+00:00", "clicks": 3, "automated": dict(zip(AUTOMATED, (1, 2, 4), strict=True))},
        {"hour": "2026-12-01T15:00:00+00:00", "clicks": 0, "automated": dict.fromkeys(AUTOMATED, 0)},
    ]
    assert from_report(hourly) == [Point(T0, 3, 7), Point(T0 + HOUR, 0, 0)]


def test_three_days_are_hourly_and_zero_filled() -> None:
    series = bucket([Point(T0, 2, 1), Point(T0 + 3 * DAY, 5, 0)])
    assert series.unit == "hour" and series.step == HOUR
    assert len(series.rows) == 73
    assert series.rows[0] == Row(T0, 2, 1) and series.rows[-1] == Row(T0 + 3 * DAY, 5, 0)
    assert all(r.people == r.machines == 0 for r in series.rows[1:-1])
    assert [r.at for r in series.rows] == [T0 + i * HOUR for i in range(73)]


def test_more_than_three_days_are_daily_utc_buckets() -> None:
    series = bucket([Point(T0, 2, 1), Point(T0 + 3 * DAY + HOUR, 5, 0), Point(T0 + HOUR, 1, 1)])
    day = T0.replace(hour=0)
    assert series.unit == "day" and series.step == DAY
    assert series.rows == [Row(day, 3, 2), Row(day + DAY, 0, 0), Row(day + 2 * DAY, 0, 0), Row(day + 3 * DAY, 5, 0)]


def test_days_are_utc_days_whatever_the_inputs_offset() -> None:
    new_york, tokyo = timezone(timedelta(hours=-5)), timezone(timedelta(hours=9))
    points = [
        Point(datetime(2026, 12, 1, 23, 30, tzinfo=new_york), 1, 0),  # 2026-12-02 04:30 UTC
        Point(datetime(2026, 12, 2, 1, 0, tzinfo=tokyo), 0, 1),  # 2026-12-01 16:00 UTC
        Point(datetime(2026, 12, 5, tzinfo=UTC), 1, 1),
    ]
    series = bucket(points)
    assert series.unit == "day"
    assert table(series) == [
        ("2026-12-01", 0, 1),
        ("2026-12-02", 1, 0),
        ("2026-12-03", 0, 0),
        ("2026-12-04", 0, 0),
        ("2026-12-05", 1, 1),
    ]
    assert all(r.at.tzinfo is UTC for r in series.rows)


def test_a_long_range_is_capped_with_buckets_of_several_days() -> None:
    start = T0.replace(hour=0)
    exactly = bucket([Point(start, 1, 0), Point(start + (MAX_BUCKETS - 1) * DAY, 1, 0)])
    assert exactly.step == DAY and len(exactly.rows) == MAX_BUCKETS
    over = bucket([Point(start, 1, 0), Point(start + MAX_BUCKETS * DAY, 1, 0)])
    assert over.step == 2 * DAY and len(over.rows) == MAX_BUCKETS // 2 + 1
    years = bucket([Point(start, 1, 2), Point(start + 3650 * DAY, 3, 4), Point(start + 1000 * DAY + HOUR, 5, 6)])
    assert years.unit == "day" and years.step == 10 * DAY and len(years.rows) <= MAX_BUCKETS
    assert (sum(r.people for r in years.rows), sum(r.machines for r in years.rows)) == (9, 12)
    assert years.rows[100] == Row(start + 1000 * DAY, 5, 6)
    assert "by 10 days" in describe(years)


def test_an_explicit_range_keeps_only_its_points_and_fills_the_rest() -> None:
    points = [Point(T0 - HOUR, 9, 9), Point(T0 + HOUR, 1, 2), Point(T0 + 5 * HOUR, 9, 9)]
    series = bucket(points, start=T0 + timedelta(minutes=30), end=T0 + 4 * HOUR)
    assert series.rows == [Row(T0, 0, 0), Row(T0 + HOUR, 1, 2)] + [Row(T0 + i * HOUR, 0, 0) for i in (2, 3, 4)]
    with pytest.raises(ValueError, match="before it starts"):
        bucket(points, start=T0, end=T0 - HOUR)


def test_empty_input_is_an_empty_series_drawn_as_no_clicks_yet() -> None:
    series = bucket([], start=T0, end=T0 + DAY)
    assert series == Series("hour", [])
    assert table(series) == [] and describe(series) == "No clicks yet."
    root = parse(render(series, title="Clicks"))
    assert root.get("role") == "img" and "No clicks yet" in "".join(root.itertext())
    assert root.findall(f".//{SVG}circle") == []


def test_label_describe_and_table() -> None:
    at = datetime(2026, 12, 1, 15, 0, tzinfo=timezone(timedelta(hours=1)))
    assert label(at, "hour") == "2026-12-01 14:00" and label(at, "day") == "2026-12-01"
    series = bucket([Point(T0, 2, 5), Point(T0 + HOUR, 6, 0), Point(T0 + 3 * HOUR, 6, 1)])
    assert table(series) == [
        ("2026-12-01 14:00", 2, 5),
        ("2026-12-01 15:00", 6, 0),
        ("2026-12-01 16:00", 0, 0),
        ("2026-12-01 17:00", 6, 1),
    ]
    assert describe(series) == (
        "From 2026-12-01 14:00 to 2026-12-01 17:00 UTC, by hour: 14 clicks by people and 6 by machines; "
        "people's peak 6 at 2026-12-01 15:00."
    )
    assert describe(bucket([Point(T0, 0, 3)])).endswith("3 by machines; none by people.")


@pytest.mark.parametrize("hostile", HOSTILE)
def test_render_escapes_and_has_no_script_or_inline_style(hostile: str) -> None:
    series = bucket([Point(T0, 1, 0), Point(T0 + HOUR, 0, 1)])
    svg = render(series, title=hostile, id_prefix=hostile)
    assert "<script" not in svg.lower() and "<img" not in svg.lower()
    assert "style=" not in svg and "<style" not in svg
    root = parse(svg)
    title, desc = root.find(f"{SVG}title"), root.find(f"{SVG}desc")
    assert title is not None and title.text == hostile
    assert desc is not None and desc.text == describe(series)
    assert root.get("aria-labelledby") == f"{hostile}-title {hostile}-desc"
    assert (title.get("id"), desc.get("id")) == (f"{hostile}-title", f"{hostile}-desc")
    assert root.findall(f".//{SVG}script") == [] and root.findall(f".//{SVG}style") == []


def test_render_marks_every_row_of_both_series() -> None:
    series = bucket([Point(T0, 3, 1), Point(T0 + 2 * HOUR, 0, 7), Point(T0 + 4 * HOUR, 5, 2)])
    svg = render(series, title="Clicks")
    root = parse(svg)
    assert root.get("class") == "chart" and root.get("role") == "img"
    people, machines = markers(svg, "people"), markers(svg, "machines")
    assert [e.tag for e in people] == [f"{SVG}circle"] * 5 and [e.tag for e in machines] == [f"{SVG}rect"] * 5
    for group in (people, machines):
        assert [(e.get("data-at"), e.get("data-people"), e.get("data-machines")) for e in group] == [
            (r.at.isoformat(), str(r.people), str(r.machines)) for r in series.rows
        ]
        tips = [e.findtext(f"{SVG}title") for e in group]
        assert tips[2] == "2026-12-01 16:00: 0 by people, 7 by machines"
    machines_line = root.find(f"{SVG}g[@class='series-machines']/{SVG}polyline")
    people_line = root.find(f"{SVG}g[@class='series-people']/{SVG}polyline")
    assert machines_line is not None and machines_line.get("stroke-dasharray")
    assert people_line is not None and people_line.get("stroke-dasharray") is None
    legend = root.find(f"{SVG}g[@class='legend']")
    assert legend is not None and "".join(legend.itertext()) == "PeopleMachines"
    assert legend.find(f"{SVG}g[@class='series-people']/{SVG}circle") is not None
    assert legend.find(f"{SVG}g[@class='series-machines']/{SVG}rect") is not None
    assert root.find(f"{SVG}g[@class='grid']") is not None
    axis = root.find(f"{SVG}g[@class='axis']")
    assert axis is not None
    texts = [t.text for t in axis.findall(f"{SVG}text")]
    # a round maximum above the highest value (7), and the first and last buckets' dates
    assert texts[:5] == ["0", "2", "4", "6", "8"]
    assert texts[5] == "2026-12-01 14:00" and texts[-1] == "2026-12-01 18:00"


def test_a_single_row_and_many_rows_render() -> None:
    one = render(bucket([Point(T0, 1, 1)]), title="One")
    assert len(markers(one, "people")) == len(markers(one, "machines")) == 1
    many = bucket([Point(T0, 1, 1), Point(T0 + 3000 * DAY, 1, 1)])
    assert len(markers(render(many, title="Many"), "machines")) == len(many.rows) <= MAX_BUCKETS


moments = st.datetimes(
    min_value=datetime(2024, 1, 1),
    max_value=datetime(2034, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=5, minutes=30))]),
)
points = st.lists(st.builds(Point, moments, st.integers(0, 1000), st.integers(0, 1000)), max_size=30)


@given(points, st.none() | moments, st.none() | moments)
def test_the_series_totals_are_the_inputs_within_the_range(
    given_points: list[Point], start: datetime | None, end: datetime | None
) -> None:
    low = start if start is not None else min((p.at for p in given_points), default=None)
    high = end if end is not None else max((p.at for p in given_points), default=None)
    if given_points and low is not None and high is not None and high < low:
        with pytest.raises(ValueError):
            bucket(given_points, start, end)
        return
    series = bucket(given_points, start, end)
    inside = [p for p in given_points if low is not None and high is not None and low <= p.at <= high]
    assert sum(r.people for r in series.rows) == sum(p.people for p in inside)
    assert sum(r.machines for r in series.rows) == sum(p.machines for p in inside)
    assert len(series.rows) <= MAX_BUCKETS
    assert all(b.at - a.at == series.step for a, b in zip(series.rows, series.rows[1:], strict=False))
