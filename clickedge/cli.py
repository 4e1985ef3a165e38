"""The `clickedge` command."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import errno
import getpass
import logging
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, TypeVar

import orjson
import uvloop

from clickedge.pgembed import EmbeddedPostgresError
from clickedge.services import services
from clickedge.stack import DEFAULT_PUBLIC_URL, PUBLIC_URL_FILE
from collector.config import CollectorConfig
from collector.database import DatabaseUnavailable, connect
from common import __version__, logs, settings
from common.settings import ConfigError
from edge.config import EdgeConfig
from edge.main import SpoolUnavailableError
from links import keys
from links.token import DestinationError, TokenError

if TYPE_CHECKING:
    from collector.endpoints import Endpoint

log = logging.getLogger("clickedge")
T = TypeVar("T")


def _whole_number(raw: str) -> int:
    """Ids and times on the command line: ASCII digits only, as in the admin API (int() would also take
    other scripts' digits and '0_5')."""
    try:
        return settings.whole_number(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _data_dir_args(parser: argparse.ArgumentParser, *, after_action: bool = False) -> None:
    # After an action (`keys create --keys-file F`) the options must not reset what was given before it
    # (`keys --keys-file F create`): a subparser's default would overwrite the parent's value.
    default = argparse.SUPPRESS if after_action else None
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=default,
        help="directory holding keys.json [env CLICKEDGE_DATA_DIR; default .clickedge]",
    )
    parser.add_argument(
        "--keys-file",
        type=Path,
        default=default,
        help="key file [env CLICKEDGE_KEYS_FILE; default DATA_DIR/keys.json]",
    )


def _key_path(args: argparse.Namespace) -> Path:
    if args.keys_file or os.environ.get("CLICKEDGE_KEYS_FILE"):
        return Path(args.keys_file or os.environ["CLICKEDGE_KEYS_FILE"])
    return _data_dir(args) / "keys.json"


def read_config(args: argparse.Namespace) -> settings.ConfigFile | None:
    """The configuration file named by --config or CLICKEDGE_CONFIG (by its absolute path), read once."""
    path = settings.config_path(args, os.environ)
    return settings.read_config_file(path.resolve(), services()) if path is not None else None


def load_service(
    cls: type[T],
    name: str,
    args: argparse.Namespace | None,
    file: settings.ConfigFile | None,
    sources: dict[str, str] | None = None,
) -> T:
    """A service's configuration from its flags, the environment and the configuration file's [name]."""
    return settings.load(cls, args, os.environ, file=file, section=name, sources=sources)


def build_parser() -> argparse.ArgumentParser:
    from clickedge.stack import UpConfig

    parser = argparse.ArgumentParser(prog="clickedge", description="Self-hosted click tracking.")
    parser.add_argument("--version", action="version", version=f"clickedge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("up", help="run the whole stack locally (embedded PostgreSQL, collector, edge)")
    settings.add_config_argument(p)
    settings.add_arguments(p, UpConfig)

    p = sub.add_parser("edge", help="run the redirect edge")
    settings.add_config_argument(p)
    settings.add_arguments(p, EdgeConfig)

    p = sub.add_parser("collector", help="run the collector")
    settings.add_config_argument(p)
    settings.add_arguments(p, CollectorConfig)

    p = sub.add_parser("config", help="check a configuration file and print the effective configuration")
    csub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    cc = csub.add_parser("check", help="validate the file; print each service's settings, secrets redacted")
    settings.add_config_argument(cc)
    cc.add_argument(
        "--service",
        choices=["edge", "collector", "up"],
        action="append",
        help="check only this service (repeatable; default: the file's tables, or edge and collector)",
    )

    p = sub.add_parser("migrate", help="apply schema.sql to the database (idempotent)")
    p.add_argument("--database-url", default=None, help="PostgreSQL DSN [env CLICKEDGE_DATABASE_URL]")

    p = sub.add_parser("mint", help="print a tracked link for a destination")
    p.add_argument("destination", help="the http(s) URL the link redirects to")
    p.add_argument("--campaign", type=_whole_number, required=True, help="campaign id (0..4294967295)")
    p.add_argument("--link", type=_whole_number, required=True, help="link placement id (0..4294967295)")
    p.add_argument("--contact", type=_whole_number, default=None, help="contact id; omit for an anonymous link")
    p.add_argument("--sent-at", type=_whole_number, default=None, help="send time, Unix seconds (default now)")
    p.add_argument(
        "--public-url",
        default=None,
        help="base URL of the edge [env CLICKEDGE_PUBLIC_URL; default: the one `up` recorded in DATA_DIR/public.url,"
        " else http://127.0.0.1:8080]",
    )
    p.add_argument("--token-only", action="store_true", help="print only the token")
    _data_dir_args(p)

    p = sub.add_parser("decode", help="show what a tracked link or token holds, and whether it is valid")
    p.add_argument("link", help="a tracked URL or a bare token")
    _data_dir_args(p)

    p = sub.add_parser("rewrite", help="rewrite a message's links into tracked links (HTML on stdin)")
    p.add_argument("--campaign", type=_whole_number, required=True, help="campaign id")
    p.add_argument("--contact", type=_whole_number, default=None, help="the recipient's contact id (omit: anonymous)")
    p.add_argument("--text", type=Path, default=None, help="also rewrite this plain-text part; written to TEXT.tracked")
    p.add_argument("--sent-at", type=_whole_number, default=None, help="send time, Unix seconds (default now)")
    p.add_argument(
        "--public-url",
        default=None,
        help="base URL of the edge; wins over the campaign's tracking_url [env CLICKEDGE_PUBLIC_URL; default: the"
        " campaign's tracking_url, else the one `up` recorded in DATA_DIR/public.url, else http://127.0.0.1:8080]",
    )
    p.add_argument(
        "--database-url",
        default=None,
        help="registers links and the recipient [env CLICKEDGE_DATABASE_URL; default DATA_DIR/database.url]",
    )
    _data_dir_args(p)

    p = sub.add_parser("actions", help="show or set what a link's first click does")
    p.add_argument("--campaign", type=_whole_number, required=True)
    p.add_argument("--link", type=_whole_number, required=True)
    p.add_argument(
        "--set",
        dest="new_actions",
        default=None,
        metavar="JSON",
        help='replace the actions, e.g. \'[{"type": "add_tag", "tag": "pricing"}]\'',
    )
    p.add_argument("--database-url", default=None, help="[env CLICKEDGE_DATABASE_URL; default DATA_DIR/database.url]")
    _data_dir_args(p)

    p = sub.add_parser("webhooks", help="list webhook endpoints, or give one a new signing secret")
    p.add_argument("--database-url", default=None, help="[env CLICKEDGE_DATABASE_URL; default DATA_DIR/database.url]")
    _data_dir_args(p)
    wsub = p.add_subparsers(dest="action", metavar="ACTION")
    wl = wsub.add_parser("list", help="list endpoints (the default); secrets are never listed")
    wr = wsub.add_parser("rotate", help="give an endpoint a new secret and print it (once)")
    wr.add_argument("endpoint_id", type=settings.whole_number)
    for action in (wl, wr):
        action.add_argument("--database-url", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        _data_dir_args(action, after_action=True)

    p = sub.add_parser("apikeys", help="create, list and revoke admin API keys")
    p.add_argument("--database-url", default=None, help="[env CLICKEDGE_DATABASE_URL; default DATA_DIR/database.url]")
    _data_dir_args(p)
    asub = p.add_subparsers(dest="action", metavar="ACTION")
    al = asub.add_parser("list", help="list keys (the default)")
    ac = asub.add_parser("create", help="create a key and print it (once)")
    ac.add_argument("--name", required=True)
    ac.add_argument("--scope", action="append", choices=["read", "write"], required=True)
    ar = asub.add_parser("revoke", help="revoke a key by its id")
    ar.add_argument("key_id")
    for action in (al, ac, ar):
        action.add_argument("--database-url", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        _data_dir_args(action, after_action=True)

    p = sub.add_parser("keys", help="list, create, activate and retire link keys")
    _data_dir_args(p)
    ksub = p.add_subparsers(dest="action", metavar="ACTION")
    kl = ksub.add_parser("list", help="list keys (the default)")
    kc = ksub.add_parser("create", help="create a key; it verifies at once and mints once activated")
    kc.add_argument("--activate", action="store_true", help="also make it the key new links use")
    ka = ksub.add_parser("activate", help="make a key the one new links use")
    ka.add_argument("key_id", type=_whole_number)
    kr = ksub.add_parser("retire", help="stop a key from verifying: its links stop redirecting")
    kr.add_argument("key_id", type=_whole_number)
    for action in (kl, kc, ka, kr):
        _data_dir_args(action, after_action=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    # Until a service has read its configuration (which says json or text), and for the one-shot commands.
    level = os.environ.get("CLICKEDGE_LOG_LEVEL", "INFO").upper()
    logs.configure(level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else "INFO", "text")
    try:
        return _dispatch(args, argv)
    except ConfigError as exc:
        print(f"clickedge {args.command}: configuration error: {exc}", file=sys.stderr)
        return 2
    except keys.KeyFileError as exc:
        print(f"clickedge {args.command}: {exc}", file=sys.stderr)
        return 2
    except SpoolUnavailableError as exc:
        print(f"clickedge {args.command}: {exc}", file=sys.stderr)
        return 75  # EX_TEMPFAIL: the supervisor restarts the worker with backoff
    except EmbeddedPostgresError as exc:
        print(f"clickedge {args.command}: embedded PostgreSQL: {exc}", file=sys.stderr)
        return 1
    except DatabaseUnavailable as exc:
        print(f"clickedge {args.command}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a file or directory it needs: which, and why; never a traceback
        print(f"clickedge {args.command}: {_file_problem(exc)}", file=sys.stderr)
        return 2 if exc.errno in _PATH_ERRNOS else 1


# A path that cannot be used as given (fix the configuration or the permissions), as opposed to a disk that
# failed or filled up (it may work again).
_PATH_ERRNOS = frozenset(
    {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOENT, errno.ELOOP}
)


def _file_problem(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    hint = {
        errno.EROFS: " (the data dir must be writable: --data-dir or CLICKEDGE_DATA_DIR)",
        errno.EACCES: " (the data dir must be writable: --data-dir or CLICKEDGE_DATA_DIR)",
        errno.ENOTDIR: " (a path in it is a file where a directory is needed)",
    }.get(exc.errno or 0, "")
    return f"{where}{exc.strerror or exc}{hint}"


def _dispatch(args: argparse.Namespace, argv: list[str]) -> int:
    command = args.command
    if command == "up":
        from clickedge.stack import UpConfig, up

        file = read_config(args)
        up_config = load_service(UpConfig, "up", args, file)
        logs.configure(up_config.log_level, up_config.log_format)
        return uvloop.run(up(up_config, file))
    if command == "edge":
        from edge.main import run

        config = load_service(EdgeConfig, "edge", args, read_config(args))
        logs.configure(config.log_level, config.log_format)
        return uvloop.run(run(config, argv[1:]))
    if command == "collector":
        from collector.main import run as run_collector

        collector_config = load_service(CollectorConfig, "collector", args, read_config(args))
        logs.configure(collector_config.log_level, collector_config.log_format)
        return uvloop.run(run_collector(collector_config))
    if command == "config":
        return _config_check(args)
    if command == "migrate":
        from collector.schema import migrate_dsn

        dsn = args.database_url or os.environ.get("CLICKEDGE_DATABASE_URL")
        if not dsn:
            raise ConfigError("set CLICKEDGE_DATABASE_URL or --database-url to a PostgreSQL DSN")
        print(asyncio.run(migrate_dsn(dsn)))
        return 0
    if command == "mint":
        return _mint(args)
    if command == "decode":
        return _decode(args)
    if command == "keys":
        return _keys(args)
    if command == "rewrite":
        return asyncio.run(_rewrite(args))
    if command == "actions":
        return asyncio.run(_actions(args))
    if command == "apikeys":
        return asyncio.run(_apikeys(args))
    if command == "webhooks":
        return asyncio.run(_webhooks(args))
    raise AssertionError(command)


def _config_check(args: argparse.Namespace) -> int:
    file = read_config(args)
    if file is None:
        raise ConfigError(f"no configuration file: give {settings.CONFIG_FLAG} FILE or set {settings.CONFIG_ENV}")
    path = file.path
    wanted = args.service or [name for name in services() if name in file.sections] or ["edge", "collector"]
    lines = [
        f"# {path}: valid. The effective configuration of each service below: the file, with CLICKEDGE_*",
        "# environment variables applied over it, and defaults for the rest; secrets are redacted.",
    ]
    for name in wanted:
        sources: dict[str, str] = {}
        config: object = load_service(services()[name], name, None, file, sources)
        lines += ["", f"[{name}]"]
        for key, value in settings.redacted(config).items():
            where = sources[key].removeprefix(f"{path}: ")
            if value is None:
                lines.append(f"# {key} is not set ({where})")
            else:
                lines.append(f"{key} = {_toml_value(value)}  # {where}")
    print("\n".join(lines))
    return 0


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return orjson.dumps(str(value)).decode()  # a JSON string is a TOML basic string


def _public_url(args: argparse.Namespace) -> str:
    """Where minted links point: --public-url, CLICKEDGE_PUBLIC_URL, the URL `clickedge up` recorded in the data
    dir (its edge port), or http://127.0.0.1:8080."""
    base = args.public_url or os.environ.get("CLICKEDGE_PUBLIC_URL")
    if not base:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            base = (_data_dir(args) / PUBLIC_URL_FILE).read_text().strip()
    return settings.http_url(base or DEFAULT_PUBLIC_URL)


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir or os.environ.get("CLICKEDGE_DATA_DIR") or ".clickedge")


def _required_dsn(args: argparse.Namespace) -> str:
    dsn = _database_url(args)
    assert dsn is not None  # _database_url raises when there is none
    return dsn


def _database_url(args: argparse.Namespace, *, required: bool = True) -> str | None:
    """--database-url, CLICKEDGE_DATABASE_URL, or the DSN `clickedge up` left in the data dir."""
    dsn = getattr(args, "database_url", None) or os.environ.get("CLICKEDGE_DATABASE_URL")
    if not dsn:
        with contextlib.suppress(FileNotFoundError):
            dsn = (_data_dir(args) / "database.url").read_text().strip()
    if not dsn and required:
        raise ConfigError("no database: set CLICKEDGE_DATABASE_URL or --database-url (or run `clickedge up`)")
    if dsn:
        settings.check_dsn(dsn)
    return dsn


async def _rewrite(args: argparse.Namespace) -> int:
    from collector import campaigns
    from links.rewrite import RewriteError, base_url_problem, prepare

    if not 0 <= args.campaign <= 2**32 - 1 or (args.contact is not None and not 1 <= args.contact <= 2**63 - 1):
        print("clickedge rewrite: --campaign must be 0..4294967295 and --contact at least 1", file=sys.stderr)
        return 2
    codec = keys.load(_key_path(args)).codec()
    html = sys.stdin.read()
    text = args.text.read_text() if args.text else None
    base = _public_url(args)
    sent_at = args.sent_at if args.sent_at is not None else int(time.time())
    if base_url_problem(base) is not None:
        raise ConfigError(f"--public-url / CLICKEDGE_PUBLIC_URL {base_url_problem(base)}")
    try:
        message = prepare(html, text)
    except RewriteError as exc:
        print(f"clickedge rewrite: {exc}", file=sys.stderr)
        return 2
    dsn = _database_url(args, required=False)
    if dsn:
        conn = await connect(dsn)
        try:
            async with conn.transaction():
                tracking, tracking_url = await campaigns.ensure_campaign(conn, args.campaign)
                if tracking_url and not args.public_url:
                    base = tracking_url  # the campaign's own tracking domain; --public-url still wins
                if not tracking:
                    sys.stdout.write(html)  # tracking is off for this campaign: the message goes out unchanged
                    if args.text:
                        args.text.with_name(args.text.name + ".tracked").write_text(text or "")
                    return 0
                await campaigns.register_links(conn, args.campaign, message.links)
                if args.contact is not None:
                    await campaigns.record_recipient(conn, args.campaign, args.contact)
        except campaigns.Conflict as exc:
            print(f"clickedge rewrite: {exc}", file=sys.stderr)
            return 2
        finally:
            await conn.close()
    else:
        print("clickedge rewrite: no database configured; links are minted but not registered", file=sys.stderr)
    out_html, out_text = message.render(
        codec, base_url=base, campaign_id=args.campaign, contact_id=args.contact, sent_at=sent_at
    )
    sys.stdout.write(out_html)
    if args.text and out_text is not None:
        args.text.with_name(args.text.name + ".tracked").write_text(out_text)
    for skipped in message.skipped:
        print(f"left alone: {skipped.href} ({skipped.reason})", file=sys.stderr)
    return 0


async def _actions(args: argparse.Namespace) -> int:
    from collector import campaigns
    from collector.actions import ActionError

    conn = await connect(_required_dsn(args))
    try:
        if args.new_actions is not None:
            try:
                wanted = orjson.loads(args.new_actions)
            except orjson.JSONDecodeError as exc:
                print(f"clickedge actions: --set is not valid JSON: {exc}", file=sys.stderr)
                return 2
            actor = f"cli:{getpass.getuser()}"
            try:
                _, made = await campaigns.set_actions(conn, args.campaign, args.link, wanted, actor)
            except (ActionError, campaigns.NotFound) as exc:
                print(f"clickedge actions: {exc}", file=sys.stderr)
                return 2
            master = _webhook_master(args)
            for endpoint in made:
                if master is None:
                    print(
                        f"webhook endpoint {endpoint.id} is new; its secret derives from the collector's webhook "
                        f"secret, which is not here: run `clickedge webhooks rotate {endpoint.id}` where it is "
                        f"(CLICKEDGE_WEBHOOK_SECRET or DATA_DIR/webhook.secret) to get one",
                        file=sys.stderr,
                    )
                else:
                    _print_endpoint_secret(endpoint, master)
        links = {link["id"]: link for link in await campaigns.list_links(conn, args.campaign)}
        link = links.get(args.link)
        if link is None:
            print(f"clickedge actions: campaign {args.campaign} has no link {args.link}", file=sys.stderr)
            return 2
        print(orjson.dumps(link["actions"], option=orjson.OPT_INDENT_2).decode())
        for change in await campaigns.action_audit(conn, args.campaign, args.link):
            print(
                f"# {change['at']} {change['actor']}: {len(change['before'])} -> {len(change['after'])} actions",
                file=sys.stderr,
            )
    finally:
        await conn.close()
    return 0


def _webhook_master(args: argparse.Namespace) -> bytes | None:
    from collector.config import existing_webhook_secret

    return existing_webhook_secret(os.environ.get("CLICKEDGE_WEBHOOK_SECRET", ""), _data_dir(args))


def _print_endpoint_secret(endpoint: Endpoint, master: bytes, file: TextIO = sys.stderr) -> None:
    shown = endpoint.public()["url"]
    print(f"webhook endpoint {endpoint.id} ({shown}) generation {endpoint.generation} secret:", file=sys.stderr)
    print(endpoint.secret(master), file=file)
    print("Give it to that receiver: it is shown this once (only the master secret is kept).", file=sys.stderr)


async def _webhooks(args: argparse.Namespace) -> int:
    from collector import endpoints

    master = _webhook_master(args)
    if args.action == "rotate" and master is None:
        # Rotating without the master would leave an endpoint whose secret nobody has seen.
        print(
            "clickedge webhooks: the collector's webhook secret is not here: set CLICKEDGE_WEBHOOK_SECRET or "
            "--data-dir to the collector's data dir",
            file=sys.stderr,
        )
        return 2
    conn = await connect(_required_dsn(args))
    try:
        if args.action == "rotate":
            assert master is not None
            try:
                endpoint = await endpoints.rotate(conn, args.endpoint_id)
            except endpoints.NotFound as exc:
                print(f"clickedge webhooks: {exc}", file=sys.stderr)
                return 2
            _print_endpoint_secret(endpoint, master, sys.stdout)
            return 0
        after = 0
        while True:
            page, next_after = await endpoints.listing(conn, after=after, limit=1000)
            for e in page:
                rotated = f"rotated {e.rotated_at:%Y-%m-%d}" if e.rotated_at else "never rotated"
                print(f"{e.id:>6}  gen {e.generation:<4} {rotated:<18} {e.public()['url']}")
            if next_after is None:
                return 0
            after = next_after
    finally:
        await conn.close()


async def _apikeys(args: argparse.Namespace) -> int:
    from collector import apikeys

    conn = await connect(_required_dsn(args))
    try:
        action = args.action or "list"
        if action == "create":
            try:
                key = await apikeys.create(conn, args.name, args.scope)
            except apikeys.ApiKeyError as exc:
                print(f"clickedge apikeys: {exc}", file=sys.stderr)
                return 2
            print(key)
            print("Keep it: it is shown this once (only a hash is stored).", file=sys.stderr)
            return 0
        if action == "revoke":
            if not await apikeys.revoke(conn, args.key_id):
                print(f"clickedge apikeys: no active key {args.key_id}", file=sys.stderr)
                return 2
            print(f"revoked {args.key_id}")
            return 0
        for row in await apikeys.listing(conn):
            state = f"revoked {row['revoked_at']:%Y-%m-%d}" if row["revoked_at"] else "active"
            print(f"{row['key_id']}  {','.join(row['scopes']):<11} {state:<18} {row['name']}")
    finally:
        await conn.close()
    return 0


def _mint(args: argparse.Namespace) -> int:
    codec = keys.load(_key_path(args)).codec()
    try:
        base = _public_url(args)
        token = codec.mint(
            args.destination,
            campaign_id=args.campaign,
            link_id=args.link,
            contact_id=args.contact,
            sent_at=args.sent_at if args.sent_at is not None else int(time.time()),
        )
    except (DestinationError, ValueError) as exc:
        print(f"clickedge mint: {exc}", file=sys.stderr)
        return 2
    print(token if args.token_only else f"{base}/c/{token}")
    return 0


def _decode(args: argparse.Namespace) -> int:
    from edge.redirect import TOKEN_PREFIX

    text = args.link.strip()
    if "://" in text:
        path = text.split("://", 1)[1].partition("/")[2]
        text = path[len(TOKEN_PREFIX) - 1 :] if ("/" + path).startswith(TOKEN_PREFIX) else path
        text = text.partition("?")[0].partition("#")[0]
    ring = keys.load(_key_path(args))
    try:
        link = ring.codec().decode(text)
    except TokenError as exc:
        print(f"NOT VALID ({exc.kind}): {exc.reason}")
        if exc.kind == "invalid" and "retired" not in exc.reason:
            print(
                "A link minted with a key this data dir does not hold also shows this; "
                f"keys here: {', '.join(f'{k.id} ({k.state})' for k in ring.keys) or 'none'}"
            )
        return 1
    key = ring.get(link.key_id)
    sent = datetime.fromtimestamp(link.sent_at, UTC).isoformat()
    print("VALID")
    for name, value in (
        ("destination", link.destination),
        ("campaign", link.campaign_id),
        ("link", link.link_id),
        ("contact", link.contact_id if link.contact_id is not None else "none (anonymous)"),
        ("sent at", f"{sent} ({link.sent_at})"),
        ("key", f"{key.id} ({key.state})"),
        # Verified above, so its first four characters are base64url whose first byte is the version.
        ("format", f"version {base64.urlsafe_b64decode(text[:4])[0]}, {len(text)} characters"),
    ):
        print(f"  {name:<12} {value}")
    return 0


def _keys(args: argparse.Namespace) -> int:
    path = _key_path(args)
    action = args.action or "list"
    if action == "create":
        ring = keys.load(path) if path.exists() else keys.KeyRing([])
        ring = ring.create(activate=args.activate)
        keys.save(ring, path)
        print(f"created key {ring.keys[-1].id} ({ring.keys[-1].state}) in {path}")
    elif action in ("activate", "retire"):
        ring = keys.load(path)
        ring = ring.activate(args.key_id) if action == "activate" else ring.retire(args.key_id)
        keys.save(ring, path)
        print(f"key {args.key_id} is now {ring.get(args.key_id).state}")
    ring = keys.load(path)
    print(f"{'id':>5}  {'state':<10} {'created':<20} changed")
    for key in ring.keys:
        print(f"{key.id:>5}  {key.state:<10} {_iso(key.created_at):<20} {_iso(key.changed_at)}")
    return 0


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
