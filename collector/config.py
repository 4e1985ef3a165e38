"""The collector's configuration: one frozen object, built once at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from clickedge import settings as s


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
    database_url: str = s.setting(
        "",
        flag="--database-url",
        env="CLICKEDGE_DATABASE_URL",
        parse=s.text,
        help="PostgreSQL DSN; `up` starts an embedded server when empty",
        secret=True,
    )
    ingest_secret: str = s.setting(
        "",
        flag="--ingest-secret",
        env="CLICKEDGE_INGEST_SECRET",
        parse=s.text,
        secret=True,
        help="shared secret edges present to ship clicks (at least 16 chars)",
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
        0.0, flag="--drain-grace", env="CLICKEDGE_COLLECTOR_DRAIN_GRACE", parse=s.non_negative_float,
        help="seconds to keep serving after SIGTERM while /readyz says 503",
    )  # fmt: skip
    shutdown_timeout: float = s.setting(
        30.0, flag="--shutdown-timeout", env="CLICKEDGE_COLLECTOR_SHUTDOWN_TIMEOUT",
        parse=s.non_negative_float, help="then: seconds in-flight batches may take to finish",
    )  # fmt: skip
    log_level: str = s.setting(
        "INFO",
        flag="--log-level",
        env="CLICKEDGE_LOG_LEVEL",
        parse=s.log_level,
        help="log level: debug, info, warning, error",
    )

    def __post_init__(self) -> None:
        if not self.database_url:
            raise s.ConfigError(
                "no database: set CLICKEDGE_DATABASE_URL or --database-url to a PostgreSQL DSN"
            )
        s.check_dsn(self.database_url)
        if len(self.ingest_secret) < 16:
            raise s.ConfigError("CLICKEDGE_INGEST_SECRET (or --ingest-secret) must be at least 16 characters")
