"""Clicks awaiting the collector's acknowledgement, held in memory with a hard bound. Pure.

The redirect handler appends; the shipper takes a batch, and removes it only once the collector has
acknowledged it, so a failed send is retried with the same event ids (the collector deduplicates).
"""

from __future__ import annotations

from collections import deque
from itertools import islice

from clickedge.events import ClickRow


class ClickBuffer:
    __slots__ = ("_rows", "capacity", "dropped")

    def __init__(self, capacity: int) -> None:
        self._rows: deque[ClickRow] = deque()
        self.capacity = capacity
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def full(self) -> bool:
        return len(self._rows) >= self.capacity

    def append(self, row: ClickRow) -> bool:
        """Keep the click if there is room; when full, count it as dropped rather than evict older ones."""
        if len(self._rows) >= self.capacity:
            self.dropped += 1
            return False
        self._rows.append(row)
        return True

    def peek(self, limit: int) -> list[ClickRow]:
        return list(islice(self._rows, limit))

    def ack(self, count: int) -> None:
        """Forget the oldest ``count`` clicks: the collector has committed them."""
        rows = self._rows
        for _ in range(min(count, len(rows))):
            rows.popleft()
