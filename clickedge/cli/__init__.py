"""The `clickedge` command. One module per command, each with ``register`` (its parser) and ``run``; this
module builds the parser from them, runs the one asked for, and turns what went wrong into one line on
stderr and an exit code: 2 when the configuration or input must change, 1 when trying again may work."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from collections.abc import Sequence

from clickedge.cli import (
    actions,
    apikeys,
    block,
    collector,
    config,
    contacts,
    decode,
    edge,
    keys,
    login_url,
    migrate,
    mint,
    retention,
    rewrite,
    up,
    webhooks,
)
from clickedge.cli.options import CommandError
from clickedge.pgembed import EmbeddedPostgresError
from collector.database import DatabaseUnavailable
from common import __version__, logs
from common.process import CONFIG_ERROR_EXIT, TEMPFAIL_EXIT
from common.settings import ConfigError
from edge.main import SpoolUnavailableError
from links.keys import KeyFileError

log = logging.getLogger("clickedge")
COMMANDS = (
    up,
    edge,
    collector,
    migrate,
    config,
    mint,
    decode,
    keys,
    rewrite,
    actions,
    apikeys,
    webhooks,
    retention,
    contacts,
    block,
    login_url,
)

# A path that cannot be used as given (fix the configuration or the permissions), as opposed to a disk that
# failed or filled up (it may work again).
_PATH_ERRNOS = frozenset(
    {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOENT, errno.ELOOP}
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clickedge", description="Self-hosted click tracking.")
    parser.add_argument("--version", action="version", version=f"clickedge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv[1:]  # the command's own arguments, which `edge --workers N` passes on to its workers
    # Until the command has read its configuration (which says json or text, and the level).
    level = os.environ.get("CLICKEDGE_LOG_LEVEL", "INFO").upper()
    logs.configure(level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else "INFO", "text")
    try:
        code: int = args.run(args)
        return code
    except CommandError as exc:
        return _fail(args, str(exc), exc.code)
    except ConfigError as exc:
        return _fail(args, f"configuration error: {exc}", CONFIG_ERROR_EXIT)
    except KeyFileError as exc:
        return _fail(args, str(exc), CONFIG_ERROR_EXIT)
    except SpoolUnavailableError as exc:
        return _fail(args, str(exc), TEMPFAIL_EXIT)  # the supervisor restarts the worker with backoff
    except EmbeddedPostgresError as exc:
        return _fail(args, f"embedded PostgreSQL: {exc}", 1)
    except DatabaseUnavailable as exc:
        return _fail(args, str(exc), 1)
    except OSError as exc:  # a file or directory it needs: which, and why; never a traceback
        return _fail(args, _file_problem(exc), CONFIG_ERROR_EXIT if exc.errno in _PATH_ERRNOS else 1)


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    print(f"clickedge {args.command}: {message}", file=sys.stderr)
    return code


def _file_problem(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    hint = {
        errno.EROFS: " (the data dir must be writable: --data-dir or CLICKEDGE_DATA_DIR)",
        errno.EACCES: " (the data dir must be writable: --data-dir or CLICKEDGE_DATA_DIR)",
        errno.ENOTDIR: " (a path in it is a file where a directory is needed)",
    }.get(exc.errno or 0, "")
    return f"{where}{exc.strerror or exc}{hint}"
