"""The long-running commands whose settings a configuration file may hold: one table each."""

from __future__ import annotations


def services() -> dict[str, type]:
    # Imported here: clickedge.stack imports this module.
    from clickedge.stack import UpConfig
    from collector.config import CollectorConfig
    from edge.config import EdgeConfig

    return {"edge": EdgeConfig, "collector": CollectorConfig, "up": UpConfig}
