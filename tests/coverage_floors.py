"""The coverage floors `make test` holds the suite to, after the run's data from every process is combined.

    .venv/bin/python -m tests.coverage_floors        (after `coverage combine`; make test runs it)

At least 90 % of branches in each part that decides what happens to a click (the redirect path, the spool,
the shipper, ingest, link actions, unsubscribes, webhooks, the kill switch) and in the report pages' sign-in,
forms and chart, and at least 85 % of lines overall. Exit 1, naming each part below its floor. Code no test can
reach is removed, not excluded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

BRANCH_FLOOR = 90.0
LINE_FLOOR = 85.0
# The parts held to the branch floor: (name, files).
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "the redirect path",
        ("edge/protocol.py", "edge/redirect.py", "edge/one_click.py", "edge/clientip.py", "links/token.py"),
    ),
    ("the spool", ("edge/spool.py", "edge/syncer.py", "edge/durability.py")),
    ("the shipper", ("edge/shipper.py",)),
    ("ingest", ("collector/ingest.py", "collector/app.py", "common/events.py", "collector/copy_binary.py")),
    ("link actions", ("collector/actions.py",)),
    ("unsubscribes", ("collector/unsubscribes.py",)),
    ("webhooks", ("collector/webhooks.py", "collector/destinations.py", "collector/endpoints.py")),
    ("the kill switch", ("edge/blocklist.py", "edge/blocklist_sync.py", "collector/blocks.py")),
    ("report pages", ("collector/sessions.py", "collector/ui/pages.py", "collector/ui/chart.py")),
)


def report() -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "coverage.json"
        subprocess.run([sys.executable, "-m", "coverage", "json", "-q", "-o", str(out)], check=True)
        data = json.loads(out.read_text())
    return {name: entry["summary"] for name, entry in data["files"].items()} | {"TOTAL": data["totals"]}


def branch_percent(summaries: list[dict[str, float]]) -> float:
    covered = sum(s["covered_branches"] for s in summaries)
    total = sum(s["num_branches"] for s in summaries)
    return 100.0 * covered / total if total else 100.0


def check(files: dict[str, dict[str, float]]) -> list[str]:
    lines = []
    failed = []
    for name, paths in PARTS:
        missing = [p for p in paths if p not in files]
        if missing:
            failed.append(f"{name}: no coverage data for {', '.join(missing)}")
            continue
        percent = branch_percent([files[p] for p in paths])
        lines.append(f"{name:<18} {percent:5.1f} % of branches (floor {BRANCH_FLOOR:.0f} %)")
        if percent < BRANCH_FLOOR:
            failed.append(f"{name}: {percent:.1f} % of branches, below {BRANCH_FLOOR:.0f} %")
    total = files["TOTAL"]
    line_percent = 100.0 * total["covered_lines"] / total["num_statements"]
    lines.append(
        f"{'all code':<18} {line_percent:5.1f} % of lines, {branch_percent([total]):.1f} % of branches "
        f"(floor {LINE_FLOOR:.0f} % of lines)"
    )
    if line_percent < LINE_FLOOR:
        failed.append(f"all code: {line_percent:.1f} % of lines, below {LINE_FLOOR:.0f} %")
    print("\n".join(lines))
    return failed


def main() -> int:
    failed = check(report())
    for problem in failed:
        print(f"coverage floor not met: {problem}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
