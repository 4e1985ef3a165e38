"""Typed configuration from CLI flags, CLICKEDGE_* environment variables and a TOML file.

Each service declares a frozen dataclass whose fields carry their flag, environment variable, parser and
help text; the same declaration builds the argparse options, the loaded object and the README table.
A flag wins over the environment, which wins over the configuration file, which wins over the default.

The file (``--config`` or CLICKEDGE_CONFIG) has a table per service, ``[edge]``, ``[collector]`` and
``[up]``; its keys are the settings' field names (``workers``, ``trusted_proxies``). Keys at the top level
apply to every service that has that setting. Values go through the same parsers as flags, so a file
value is checked exactly as the flag would be; a list is read as the comma-separated form.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote_plus, urlsplit

from common.limits import MAX_RETENTION_DAYS

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
    show: Callable[[Any], Any] | None = None  # the value as a user writes it, where parse changed it
    default_text: str = ""  # what the default means, where the value alone would not say (an empty string)


def setting(
    default: Any,
    *,
    flag: str,
    env: str,
    parse: Callable[[str], Any],
    help: str,
    secret: bool = False,
    show: Callable[[Any], Any] | None = None,
    default_text: str = "",
) -> Any:
    spec = Spec(flag, env, parse, help, secret, show, default_text)
    return dataclasses.field(default=default, metadata={"spec": spec})


def specs(cls: type) -> list[tuple[dataclasses.Field[Any], Spec]]:
    return [(f, f.metadata["spec"]) for f in dataclasses.fields(cls) if "spec" in f.metadata]


def add_arguments(
    parser: argparse.ArgumentParser, cls: type, *, skip: frozenset[str] = frozenset(), suppress: bool = False
) -> None:
    """A flag per setting of ``cls``. ``suppress``: for the subparser of an action (`keys create --data-dir
    D`), whose defaults would otherwise overwrite what was given before the action (`keys --data-dir D
    create`)."""
    for f, spec in specs(cls):
        if spec.flag in skip:
            continue
        parser.add_argument(
            spec.flag,
            dest=f.name,
            default=argparse.SUPPRESS if suppress else None,
            metavar=f.name.upper(),
            # argparse formats help with %: a literal % must be doubled.
            help=f"{spec.help} [env {spec.env}; default: {default_text(f, spec)}]".replace("%", "%%"),
        )


def default_text(f: dataclasses.Field[Any], spec: Spec) -> str:
    """The default as --help says it: its meaning where given, "none" for an empty one, never a secret."""
    if spec.default_text:
        return spec.default_text
    if f.default in ("", None, ()):
        return "none"
    if spec.secret:
        return "<redacted>"
    value = spec.show(f.default) if spec.show is not None else f.default
    return str(value)


CONFIG_FLAG = "--config"
CONFIG_ENV = "CLICKEDGE_CONFIG"
MAX_CONFIG_BYTES = 1 << 20


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        CONFIG_FLAG,
        dest="config",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"TOML configuration file [env {CONFIG_ENV}]; flags and environment variables win over it",
    )


def config_path(args: argparse.Namespace | None, environ: Mapping[str, str]) -> Path | None:
    given = getattr(args, "config", None) if args is not None else None
    if given is None and environ.get(CONFIG_ENV):
        given = Path(environ[CONFIG_ENV])
    return Path(given) if given is not None else None


@dataclasses.dataclass(frozen=True)
class ConfigFile:
    """A parsed TOML configuration file: a table per service, and keys shared by all of them."""

    path: Path
    shared: Mapping[str, Any]
    sections: Mapping[str, Mapping[str, Any]]

    def values(self, section: str, cls: type) -> dict[str, tuple[Any, str]]:
        """The file's values for one service: field name -> (value, where it was written)."""
        names = {f.name for f, _ in specs(cls)}
        out = {
            name: (value, f"{self.path}: {name} (top level)") for name, value in self.shared.items() if name in names
        }
        for name, value in self.sections.get(section, {}).items():
            out[name] = (value, f"{self.path}: [{section}] {name}")
        return out


