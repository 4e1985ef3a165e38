"""`clickedge edge`: a redirect edge; with --workers N, N worker processes sharing its port."""

from __future__ import annotations

import argparse
import os

import uvloop

from clickedge.cli.up import read_config
from clickedge.workers import run_workers
from common import logs, settings
from edge.config import EdgeConfig
from edge.main import run_worker


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("edge", help="run the redirect edge")
    settings.add_config_argument(p)
    settings.add_arguments(p, EdgeConfig)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = settings.load(EdgeConfig, args, os.environ, file=read_config(args), section="edge")
    logs.configure(config.log_level, config.log_format)
    if config.workers == 1:
        return uvloop.run(run_worker(config))
    return uvloop.run(run_workers(config, args.argv))
