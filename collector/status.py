"""What the status page and ``GET /v1/status`` show: each edge's shipping (when its last batch came, how
far behind it was), the batches refused as never writable (the edge dead-letters them) and the clicks set
aside for their time, and webhook deliveries pending and failing.

Ingest only notes each batch in memory (``EdgeBook.note``, a dict update); a background task writes the
notes to ``edge_status`` every FLUSH_SECONDS, so the write path gains no statement and no lock."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

FLUSH_SECONDS = 5.0
MAX_EDGES = 10_000  # edge names come from batches that passed the ingest secret; bounded all the same
MAX_EDGE_NAME = 200


@dataclass(slots=True)
class _Note:
    last_batch_at: float | None = None
    last_lag: float | None = None
    batches: int = 0
    clicks: int = 0
    rejected: int = 0
    last_rejected_at: float | None = None
    last_rejection: str | None = None


class EdgeBook:
    """Batches heard from each edge since the last flush."""

    def __init__(self) -> None:
        self._notes: dict[str, _Note] = {}

    def _note(self, edge: str) -> _Note | None:
        edge = edge[:MAX_EDGE_NAME]
        note = self._notes.get(edge)
        if note is None and len(self._notes) < MAX_EDGES:
            note = self._notes[edge] = _Note()
        return note

    def note(self, edge: str, clicks: int, lag: float | None) -> None:
        note = self._note(edge)
        if note is not None:
            note.last_batch_at = time.time()
            note.batches += 1
            note.clicks += clicks
            if lag is not None:
                note.last_lag = lag

    def rejected(self, edge: str, why: str) -> None:
        note = self._note(edge)
        if note is not None:
            note.rejected += 1
            note.last_rejected_at = time.time()
            note.last_rejection = why[:300]

    async def flush(self, conn: asyncpg.Connection) -> int:
        """Write the notes (adding counts, keeping the latest times); the edges written."""
        notes, self._notes = self._notes, {}
        if not notes:
            return 0
        rows = [
            (edge, _at(n.last_batch_at), n.last_lag, n.batches, n.clicks, n.rejected, _at(n.last_rejected_at),
             n.last_rejection)
            for edge, n in sorted(notes.items())
        ]  # fmt: skip
        try:
            await conn.executemany(
                """INSERT INTO edge_status AS e (edge, last_batch_at, last_lag_seconds, batches, clicks,
                                                 rejected_batches, last_rejected_at, last_rejection)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                   ON CONFLICT (edge) DO UPDATE SET
                       last_lag_seconds = CASE WHEN EXCLUDED.last_batch_at >= e.last_batch_at
                           OR e.last_batch_at IS NULL THEN coalesce(EXCLUDED.last_lag_seconds, e.last_lag_seconds)
                           ELSE e.last_lag_seconds END,
                       last_batch_at = greatest(e.last_batch_at, EXCLUDED.last_batch_at),
                       batches = e.batches + EXCLUDED.batches,
                       clicks = e.clicks + EXCLUDED.clicks,
                       rejected_batches = e.rejected_batches + EXCLUDED.rejected_batches,
                       last_rejection = CASE WHEN EXCLUDED.last_rejected_at >= e.last_rejected_at
                           OR e.last_rejected_at IS NULL THEN coalesce(EXCLUDED.last_rejection, e.last_rejection)
                           ELSE e.last_rejection END,
                       last_rejected_at = greatest(e.last_rejected_at, EXCLUDED.last_rejected_at)""",
                rows,
            )
        except BaseException:
            # Not written: keep them for the next flush (newer notes of the same edge win their times).
            for edge, note in notes.items():
                later = self._notes.get(edge)
                if later is None:
                    self._notes[edge] = note
                else:
                    later.batches += note.batches
                    later.clicks += note.clicks
                    later.rejected += note.rejected
            raise
        return len(rows)


def _at(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


async def status(conn: asyncpg.Connection) -> dict[str, Any]:
    edges = await conn.fetch(
        """SELECT edge, last_batch_at, last_lag_seconds, batches, clicks, rejected_batches, last_rejected_at,
                  last_rejection, extract(epoch FROM now() - last_batch_at)::float8 AS since
           FROM edge_status ORDER BY last_batch_at DESC NULLS LAST, edge LIMIT 500"""
    )
    refused = await conn.fetch("SELECT reason, count(*) AS n FROM refused_clicks GROUP BY reason ORDER BY reason")
    hooks = await conn.fetchrow(
        """SELECT (SELECT count(*) FROM webhook_outbox WHERE delivered_at IS NULL AND failed_at IS NULL) AS pending,
                  (SELECT count(*) FROM webhook_outbox WHERE delivered_at IS NULL AND failed_at IS NULL
                     AND attempts > 0) AS retrying,
                  (SELECT extract(epoch FROM now() - min(created_at))::float8 FROM webhook_outbox
                     WHERE delivered_at IS NULL AND failed_at IS NULL) AS oldest,
                  (SELECT count(*) FROM webhook_outbox WHERE failed_at IS NOT NULL) AS failed,
                  (SELECT count(*) FROM webhook_outbox WHERE failed_at > now() - interval '1 day') AS failed_day"""
    )
    assert hooks is not None
    failing = await conn.fetch(
        """(SELECT id, url, attempts, last_error, failed_at, next_attempt_at FROM webhook_outbox
            WHERE delivered_at IS NULL AND failed_at IS NULL AND attempts > 0 ORDER BY next_attempt_at LIMIT 10)
           UNION ALL
           (SELECT id, url, attempts, last_error, failed_at, next_attempt_at FROM webhook_outbox
            WHERE failed_at IS NOT NULL ORDER BY failed_at DESC LIMIT 10)"""
    )
    return {
        "edges": [
            {
                "edge": r["edge"],
                "last_batch_at": r["last_batch_at"].isoformat() if r["last_batch_at"] else None,
                "seconds_since_last_batch": round(r["since"], 1) if r["since"] is not None else None,
                "last_lag_seconds": r["last_lag_seconds"],
                "batches": r["batches"],
                "clicks": r["clicks"],
                "rejected_batches": r["rejected_batches"],
                "last_rejected_at": r["last_rejected_at"].isoformat() if r["last_rejected_at"] else None,
                "last_rejection": r["last_rejection"],
            }
            for r in edges
        ],
        "refused_clicks": {r["reason"]: r["n"] for r in refused},
        "webhooks": {
            "pending": hooks["pending"],
            "retrying": hooks["retrying"],
            "oldest_pending_seconds": round(hooks["oldest"], 1) if hooks["oldest"] is not None else None,
            "failed": hooks["failed"],
            "failed_last_day": hooks["failed_day"],
            "failing": [
                {
                    "id": r["id"],
                    "url": r["url"],
                    "attempts": r["attempts"],
                    "last_error": r["last_error"],
                    "failed_at": r["failed_at"].isoformat() if r["failed_at"] else None,
                    "next_attempt_at": None if r["failed_at"] else r["next_attempt_at"].isoformat(),
                }
                for r in failing
            ],
        },
    }
