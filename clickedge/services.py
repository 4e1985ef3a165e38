"""The long-running commands whose settings a configuration file may hold: one table each."""

from __future__ import annotations

from clickedge.stack import UpConfig
from collector.config import CollectorConfig
from edge.config import EdgeConfig

SERVICES: dict[str, type] = {"edge": EdgeConfig, "collector": CollectorConfig, "up": UpConfig}


def services() -> dict[str, type]:
    return SERVICES
