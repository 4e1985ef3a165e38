"""`clickedge keys`: list, create, activate and retire link keys."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from clickedge.cli.options import KeyOptions, add_options, load, whole_number
from links import keys


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("keys", help="list, create, activate and retire link keys")
    add_options(p, KeyOptions)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    created = actions.add_parser("create", help="create a key; it verifies at once and mints once activated")
    created.add_argument("--activate", action="store_true", help="also make it the key new links use")
    activated = actions.add_parser("activate", help="make a key the one new links use")
    activated.add_argument("key_id", type=whole_number)
    retired = actions.add_parser("retire", help="stop a key from verifying: its links stop redirecting")
    retired.add_argument("key_id", type=whole_number)
    listed = actions.add_parser("list", help="list keys (the default)")
    for action in (listed, created, activated, retired):
        add_options(
            action, KeyOptions, suppress=True
        )  # `keys create --data-dir D` as well as `keys --data-dir D create`
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    path = load(KeyOptions, args).key_path
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
    print("\n".join(listing(keys.load(path))))
    return 0


def listing(ring: keys.KeyRing) -> list[str]:
    lines = [f"{'id':>5}  {'state':<10} {'created':<20} changed"]
    for key in ring.keys:
        lines.append(f"{key.id:>5}  {key.state:<10} {_iso(key.created_at):<20} {_iso(key.changed_at)}")
    return lines


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
