"""What the one-shot commands share: their settings, declared like the services' (common/settings.py), so
every command resolves the data dir, key file, database and public URL the same way, from a flag, a
CLICKEDGE_* variable, the configuration file's top-level keys, the files `up` leaves in the data dir, or
the default; and the errors a command reports instead of printing."""

from __future__ import annotations

import argparse
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from clickedge.services import services
from clickedge.stack import COLLECTOR_URL_FILE, DATABASE_URL_FILE, DEFAULT_PUBLIC_URL, PUBLIC_URL_FILE
from common import settings as s
from links import keys

T = TypeVar("T")


class CommandError(Exception):
    """What a command could not do, in one line; ``code``: 2 when the input or configuration must change,
    1 when trying again may work."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def whole_number(raw: str) -> int:
    """Ids and times on the command line: ASCII digits only, as in the admin API (int() would also take
    other scripts' digits and '0_5')."""
    try:
        return s.whole_number(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_options(parser: argparse.ArgumentParser, cls: type, *, suppress: bool = False) -> None:
    """The settings of ``cls`` as flags, and --config."""
    if not suppress:
        s.add_config_argument(parser)
    s.add_arguments(parser, cls, suppress=suppress)


def load(cls: type[T], args: argparse.Namespace) -> T:
    """``cls`` from the flags, the environment and the configuration file's top-level keys."""
    path = s.config_path(args, os.environ)
    file = s.read_config_file(path.resolve(), services()) if path is not None else None
    return s.load(cls, args, os.environ, file=file)


@dataclass(frozen=True)
class KeyOptions:
    """`mint`, `decode`, `keys`: the link keys."""

    data_dir: Path = s.data_dir_setting("directory with keys.json (and, after `up`, public.url and database.url)")
    keys_file: Path | None = s.keys_file_setting()
    log_level: str = s.log_level_setting()

    @property
    def key_path(self) -> Path:
        return self.keys_file or self.data_dir / "keys.json"


@dataclass(frozen=True)
class LinkOptions(KeyOptions):
    """`mint`: the keys, and where links point."""

    public_url: str = s.public_url_setting(
        "base URL of the links (a campaign's tracking_url wins, for `rewrite`)",
        default_text=f"the URL `up` recorded in DATA_DIR/{PUBLIC_URL_FILE}, else {DEFAULT_PUBLIC_URL}",
    )

    def base_url(self) -> str:
        if self.public_url:
            return self.public_url
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            recorded = (self.data_dir / PUBLIC_URL_FILE).read_text().strip()
            if recorded:
                return s.http_url(recorded)
        return DEFAULT_PUBLIC_URL


def _dsn(database_url: str, data_dir: Path) -> str | None:
    dsn = database_url
    if not dsn:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            dsn = (data_dir / DATABASE_URL_FILE).read_text().strip()
    if dsn:
        s.check_dsn(dsn)
    return dsn or None


_DATABASE_HELP = "PostgreSQL DSN"
_DATABASE_DEFAULT = f"the DSN `up` recorded in DATA_DIR/{DATABASE_URL_FILE}"


@dataclass(frozen=True)
class DatabaseOptions:
    """`migrate`, `actions`, `apikeys`, `webhooks`: the database."""

    data_dir: Path = s.data_dir_setting("directory where `up` recorded the database's DSN")
    database_url: str = s.database_url_setting(_DATABASE_HELP, _DATABASE_DEFAULT)
    log_level: str = s.log_level_setting()

    def dsn(self) -> str:
        dsn = _dsn(self.database_url, self.data_dir)
        if dsn is None:
            raise s.ConfigError("no database: set CLICKEDGE_DATABASE_URL or --database-url (or run `clickedge up`)")
        return dsn


@dataclass(frozen=True)
class RetentionOptions(DatabaseOptions):
    """`retention`: the database, and how long raw clicks are kept."""

    retention_days: int | None = s.retention_days_setting()


DEFAULT_COLLECTOR_URL = "http://127.0.0.1:8081"


@dataclass(frozen=True)
class LoginOptions(DatabaseOptions):
    """`login-url`: the database, and the collector's URL a browser opens."""

    collector_url: str = s.setting(
        "",
        flag="--collector-url",
        env="CLICKEDGE_COLLECTOR_URL",
        parse=s.http_url,
        help="the collector's URL as a browser reaches it",
        default_text=f"the URL `up` serves (DATA_DIR/{COLLECTOR_URL_FILE}), else {DEFAULT_COLLECTOR_URL}",
    )

    def browser_url(self) -> str:
        if self.collector_url:
            return self.collector_url
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            recorded = (self.data_dir / COLLECTOR_URL_FILE).read_text().strip()
            if recorded:
                return recorded
        return DEFAULT_COLLECTOR_URL


@dataclass(frozen=True)
class WebhookOptions(DatabaseOptions):
    """`actions`, `webhooks`: the database, and the master secret webhook secrets derive from."""

    webhook_secret: str = s.webhook_secret_setting("the collector's DATA_DIR/webhook.secret (never made here)")


@dataclass(frozen=True)
class RewriteOptions(LinkOptions):
    """`rewrite`: the keys, where links point, and the database that registers them (optional)."""

    database_url: str = s.database_url_setting(
        _DATABASE_HELP + " (links are minted but not registered without one)", _DATABASE_DEFAULT
    )

    def optional_dsn(self) -> str | None:
        return _dsn(self.database_url, self.data_dir)


def open_keys(options: KeyOptions) -> keys.KeyRing:
    return keys.load(options.key_path)
