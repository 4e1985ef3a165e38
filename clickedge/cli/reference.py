"""The configuration reference (docs/configuration.md), generated from the settings' declarations: every
command's settings, one row per environment variable. `clickedge config reference` prints it; a test
fails when the document in the repository differs (`make docs` writes it)."""

from __future__ import annotations

import dataclasses

from clickedge.cli.options import DatabaseOptions, KeyOptions, LinkOptions, RewriteOptions, WebhookOptions
from clickedge.stack import UpConfig
from collector.config import CollectorConfig
from common import settings as s
from edge.config import EdgeConfig

# Which commands read which declarations, in the order the reference names them.
USERS: tuple[tuple[str, type], ...] = (
    ("up", UpConfig),
    ("edge", EdgeConfig),
    ("collector", CollectorConfig),
    ("migrate", DatabaseOptions),
    ("mint", LinkOptions),
    ("decode", KeyOptions),
    ("keys", KeyOptions),
    ("rewrite", RewriteOptions),
    ("actions", WebhookOptions),
    ("apikeys", DatabaseOptions),
    ("webhooks", WebhookOptions),
)

INTRO = """\
# Configuration reference

Generated from the settings' declarations by `clickedge config reference` (`make docs` writes this file;
a test fails when it is out of date). Every setting is a flag, a `CLICKEDGE_*` environment variable, or a
key in a TOML configuration file given with `--config FILE` or `CLICKEDGE_CONFIG`. A flag wins over the
environment, which wins over the file, which wins over the default; a variable set to the empty string
counts as not set. A bad value stops the command with a message naming the setting (and the file) and
what is wrong (exit code 2).

The file has a table per service, `[edge]`, `[collector]` and `[up]`; a key is the variable's name in
lower case without its service prefix (`CLICKEDGE_WORKERS` is `workers`, `CLICKEDGE_COLLECTOR_POOL_SIZE`
is `pool_size`, `CLICKEDGE_EDGE_PORT` is `port` in `[edge]`). Keys at the top level apply to every command
that has them (`data_dir`, `ingest_secret`, `log_level`, …; the one-shot commands read only those),
except keys that mean different settings per service (`port`, `host`, `drain_grace`, …), which must go in
a table. `up` runs the stack with its own ports, workers, data dir and public URL (`[up]` or the top
level) and its own log settings, passed on to the edge and the collector; their other keys come from
`[edge]` and `[collector]`. A list is written as a TOML array:

```toml
log_level = "info"
ingest_secret = "…"                        # or CLICKEDGE_INGEST_SECRET from a secret store

[edge]
host = "0.0.0.0"
workers = 4
metrics_port = 9180                        # worker i serves /metrics on 9180 + i
trusted_proxies = ["10.0.0.0/8"]           # the load balancers
spool_dir = "/var/lib/clickedge/spool"

[collector]
database_url = "postgresql://clickedge@db/clickedge"
public_url = "https://t.example.com"
```

`clickedge config check --config FILE` validates the file (unknown tables and keys are errors, so a typo
never goes unnoticed) and prints each service's effective configuration, with the environment applied,
where each value came from, and secrets shown as `<redacted>`; it exits 2 with the reason when something
is wrong. `--service edge` checks one service only.

Secrets (`CLICKEDGE_DATABASE_URL`, `CLICKEDGE_INGEST_SECRET`, `CLICKEDGE_WEBHOOK_SECRET`, keys) are never
printed: errors show them as `<redacted>`, and `up` shows a DSN with every password in it as `***`.

"""


@dataclasses.dataclass
class _Row:
    env: str
    flag: str
    users: list[str]
    defaults: dict[str, list[str]]  # default text -> the commands with it
    meaning: str


def configuration_reference() -> str:
    rows: dict[str, _Row] = {}
    for command, cls in USERS:
        for f, spec in s.specs(cls):
            row = rows.setdefault(spec.env, _Row(spec.env, spec.flag, [], {}, spec.help))
            if len(spec.help) < len(row.meaning):
                row.meaning = spec.help  # the most general wording: commands add their own detail to it
            row.users.append(command)
            row.defaults.setdefault(s.default_text(f, spec), []).append(command)
    lines = [
        "| variable | flag | used by | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for row in sorted(rows.values(), key=lambda r: r.env):
        if len(row.defaults) == 1:
            default = _code(next(iter(row.defaults)))
        else:
            default = "; ".join(f"{', '.join(users)}: {_code(text)}" for text, users in row.defaults.items())
        lines.append(f"| `{row.env}` | `{row.flag}` | {', '.join(row.users)} | {default} | {_cell(row.meaning)} |")
    return INTRO + "\n".join(lines) + "\n"


def _code(text: str) -> str:
    return "none" if text == "none" else f"`{text}`" if " " not in text else _cell(text)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
