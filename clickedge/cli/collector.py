"""`clickedge collector`: the collector."""

from __future__ import annotations

import argparse
import os

import uvloop

from clickedge.cli.up import read_config
from collector.config import CollectorConfig
from collector.main import run as run_collector
from common import logs, settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("collector", help="run the collector")
    settings.add_config_argument(p)
    settings.add_arguments(p, CollectorConfig)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = settings.load(CollectorConfig, args, os.environ, file=read_config(args), section="collector")
    logs.configure(config.log_level, config.log_format)
    return uvloop.run(run_collector(config))
