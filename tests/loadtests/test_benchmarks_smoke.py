"""The benchmarks under loadtests/ run, tiny, so they cannot rot. No timings are asserted."""

from __future__ import annotations

from loadtests import bench_reports, bench_rewrite


def test_rewrite_benchmark_runs() -> None:
    result = bench_rewrite.run(recipients=20, repeats=1)
    assert result["links_per_message"] == 20
    assert result["prepared_messages_per_second"] > 0


async def test_report_benchmark_runs_and_its_report_matches_a_recount() -> None:
    result = await bench_reports.run(clicks=2000, requests=3)  # it asserts report == recount itself
    assert result["clicks"] == 3000
    assert result["campaign_report"]["median_ms"] > 0
    assert result["campaign_page"]["median_ms"] > 0 and result["campaign_list_page"]["median_ms"] > 0
