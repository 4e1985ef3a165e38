"""`clickedge config check`: validate a configuration file and print each service's effective settings;
`clickedge config reference`: every setting of every command, as docs/configuration.md has them."""

from __future__ import annotations

import argparse
import os

import orjson

from clickedge.cli.reference import configuration_reference
from clickedge.cli.up import read_config
from clickedge.services import services
from collector.config import CollectorConfig
from collector.networks import load as load_networks
from common import settings
from common.settings import ConfigError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("config", help="check a configuration file; print the settings reference")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser("check", help="validate the file; print each service's settings, secrets redacted")
    settings.add_config_argument(check)
    check.add_argument(
        "--service",
        choices=["edge", "collector", "up"],
        action="append",
        help="check only this service (repeatable; default: the file's tables, or edge and collector)",
    )
    check.set_defaults(run=run_check)
    reference = actions.add_parser("reference", help="print every setting of every command (Markdown)")
    reference.set_defaults(run=run_reference)


def run_check(args: argparse.Namespace) -> int:
    file = read_config(args)
    if file is None:
        raise ConfigError(f"no configuration file: give {settings.CONFIG_FLAG} FILE or set {settings.CONFIG_ENV}")
    wanted = args.service or [name for name in services() if name in file.sections] or ["edge", "collector"]
    print("\n".join(effective_configuration(file, wanted)))
    return 0


def run_reference(args: argparse.Namespace) -> int:
    print(configuration_reference(), end="")
    return 0


def effective_configuration(file: settings.ConfigFile, wanted: list[str]) -> list[str]:
    path = file.path
    lines = [
        f"# {path}: valid. The effective configuration of each service below: the file, with CLICKEDGE_*",
        "# environment variables applied over it, and defaults for the rest; secrets are redacted.",
    ]
    for name in wanted:
        sources: dict[str, str] = {}
        config: object = settings.load(services()[name], None, os.environ, file=file, section=name, sources=sources)
        lines += ["", f"[{name}]"]
        for key, value in settings.redacted(config).items():
            where = sources[key].removeprefix(f"{path}: ")
            if value is None:
                lines.append(f"# {key} is not set ({where})")
            else:
                lines.append(f"{key} = {toml_value(value)}  # {where}")
        if isinstance(config, CollectorConfig):
            lines.append(scanner_summary(config))
    return lines


def scanner_summary(config: CollectorConfig) -> str:
    """What the classifier's network file holds (collector/networks.py), as a comment."""
    networks = load_networks(config.scanner_networks)
    dated = f", updated {networks.updated}" if networks.updated else ", undated"
    labels = sorted({label for _, label in networks.networks})
    return (
        f"# scanner_networks: {len(networks)} networks ({', '.join(labels) or 'none'}){dated}; "
        f"people_networks: {len(config.people_networks)}. Per campaign, count_everything and decoy_link are "
        "set with PUT /v1/campaigns/{id}."
    )


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return orjson.dumps(str(value)).decode()  # a JSON string is a TOML basic string
