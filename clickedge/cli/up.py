"""`clickedge up`: the whole stack on this machine."""

from __future__ import annotations

import argparse
import os

import uvloop

from clickedge.services import services
from clickedge.stack import UpConfig, up
from common import logs, settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("up", help="run the whole stack locally (embedded PostgreSQL, collector, edge)")
    settings.add_config_argument(p)
    settings.add_arguments(p, UpConfig)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    file = read_config(args)
    config = settings.load(UpConfig, args, os.environ, file=file, section="up")
    logs.configure(config.log_level, config.log_format)
    return uvloop.run(up(config, file))


def read_config(args: argparse.Namespace | None) -> settings.ConfigFile | None:
    """The configuration file named by --config or CLICKEDGE_CONFIG (by its absolute path), read once."""
    path = settings.config_path(args, os.environ)
    return settings.read_config_file(path.resolve(), services()) if path is not None else None
