"""Click times for collector tests: recent whatever day the suite runs, as the collector accepts only
clicks younger than CLICKEDGE_COLLECTOR_MAX_CLICK_AGE and not ahead of its clock."""

from __future__ import annotations

import time

HOUR_US = 3_600_000_000
RECENT_US = (time.time_ns() // 1000 // HOUR_US - 48) * HOUR_US  # on the hour, two days before this run
RECENT_MS = RECENT_US // 1000
RECENT_S = RECENT_US // 1_000_000
