"""Typed configuration from CLI flags and CLICKEDGE_* environment variables (flags win).

Each service declares a frozen dataclass whose fields carry their flag, environment variable, parser and
help text; the same declaration builds the argparse options, the loaded object and the README table.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value that stops start-up; the message says what to fix."""


@dataclasses.dataclass(frozen=True)
class Spec:
    flag: str
    env: str
    parse: Callable[[str], Any]
    help: str
    secret: bool = False


def setting(default: Any, *, flag: str, env: str, parse: Callable[[str], Any], help: str, secret: bool = False) -> Any:
    return dataclasses.field(default=default, metadata={"spec": Spec(flag, env, parse, help, secret)})


def specs(cls: type) -> list[tuple[dataclasses.Field[Any], Spec]]:
    return [(f, f.metadata["spec"]) for f in dataclasses.fields(cls) if "spec" in f.metadata]


def add_arguments(parser: argparse.ArgumentParser, cls: type, *, skip: frozenset[str] = frozenset()) -> None:
    for f, spec in specs(cls):
        if spec.flag in skip:
            continue
        shown = "(set)" if spec.secret else f.default
        parser.add_argument(
            spec.flag,
            dest=f.name,
            default=None,
            metavar=f.name.upper(),
            help=f"{spec.help} [env {spec.env}; default {shown}]",
        )


def load(cls: type[T], args: argparse.Namespace | None, environ: Mapping[str, str], **fixed: Any) -> T:
    """Build ``cls`` from flags (if given), then the environment, then defaults; raise ConfigError."""
    values: dict[str, Any] = {}
    for f, spec in specs(cls):
        if f.name in fixed:
            values[f.name] = fixed[f.name]
            continue
        raw = getattr(args, f.name, None) if args is not None else None
        source = spec.flag
        if raw is None and spec.env in environ:
            raw, source = environ[spec.env], spec.env
        if raw is None:
            continue
        try:
            values[f.name] = spec.parse(raw)
        except (ValueError, TypeError) as exc:
            shown = "<redacted>" if spec.secret else repr(raw)
            raise ConfigError(f"{source}={shown} is not valid: {exc}") from None
    return cls(**values)


def redacted(config: object) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f, spec in specs(type(config)):
        value = getattr(config, f.name)
        out[f.name] = "<redacted>" if spec.secret and value else value
    return out


# Settings several services share: one definition each, so their flag, variable and parsing agree.


def data_dir_setting(help: str) -> Any:
    return setting(Path(".clickedge"), flag="--data-dir", env="CLICKEDGE_DATA_DIR", parse=path, help=help)


def keys_file_setting() -> Any:
    return setting(
        None,
        flag="--keys-file",
        env="CLICKEDGE_KEYS_FILE",
        parse=path,
        help="link key file (default DATA_DIR/keys.json)",
    )


def ingest_secret_setting(help: str) -> Any:
    return setting("", flag="--ingest-secret", env="CLICKEDGE_INGEST_SECRET", parse=text, secret=True, help=help)


def log_level_setting() -> Any:
    return setting(
        "INFO",
        flag="--log-level",
        env="CLICKEDGE_LOG_LEVEL",
        parse=log_level,
        help="log level: debug, info, warning, error",
    )


# Parsers: each raises ValueError with a message a user can act on.


def port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError("a port is a number from 0 to 65535")
    return value


def positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("must be a whole number of at least 1")
    return value


def positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be a number greater than 0")
    return value


def non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0:
        raise ValueError("must be a number of at least 0")
    return value


def text(raw: str) -> str:
    return raw


def path(raw: str) -> Path:
    if not raw:
        raise ValueError("must not be empty")
    return Path(raw)


def http_url(raw: str) -> str:
    if not raw.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return raw.rstrip("/")


def networks(raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    items = [item.strip() for item in raw.split(",") if item.strip()]
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in items)
    except ValueError as exc:
        raise ValueError(f"expected a comma-separated list of IP addresses or CIDR ranges ({exc})") from None


def check_dsn(dsn: str) -> None:
    """Refuse a DSN that can never connect; say what is wrong without echoing it (it may hold a password)."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError("CLICKEDGE_DATABASE_URL must start with postgresql:// (or postgres://)")
    try:
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        raise ConfigError("CLICKEDGE_DATABASE_URL has a port that is not a number from 0 to 65535") from None


def log_level(raw: str) -> str:
    level = raw.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("must be one of debug, info, warning, error")
    return level
