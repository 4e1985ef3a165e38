"""The edge's configuration refuses what cannot work, with the setting named, before anything starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from common import settings
from common.settings import ConfigError
from edge.config import EdgeConfig


def load(**env: str) -> EdgeConfig:
    return settings.load(EdgeConfig, None, {f"CLICKEDGE_{k}": v for k, v in env.items()})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FSYNC": "0"}, "CLICKEDGE_FSYNC='0' is not valid: must be 'always' or a number of seconds"),
        ({"FSYNC": "11"}, "must be 'always' or a number of seconds greater than 0 and at most 10"),
        ({"FSYNC": "often"}, "must be 'always' or a number of seconds greater than 0 and at most 10"),
        ({"BATCH_SIZE": "10001"}, "CLICKEDGE_BATCH_SIZE must be at most 10000"),
        (
            {"METRICS_PORT": "65535", "WORKERS": "2"},
            "CLICKEDGE_METRICS_PORT + CLICKEDGE_WORKERS - 1 must be at most 65535",
        ),
        ({"METRICS_PORT": "8079", "WORKERS": "2", "EDGE_PORT": "8080"}, "must not include CLICKEDGE_EDGE_PORT"),
        ({"SPOOL_SEGMENT_BYTES": "2000", "SPOOL_MAX_BYTES": "1000"}, "must not exceed CLICKEDGE_SPOOL_MAX_BYTES"),
    ],
)
def test_settings_that_cannot_work_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("+", r"\+").replace("(", r"\(")):
        load(**env)


def test_the_defaults_and_always_are_taken() -> None:
    config = load(FSYNC="always", METRICS_PORT="9100", WORKERS="3")
    assert config.fsync is None and config.metrics_port == 9100
    assert config.worker_spool == Path(".clickedge") / "spool" / "worker-0"
    assert load(SPOOL_DIR="/var/spool/ce", WORKER_INDEX="2").worker_spool == Path("/var/spool/ce/worker-2")


def test_a_keys_file_overrides_the_data_dir() -> None:
    fields: dict[str, Any] = {"data_dir": Path("/d"), "keys_file": Path("/k/keys.json")}
    assert EdgeConfig(**fields).key_path == Path("/k/keys.json")
    assert EdgeConfig(data_dir=Path("/d")).key_path == Path("/d/keys.json")