def read_config_file(path: Path, services: Mapping[str, type]) -> ConfigFile:
    """Parse and check the file's shape: every table a known service, every key a setting it has."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration file {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"the configuration file {path} is over {MAX_CONFIG_BYTES} bytes")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    known = {name: {f.name for f, _ in specs(cls)} for name, cls in services.items()}
    everything = set().union(*known.values())
    shared: dict[str, Any] = {}
    sections: dict[str, Mapping[str, Any]] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            if key not in known:
                raise ConfigError(f"{path}: unknown table [{key}]; the tables are {_listed(known)}")
            for name in value:
                if name not in known[key]:
                    raise ConfigError(f"{path}: [{key}] has no setting {name!r}; it has {_listed(known[key])}")
            sections[key] = value
        elif key in everything:
            envs = sorted({spec.env for cls in services.values() for f, spec in specs(cls) if f.name == key})
            if len(envs) > 1:
                raise ConfigError(
                    f"{path}: {key!r} at the top level would mean {' and '.join(envs)} at once: "
                    "set it in the service's table instead"
                )
            shared[key] = value
        else:
            raise ConfigError(f"{path}: unknown setting {key!r} at the top level; settings go in a service's table")
    return ConfigFile(path, shared, sections)


def _listed(names: Any) -> str:
    return ", ".join(sorted(names))


def _from_file(value: Any) -> str:
    """A TOML value as the text its flag would carry."""
    if isinstance(value, bool):
        raise ValueError("expected a string or a number, not true/false")
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, list) and all(isinstance(item, str | int | float) for item in value):
        return ",".join(str(item) for item in value)
    raise ValueError(f"expected a string, a number or a list of them, not {type(value).__name__}")


def load(
    cls: type[T],
    args: argparse.Namespace | None,
    environ: Mapping[str, str],
    *,
    file: ConfigFile | None = None,
    section: str = "",
    sources: dict[str, str] | None = None,
    **fixed: Any,
) -> T:
    """Build ``cls`` from flags (if given), then the environment, then the file's ``section``, then
    defaults; raise ConfigError. ``sources``, when given, is filled with where each value came from."""
    from_file = file.values(section, cls) if file is not None else {}
    values: dict[str, Any] = {}
    for f, spec in specs(cls):
        if f.name in fixed:
            values[f.name] = fixed[f.name]
            continue
        raw = getattr(args, f.name, None) if args is not None else None
        source = spec.flag
        if raw is None and environ.get(spec.env):  # set, and not to "": `CLICKEDGE_X= cmd` unsets it
            raw, source = environ[spec.env], spec.env
        if raw is None and f.name in from_file:
            value, source = from_file[f.name]
            try:
                raw = _from_file(value)
            except ValueError as exc:
                raise ConfigError(f"{source} is not valid: {exc}") from None
        if raw is None:
            if sources is not None:
                sources[f.name] = "default"
            continue
        try:
            values[f.name] = spec.parse(raw)
        except (ValueError, TypeError) as exc:
            if spec.secret:  # neither here nor in the parser's message (int() quotes what it refused)
                detail = str(exc)
                if raw:
                    detail = detail.replace(repr(raw)[1:-1], "<redacted>").replace(raw, "<redacted>")
                raise ConfigError(f"{source}=<redacted> is not valid: {detail}") from None
            raise ConfigError(f"{source}={raw!r} is not valid: {exc}") from None
        if sources is not None:
            sources[f.name] = source
    return cls(**values)


def redacted(config: object) -> dict[str, Any]:
    """The settings as a user would write them, secrets replaced by <redacted>."""
    out: dict[str, Any] = {}
    for f, spec in specs(type(config)):
        value = getattr(config, f.name)
        if spec.show is not None:
            value = spec.show(value)
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
        help="link key file",
        default_text="DATA_DIR/keys.json",
    )


def ingest_secret_setting(help: str, default_text: str) -> Any:
    return setting(
        "",
        flag="--ingest-secret",
        env="CLICKEDGE_INGEST_SECRET",
        parse=text,
        secret=True,
        help=help,
        default_text=default_text,
    )


def watchdog_setting() -> Any:
    return setting(
        10.0,
        flag="--watchdog-timeout",
        env="CLICKEDGE_WATCHDOG_TIMEOUT",
        parse=non_negative_float,
        help="seconds a supervised process's event loop may go silent before it is killed and restarted (0: off)",
    )


def public_url_setting(help: str, default: str = "", default_text: str = "") -> Any:
    return setting(
        default,
        flag="--public-url",
        env="CLICKEDGE_PUBLIC_URL",
        parse=http_url,
        help=help,
        default_text=default_text,
    )


def database_url_setting(help: str, default_text: str) -> Any:
    return setting(
        "",
        flag="--database-url",
        env="CLICKEDGE_DATABASE_URL",
        parse=text,
        secret=True,
        help=help,
        default_text=default_text,
    )


def webhook_secret_setting(default_text: str = "DATA_DIR/webhook.secret, created if missing") -> Any:
    return setting(
        "",
        flag="--webhook-secret",
        env="CLICKEDGE_WEBHOOK_SECRET",
        parse=text,
        secret=True,
        help="master key from which each webhook destination's signing secret is derived",
        default_text=default_text,
    )


def retention_days_setting() -> Any:
    return setting(
        None,
        flag="--retention-days",
        env="CLICKEDGE_RETENTION_DAYS",
        parse=retention_days,
        help="days raw click rows are kept: each older month's partition is dropped on a schedule (reports and "
        "counters stay)",
        default_text="none (keep everything)",
    )


def log_level_setting() -> Any:
    return setting(
        "INFO",
        flag="--log-level",
        env="CLICKEDGE_LOG_LEVEL",
        parse=log_level,
        help="log level: debug, info, warning, error",
    )


def log_format_setting(default: str = "json") -> Any:
    return setting(
        default,
        flag="--log-format",
        env="CLICKEDGE_LOG_FORMAT",
        parse=log_format,
        help="json (one object per line) or text",
    )


# Parsers: each raises ValueError with a message a user can act on.


MAX_DIGITS = 20  # 2**64 has 20 digits: enough for any id; refused before int() does any work


def whole_number(raw: str) -> int:
    """A number of at least 0 written with the ASCII digits 0-9 and nothing else. ``int()`` also takes
    other scripts' digits ("\u0665"), underscores ("0_5"), a sign and surrounding whitespace, so several
    spellings would name one id, and what a log or a proxy rule matched would not be what was used."""
    if not raw or len(raw) > MAX_DIGITS or not (raw.isascii() and raw.isdigit()):
        raise ValueError(f"must be a whole number written with the digits 0-9, not {raw[:40]!r}")
    return int(raw)


def port(raw: str) -> int:
    try:
        value = whole_number(raw.strip())
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise ValueError("a port is a whole number from 0 to 65535")
    return value


def positive_int(raw: str) -> int:
    try:
        value = whole_number(raw.strip())
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError("must be a whole number of at least 1")
    return value


def retention_days(raw: str) -> int:
    value = positive_int(raw)
    if value > MAX_RETENTION_DAYS:
        raise ValueError(f"must be at most {MAX_RETENTION_DAYS} (a hundred years; unset keeps everything)")
    return value


def _number(raw: str, what: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"must be {what}") from None
    if value != value or value in (float("inf"), float("-inf")):  # nan, inf: float() takes them
        raise ValueError(f"must be {what}")
    return value


def positive_float(raw: str) -> float:
    value = _number(raw, "a number greater than 0")
    if not value > 0:
        raise ValueError("must be a number greater than 0")
    return value


def non_negative_float(raw: str) -> float:
    value = _number(raw, "a number of at least 0")
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
    try:
        parts = urlsplit(dsn)
    except ValueError as exc:  # an unclosed [ of an IPv6 address, say
        raise ConfigError(f"CLICKEDGE_DATABASE_URL is not a valid URL ({exc})") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError("CLICKEDGE_DATABASE_URL must start with postgresql:// (or postgres://)")
    try:
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        raise ConfigError("CLICKEDGE_DATABASE_URL has a port that is not a number from 0 to 65535") from None


PASSWORD_PARAMETERS = frozenset({"password", "sslpassword"})


def redact_dsn(dsn: str) -> str:
    """The DSN with every password in it shown as ***: the user info's, and the values of ``password=``
    and ``sslpassword=`` query parameters (any case, percent-encoded or not). Everything else is kept as
    written, so the user recognises their DSN."""
    scheme, sep, rest = dsn.partition("://")
    if not sep:
        return "<redacted>"  # not a URL (check_dsn refuses it): nothing can be kept safely
    end = len(rest)
    for mark in "/?#":
        found = rest.find(mark)
        if found >= 0:
            end = min(end, found)
    netloc, tail = rest[:end], rest[end:]
    userinfo, at, hosts = netloc.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    if at and colon:
        netloc = f"{user}:***@{hosts}"
    before, question, query = tail.partition("?")
    if question:
        query, hash_, fragment = query.partition("#")
        query = "&".join(_redact_parameter(item) for item in query.split("&")) + hash_ + fragment
    return f"{scheme}://{netloc}{before}{question}{query}"


def _redact_parameter(item: str) -> str:
    name = item.partition("=")[0]
    if unquote_plus(name).strip().lower() in PASSWORD_PARAMETERS:
        return f"{name}=***"
    return item


def choice(raw: str, options: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in options:
        raise ValueError(f"must be one of: {', '.join(options)}")
    return value


def log_format(raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("json", "text"):
        raise ValueError("must be json or text")
    return value


def fraction(raw: str) -> float:
    value = _number(raw, "a number from 0 to 1")
    if not 0 <= value <= 1:
        raise ValueError("must be a number from 0 to 1")
    return value


def log_level(raw: str) -> str:
    level = raw.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("must be one of debug, info, warning, error")
    return level
