"""The load harness runs end to end, tiny, so it cannot rot. No timings are asserted; clicks lost must
be zero, as in a real run."""

from __future__ import annotations

import argparse
import shutil

import pytest

from loadtests import run
from tests.conftest import require


@pytest.mark.timeout(300)
async def test_harness_runs_and_loses_no_click() -> None:
    require(bool(shutil.which("wrk")), "wrk (apt-get install wrk)")
    args = argparse.Namespace(duration=1, connections=8, tokens=500, ingest_rows=2000)
    report = await run.run(args)
    names = [r["name"] for r in report["results"]]
    assert names[0] == "aiohttp bare fixed 302" and "clickedge edge, 1 worker" in names
    assert any(name.startswith("peers' design") for name in names)
    for result in report["results"]:
        assert result["requests_per_s"] > 0 and result["errors"] == 0, result
        if result["clicks_lost"] is not None:
            assert result["clicks_lost"] == 0, result
    assert report["ingest"]["ratio"] > 0
    assert "clickedge edge, 1 worker" in run.table(report)
