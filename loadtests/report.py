"""What every benchmark here does with its result: print it, and write it as JSON when asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson


def as_json(report: Any, *, leave_out: tuple[str, ...] = ()) -> str:
    """The report, indented, without the keys in ``leave_out`` (long series)."""
    if leave_out:
        report = {k: v for k, v in report.items() if k not in leave_out}
    return orjson.dumps(report, option=orjson.OPT_INDENT_2).decode()


def write_json(path: str | Path | None, report: Any) -> None:
    """Write the whole report to ``path`` (its folder made if needed); nothing when no path was given."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(as_json(report))
