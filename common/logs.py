"""Logging, configured once at start-up: one JSON object per line (the default for services), or text.

A JSON line has ``ts`` (UTC, milliseconds), ``level``, ``logger``, ``pid`` and ``msg``, then any fields a
caller passed with ``extra=``, then ``exc`` with the traceback when there is one. Nothing logs per click
unless the edge's sampled access log is turned on.
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

import orjson

# What every LogRecord carries; anything else on a record came from ``extra=`` and is written out.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in line:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.stack_info:
            line["stack"] = record.stack_info
        return orjson.dumps(line, default=str).decode()


def configure(level: str = "INFO", fmt: str = "text") -> None:
    """Replace the root logger's handlers with one writing to stderr in ``fmt`` (json or text)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


class Throttled:
    """At most one record per ``interval`` seconds through ``logger``; the next one says how many were
    left out. For errors a client can cause at will: each is counted in a metric, and the log stays small."""

    __slots__ = ("_interval", "_logger", "_next", "_suppressed")

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self._logger = logger
        self._interval = interval
        self._next = 0.0
        self._suppressed = 0

    def log(self, level: int, msg: str, *args: object, exc_info: bool = False) -> None:
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return
        self._next = now + self._interval
        if self._suppressed:
            msg += f" ({self._suppressed} more like it in the last {self._interval:.0f}s not logged)"
            self._suppressed = 0
        self._logger.log(level, msg, *args, exc_info=exc_info)
