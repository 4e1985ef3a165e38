"""The harness's pure steps alone: wrk's summary, the ratios and the report's keys and table. The whole
run is tests/loadtests/test_loadtest_smoke.py."""

from __future__ import annotations

import argparse

from loadtests import run
from loadtests.scratch import WrkRun

SUMMARY = {
    "requests": 1000,
    "duration_us": 2_000_000,
    "connect": 1,
    "read": 2,
    "write": 3,
    "status": 4,
    "timeout": 5,
    "p50_us": 1500,
    "p90_us": 2500,
    "p99_us": 4000,
    "max_us": 9000,
}


def test_wrk_summary_counts_every_kind_of_error_and_what_was_answered() -> None:
    load = WrkRun.parse(SUMMARY)
    assert (load.seconds, load.requests_per_s, load.p50_ms, load.p99_ms) == (2.0, 500.0, 1.5, 4.0)
    assert load.errors == 15
    assert load.answered == 996  # an answer with an error status is no click
    assert load.checked(990) == {"answered": 996, "rows": 990, "clicks_lost": 6, "errors": 15}
    assert load.checked(1200)["clicks_lost"] == 0


def report(nginx: bool) -> dict[str, object]:
    bare = run.Result("aiohttp bare fixed 302", requests_per_s=40_000.0)
    engine = run.Result("nginx return 302 (1 worker)", requests_per_s=100_000.0) if nginx else None
    peer = run.Result("peers' design: INSERT per click", requests_per_s=4_000.0, answered=10)
    peer.record_rows(9)
    edge = run.Result("clickedge edge, 1 worker", requests_per_s=50_000.0, answered=10, note="a note", stored_pct=87.5)
    edge.record_rows(12)
    baselines = run.Baselines(bare, engine, peer)
    results = [*baselines.results, edge]
    run.add_ratios(results, baselines)
    args = argparse.Namespace(duration=1, connections=8, tokens=500)
    ingest = {
        "copy_rows_per_s": 100.0,
        "copy_encoded_rows_per_s": 200.0,
        "ingest_rows_per_s": 60.0,
        "ratio": 0.6,
        "ratio_same_encoder": 0.3,
        "ingest_held_rows_per_s": 80.0,
        "ratio_held": 0.8,
        "settle_rows_per_s": 20.0,
        "ratio_held_and_settled": 0.16,
    }
    decode = {
        "url_chars": 100,
        "token_chars": 187,
        "decode_median_us": 2.5,
        "decode_version_1_median_us": 2.9,
        "aes_siv_open_median_us": 1.1,
    }
    return run.assemble_report(2, args, results, ingest, decode, ["a run note"])


def test_the_report_keeps_its_keys_and_each_row_its_ratios_and_clicks() -> None:
    assembled = report(nginx=True)
    assert list(assembled) == ["machine", "settings", "results", "ingest", "token_decode", "notes"]
    assert assembled["settings"] == {"duration_s": 1, "connections": 8, "tokens": 500}
    results = assembled["results"]
    assert isinstance(results, list)
    assert list(results[0]) == [
        *["name", "requests_per_s", "p50_ms", "p99_ms", "cpu_pct", "errors", "answered", "rows"],
        *["clicks_lost", "rss_mb", "stored_pct", "ratios", "note"],
    ]
    edge = results[-1]
    assert edge["ratios"] == {"vs_bare": 1.25, "vs_nginx": 0.5, "vs_peer": 12.5}
    assert (edge["rows"], edge["clicks_lost"]) == (12, 0)
    assert (results[2]["rows"], results[2]["clicks_lost"]) == (9, 1)
    assert results[0]["clicks_lost"] is None  # the bare server records no click


def test_without_nginx_no_row_has_a_ratio_to_it() -> None:
    results = report(nginx=False)["results"]
    assert isinstance(results, list)
    assert [r["name"] for r in results] == [
        "aiohttp bare fixed 302",
        "peers' design: INSERT per click",
        "clickedge edge, 1 worker",
    ]
    assert all("vs_nginx" not in r["ratios"] for r in results)


def test_the_table_prints_a_row_per_configuration_then_ingest_decode_notes_and_machine() -> None:
    lines = run.table(report(nginx=True)).splitlines()
    assert lines[0].split() == [
        *["configuration", "req/s", "p50", "ms", "p99", "ms", "CPU", "%", "RSS", "MB"],
        *["vs", "bare", "vs", "nginx", "vs", "peer", "stored", "lost"],
    ]
    assert lines[4] == (
        f"{'clickedge edge, 1 worker':<72}    50,000    0.00    0.00      0     0.0    1.250     0.500"
        "    12.50     88%     0"
    )
    assert lines[5].startswith("stored: of the clicks answered in the measured seconds, the share in PostgreSQL")
    assert lines[6] == (
        "collector ingest, each batch judged at once 60 rows/s vs raw binary COPY 100 rows/s (asyncpg records): "
        "ratio 0.60; vs 200 rows/s (COPY with the collector's encoder): ratio 0.30"
    )
    assert lines[7] == (
        "collector ingest with the default hold 80 rows/s (ratio 0.80), then settling 20 rows/s; both in turn: "
        "ratio 0.16"
    )
    assert lines[8] == (
        "token decode + verify, 100-character URL: median 2.50 µs (format version 1: 2.90 µs; "
        "AES-SIV open alone: 1.10 µs)"
    )
    assert lines[9:11] == ["note: clickedge edge, 1 worker: a note", "note: a run note"]
    assert lines[11].startswith("machine: 2 cores, ")
