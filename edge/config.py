"""The edge's configuration: one frozen object, built once at start-up."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from clickedge import settings as s


@dataclass(frozen=True)
class EdgeConfig:
    host: str = s.setting(
        "127.0.0.1",
        flag="--host",
        env="CLICKEDGE_EDGE_HOST",
        parse=s.text,
        help="address the edge listens on (0.0.0.0 for all)",
    )
    port: int = s.setting(
        8080,
        flag="--edge-port",
        env="CLICKEDGE_EDGE_PORT",
        parse=s.port,
        help="edge HTTP port (redirects, health, metrics)",
    )
    workers: int = s.setting(
        1,
        flag="--workers",
        env="CLICKEDGE_WORKERS",
        parse=s.positive_int,
        help="edge worker processes sharing the port (SO_REUSEPORT)",
    )
    data_dir: Path = s.setting(
        Path(".clickedge"),
        flag="--data-dir",
        env="CLICKEDGE_DATA_DIR",
        parse=s.path,
        help="directory for keys, secrets and local state",
    )
    keys_file: Path | None = s.setting(
        None,
        flag="--keys-file",
        env="CLICKEDGE_KEYS_FILE",
        parse=s.path,
        help="link key file (default DATA_DIR/keys.json)",
    )
    collector_url: str = s.setting(
        "http://127.0.0.1:8081",
        flag="--collector-url",
        env="CLICKEDGE_COLLECTOR_URL",
        parse=s.http_url,
        help="base URL of the collector the edge ships clicks to",
    )
    ingest_secret: str = s.setting(
        "",
        flag="--ingest-secret",
        env="CLICKEDGE_INGEST_SECRET",
        parse=s.text,
        secret=True,
        help="shared secret for the collector (default: DATA_DIR/ingest.secret)",
    )
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = s.setting(
        (),
        flag="--trusted-proxies",
        env="CLICKEDGE_TRUSTED_PROXIES",
        parse=s.networks,
        help="comma-separated IPs/CIDRs whose X-Forwarded-For is believed",
    )
    batch_size: int = s.setting(
        1000,
        flag="--batch-size",
        env="CLICKEDGE_BATCH_SIZE",
        parse=s.positive_int,
        help="clicks per batch shipped to the collector",
    )
    batch_linger: float = s.setting(
        0.2,
        flag="--batch-linger",
        env="CLICKEDGE_BATCH_LINGER",
        parse=s.positive_float,
        help="seconds a click may wait for a batch to fill before it ships",
    )
    buffer_clicks: int = s.setting(
        200_000,
        flag="--buffer-clicks",
        env="CLICKEDGE_BUFFER_CLICKS",
        parse=s.positive_int,
        help="clicks held in memory awaiting shipment before /readyz fails",
    )
    shutdown_timeout: float = s.setting(
        10.0,
        flag="--shutdown-timeout",
        env="CLICKEDGE_SHUTDOWN_TIMEOUT",
        parse=s.non_negative_float,
        help="seconds to finish requests and ship buffered clicks on stop",
    )
    log_level: str = s.setting(
        "INFO",
        flag="--log-level",
        env="CLICKEDGE_LOG_LEVEL",
        parse=s.log_level,
        help="log level: debug, info, warning, error",
    )

    @property
    def key_path(self) -> Path:
        return self.keys_file or self.data_dir / "keys.json"

    def __post_init__(self) -> None:
        if self.batch_size > 10_000:
            raise s.ConfigError("CLICKEDGE_BATCH_SIZE must be at most 10000 (the collector's batch limit)")
        if self.buffer_clicks < self.batch_size:
            raise s.ConfigError("CLICKEDGE_BUFFER_CLICKS must be at least CLICKEDGE_BATCH_SIZE")
