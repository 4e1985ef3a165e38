"""The collector's configuration: one frozen object, built once at start-up."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from collector import stored_agents
from collector.classify import Policy
from collector.destinations import ALLOW_SETTING, Network
from collector.networks import DEFAULT_FILE as DEFAULT_SCANNER_FILE
from collector.networks import NetworkFileError
from collector.networks import load as load_networks
from collector.settle import MAX_HOLD
from common import settings as s
from common.files import write_private
from links.rewrite import base_url_problem

CLIENT_IPS = ("truncated", "full")


@dataclass(frozen=True)
class CollectorConfig:
    host: str = s.setting(
        "127.0.0.1",
        flag="--host",
        env="CLICKEDGE_COLLECTOR_HOST",
        parse=s.text,
        help="address the collector listens on",
    )
    port: int = s.setting(
        8081,
        flag="--collector-port",
        env="CLICKEDGE_COLLECTOR_PORT",
        parse=s.port,
        help="collector HTTP port (ingest, health, metrics)",
    )
    database_url: str = s.database_url_setting("PostgreSQL DSN", "none (required; `up` sets it)")
    ingest_secret: str = s.ingest_secret_setting(
        "shared secret edges present to ship clicks (at least 16 characters)", "none (required)"
    )
    pool_size: int = s.setting(
        8,
        flag="--pool-size",
        env="CLICKEDGE_COLLECTOR_POOL_SIZE",
        parse=s.positive_int,
        help="PostgreSQL connections per collector",
    )
    db_timeout: float = s.setting(
        10.0,
        flag="--db-timeout",
        env="CLICKEDGE_COLLECTOR_DB_TIMEOUT",
        parse=s.positive_float,
        help="seconds a batch write may take before it is abandoned (503)",
    )
    max_body_bytes: int = s.setting(
        16 * 1024 * 1024,
        flag="--max-body-bytes",
        env="CLICKEDGE_COLLECTOR_MAX_BODY_BYTES",
        parse=s.positive_int,
        help="largest click batch body accepted, in bytes",
    )
    drain_grace: float = s.setting(
        0.0,
        flag="--drain-grace",
        env="CLICKEDGE_COLLECTOR_DRAIN_GRACE",
        parse=s.non_negative_float,
        help="seconds to keep serving after SIGTERM while /readyz says 503",
    )
    shutdown_timeout: float = s.setting(
        30.0,
        flag="--shutdown-timeout",
        env="CLICKEDGE_COLLECTOR_SHUTDOWN_TIMEOUT",
        parse=s.non_negative_float,
        help="then: seconds in-flight batches may take to finish",
    )
    data_dir: Path = s.data_dir_setting("directory with the link keys (for the rewrite API) and the webhook secret")
    keys_file: Path | None = s.keys_file_setting()
    public_url: str = s.public_url_setting(
        "base URL of tracked links minted by the rewrite API (a campaign's tracking_url wins)", "http://127.0.0.1:8080"
    )
    webhook_secret: str = s.webhook_secret_setting()
    max_clock_skew: float = s.setting(
        300.0,
        flag="--max-clock-skew",
        env="CLICKEDGE_COLLECTOR_MAX_CLOCK_SKEW",
        parse=s.positive_float,
        help="seconds a click's time may be ahead of the collector's clock; later clicks are refused",
    )
    max_click_age: float = s.setting(
        366 * 86400.0,
        flag="--max-click-age",
        env="CLICKEDGE_COLLECTOR_MAX_CLICK_AGE",
        parse=s.positive_float,
        help="seconds a click may be old when it arrives (an edge's spool may hold clicks through a long outage)",
    )
    rewrite_workers: int = s.setting(
        2,
        flag="--rewrite-workers",
        env="CLICKEDGE_COLLECTOR_REWRITE_WORKERS",
        parse=s.positive_int,
        help="tokenizer processes the rewrite API prepares messages in (started on first use)",
    )
    rewrite_queue: int = s.setting(
        32,
        flag="--rewrite-queue",
        env="CLICKEDGE_COLLECTOR_REWRITE_QUEUE",
        parse=s.positive_int,
        help="messages that may wait for a busy tokenizer; beyond that the rewrite API answers 503",
    )
    rewrite_timeout: float = s.setting(
        10.0,
        flag="--rewrite-timeout",
        env="CLICKEDGE_COLLECTOR_REWRITE_TIMEOUT",
        parse=s.positive_float,
        help="seconds a tokenizer may spend on one message; then it is killed and the message refused (400)",
    )
    webhook_allow_networks: tuple[Network, ...] = s.setting(
        (),
        flag="--webhook-allow-networks",
        env=ALLOW_SETTING,
        parse=s.networks,
        help="comma-separated IPs/CIDRs webhooks may reach although loopback, private, link-local or otherwise "
        "not public (internal receivers); default: none",
    )
    verdict_hold: float = s.setting(
        15.0,
        flag="--verdict-hold",
        env="CLICKEDGE_COLLECTOR_VERDICT_HOLD",
        parse=s.non_negative_float,
        help="seconds a click waits for the other clicks of its burst before its verdict is final, counted and "
        "acted on (at most 60; 0: at once, with what has arrived)",
    )
    verdict_fast_click: float = s.setting(
        300.0,
        flag="--verdict-fast-click",
        env="CLICKEDGE_COLLECTOR_VERDICT_FAST_CLICK",
        parse=s.non_negative_float,
        help="a click this many seconds after the send counts against it being a person's (never alone)",
    )
    verdict_burst_window: float = s.setting(
        2.0,
        flag="--verdict-burst-window",
        env="CLICKEDGE_COLLECTOR_VERDICT_BURST_WINDOW",
        parse=s.non_negative_float,
        help="seconds within which clicks of one contact on several links of a message are one burst",
    )
    scanner_networks: Path = s.setting(
        DEFAULT_SCANNER_FILE,
        flag="--scanner-networks",
        env="CLICKEDGE_COLLECTOR_SCANNER_NETWORKS",
        parse=s.path,
        help="file of link scanners' networks (CIDR and label per line), read again when it changes; "
        "default: the dated list shipped with Clickedge",
        default_text="collector/scanner_networks.txt",
    )
    people_networks: tuple[Network, ...] = s.setting(
        (),
        flag="--people-networks",
        env="CLICKEDGE_COLLECTOR_PEOPLE_NETWORKS",
        parse=s.networks,
        help="comma-separated IPs/CIDRs whose clicks are never weighed as a scanner network's (a company's "
        "egress that looks like a data centre); default: none",
    )
    client_ips: str = s.setting(
        "truncated",
        flag="--client-ips",
        env="CLICKEDGE_COLLECTOR_CLIENT_IPS",
        parse=lambda raw: s.choice(raw, CLIENT_IPS),
        help="what clicks keep of the client's address: truncated (its IPv4 /24 or IPv6 /48 network; a campaign "
        "may keep full ones) or full",
    )
    user_agents: str = s.setting(
        stored_agents.RAW,
        flag="--user-agents",
        env="CLICKEDGE_COLLECTOR_USER_AGENTS",
        parse=lambda raw: s.choice(raw, stored_agents.CHOICES),
        help="what clicks keep of the user agent: raw (as it came) or reduced (its browser and OS families, "
        "such as 'Chrome; Windows')",
    )
    retention_days: int | None = s.retention_days_setting()
    log_level: str = s.log_level_setting()
    log_format: str = s.log_format_setting()

    @property
    def verdict_policy(self) -> Policy:
        return Policy(fast_click=self.verdict_fast_click, burst_window=self.verdict_burst_window)

    @property
    def max_clock_skew_us(self) -> int:
        return int(self.max_clock_skew * 1_000_000)

    @property
    def max_click_age_us(self) -> int:
        return int(self.max_click_age * 1_000_000)

    @property
    def key_path(self) -> Path:
        return self.keys_file or self.data_dir / "keys.json"

    def webhook_secret_bytes(self) -> bytes:
        """The master webhook secret, from which each endpoint's signing secret is derived: the setting,
        else DATA_DIR/webhook.secret (made once, mode 0600). Several collectors must share one: set
        CLICKEDGE_WEBHOOK_SECRET, or share the data dir."""
        if self.webhook_secret:
            return self.webhook_secret.encode()
        path = self.data_dir / WEBHOOK_MASTER_FILE
        if not path.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Whoever loses a race to create it reads the winner's complete key.
            write_private(path, secrets.token_urlsafe(32) + "\n", exclusive=True)
        return _read_webhook_secret(path)

    def __post_init__(self) -> None:
        if not self.database_url:
            raise s.ConfigError("no database: set CLICKEDGE_DATABASE_URL or --database-url to a PostgreSQL DSN")
        s.check_dsn(self.database_url)
        problem = base_url_problem(self.public_url)
        if problem is not None:
            raise s.ConfigError(f"CLICKEDGE_PUBLIC_URL {problem}")
        if not self.ingest_secret:
            raise s.ConfigError(
                "no ingest secret: set CLICKEDGE_INGEST_SECRET (or --ingest-secret) to the secret the edges present,"
                " at least 16 characters (`up` makes one in DATA_DIR/ingest.secret)"
            )
        if len(self.ingest_secret) < 16:
            raise s.ConfigError("CLICKEDGE_INGEST_SECRET (or --ingest-secret) must be at least 16 characters")
        if self.verdict_hold > MAX_HOLD:
            raise s.ConfigError(f"CLICKEDGE_COLLECTOR_VERDICT_HOLD must be at most {MAX_HOLD:g} seconds")
        try:
            load_networks(self.scanner_networks)
        except NetworkFileError as exc:
            raise s.ConfigError(f"CLICKEDGE_COLLECTOR_SCANNER_NETWORKS: {exc}") from None


WEBHOOK_MASTER_FILE = "webhook.secret"


def existing_webhook_secret(setting: str, data_dir: Path) -> bytes | None:
    """The master webhook secret where a command other than the collector looks for it, never making
    one (a new one would derive secrets no collector signs with): the setting, else
    DATA_DIR/webhook.secret, else None."""
    if setting:
        return setting.encode()
    path = data_dir / WEBHOOK_MASTER_FILE
    return _read_webhook_secret(path) if path.exists() else None


def _read_webhook_secret(path: Path) -> bytes:
    secret = path.read_text().strip()
    if not secret:
        raise s.ConfigError(f"{path} is empty: delete it (a new key is made) or set CLICKEDGE_WEBHOOK_SECRET")
    return secret.encode()
