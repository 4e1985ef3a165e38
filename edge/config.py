"""The edge's configuration: one frozen object, built once at start-up."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from common import settings as s


def fsync_mode(raw: str) -> float | None:
    """None means 'always'; otherwise the group fsync interval in seconds (at most 10)."""
    if raw.strip().lower() == "always":
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 10:
        raise ValueError("must be 'always' or a number of seconds greater than 0 and at most 10")
    return value


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
    data_dir: Path = s.data_dir_setting("directory for keys, secrets and local state")
    keys_file: Path | None = s.keys_file_setting()
    collector_url: str = s.setting(
        "http://127.0.0.1:8081",
        flag="--collector-url",
        env="CLICKEDGE_COLLECTOR_URL",
        parse=s.http_url,
        help="base URL of the collector the edge ships clicks to",
    )
    ingest_secret: str = s.ingest_secret_setting("shared secret for the collector", "DATA_DIR/ingest.secret")
    blocklist_poll: float = s.setting(
        5.0,
        flag="--blocklist-poll",
        env="CLICKEDGE_BLOCKLIST_POLL",
        parse=s.positive_float,
        help="seconds between fetches of the kill switch's block list from the collector (an unchanged list "
        "costs a 304)",
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
    spool_dir: Path | None = s.setting(
        None,
        flag="--spool-dir",
        env="CLICKEDGE_SPOOL_DIR",
        parse=s.path,
        help="where clicks are spooled before shipping",
        default_text="DATA_DIR/spool",
    )
    spool_max_bytes: int = s.setting(
        1 << 30,
        flag="--spool-max-bytes",
        env="CLICKEDGE_SPOOL_MAX_BYTES",
        parse=s.positive_int,
        help="unshipped bytes a worker's spool may hold; beyond, /readyz fails",
    )
    spool_segment_bytes: int = s.setting(
        16 << 20,
        flag="--spool-segment-bytes",
        env="CLICKEDGE_SPOOL_SEGMENT_BYTES",
        parse=s.positive_int,
        help="size at which a spool segment file is closed and a new one begun",
    )
    fsync: float | None = s.setting(
        0.2,
        flag="--fsync",
        env="CLICKEDGE_FSYNC",
        parse=fsync_mode,
        help="'always' (answer after fsync) or seconds between group fsyncs",
        show=lambda value: "always" if value is None else value,
    )
    drain_grace: float = s.setting(
        5.0,
        flag="--drain-grace",
        env="CLICKEDGE_DRAIN_GRACE",
        parse=s.non_negative_float,
        help="seconds to keep serving after SIGTERM while /readyz says 503",
    )
    shutdown_timeout: float = s.setting(
        10.0,
        flag="--shutdown-timeout",
        env="CLICKEDGE_SHUTDOWN_TIMEOUT",
        parse=s.non_negative_float,
        help="seconds to finish requests and ship spooled clicks on stop",
    )
    keepalive_timeout: float = s.setting(
        60.0,
        flag="--keepalive-timeout",
        env="CLICKEDGE_KEEPALIVE_TIMEOUT",
        parse=s.positive_float,
        help="seconds a connection may go without completing a request before it is closed",
    )
    worker_index: int = s.setting(
        0,
        flag="--worker-index",
        env="CLICKEDGE_WORKER_INDEX",
        parse=s.port,
        help="this worker's number; picks its spool (set by --workers)",
    )
    metrics_port: int = s.setting(
        0,
        flag="--metrics-port",
        env="CLICKEDGE_METRICS_PORT",
        parse=s.port,
        help="if set, worker i also serves /metrics on this port + i (0: only on the edge port)",
    )
    watchdog_timeout: float = s.watchdog_setting()
    access_log_sample: float = s.setting(
        0.0,
        flag="--access-log-sample",
        env="CLICKEDGE_ACCESS_LOG_SAMPLE",
        parse=s.fraction,
        help="fraction of requests written to the log, 0 to 1 (0: none)",
    )
    log_level: str = s.log_level_setting()
    log_format: str = s.log_format_setting()

    @property
    def key_path(self) -> Path:
        return self.keys_file or self.data_dir / "keys.json"

    @property
    def blocklist_path(self) -> Path:
        """Where workers keep the last block list fetched, to enforce it from start."""
        return self.data_dir / "blocklist.json"

    @property
    def worker_spool(self) -> Path:
        return (self.spool_dir or self.data_dir / "spool") / f"worker-{self.worker_index}"

    def __post_init__(self) -> None:
        if self.batch_size > 10_000:
            raise s.ConfigError("CLICKEDGE_BATCH_SIZE must be at most 10000 (the collector's batch limit)")
        if self.metrics_port and self.metrics_port + self.workers - 1 > 65535:
            raise s.ConfigError("CLICKEDGE_METRICS_PORT + CLICKEDGE_WORKERS - 1 must be at most 65535")
        if self.metrics_port and self.metrics_port <= self.port < self.metrics_port + self.workers:
            raise s.ConfigError("CLICKEDGE_METRICS_PORT .. + WORKERS - 1 must not include CLICKEDGE_EDGE_PORT")
        if self.spool_segment_bytes > self.spool_max_bytes:
            raise s.ConfigError("CLICKEDGE_SPOOL_SEGMENT_BYTES must not exceed CLICKEDGE_SPOOL_MAX_BYTES")
