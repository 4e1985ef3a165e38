"""The `clickedge` command as a user runs it: mint, decode, keys, and configuration errors."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import orjson
import pytest

from clickedge.pgembed import free_port
from collector import campaigns
from links import keys
from links.rewrite import LinkSlot
from loadtests.bench_decode import version_1_token
from tests.collector.test_admin_api import REFUSED_ACTIONS

DEST = "https://shop.example.com/pricing?utm_source=news#plans"


def clickedge(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clickedge", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_mint_then_decode(data_dir: Path) -> None:
    minted = clickedge("mint", "--data-dir", str(data_dir), "--campaign", "7", "--link", "3", "--contact", "42", DEST)
    assert minted.returncode == 0, minted.stderr
    url = minted.stdout.strip()
    assert url.startswith("http://127.0.0.1:8080/c/")
    decoded = clickedge("decode", "--data-dir", str(data_dir), url)
    assert decoded.returncode == 0, decoded.stderr
    out = decoded.stdout
    assert out.startswith("VALID")
    for expected in (DEST, "campaign     7", "link         3", "contact      42", "key          1 (active)"):
        assert expected in out
    assert "format       version 2," in out


def test_decode_names_the_format_version_of_an_older_link(data_dir: Path) -> None:
    key = keys.load(data_dir / "keys.json").keys[0]
    old = version_1_token(key.secret_bytes(), key.id, DEST)
    decoded = clickedge("decode", "--data-dir", str(data_dir), old)
    assert decoded.returncode == 0 and "format       version 1," in decoded.stdout


def test_mint_uses_the_public_url_and_supports_anonymous(data_dir: Path) -> None:
    minted = clickedge(
        "mint",
        "--data-dir",
        str(data_dir),
        "--campaign",
        "1",
        "--link",
        "2",
        DEST,
        env={"CLICKEDGE_PUBLIC_URL": "https://t.example.net/"},
    )
    assert minted.returncode == 0, minted.stderr
    assert minted.stdout.startswith("https://t.example.net/c/")
    decoded = clickedge("decode", "--data-dir", str(data_dir), minted.stdout.strip())
    assert "none (anonymous)" in decoded.stdout


@pytest.mark.parametrize(
    ("destination", "message"),
    [("ftp://example.com/x", "http:// or https://"), ("https://example.com/a b", "whitespace")],
)
def test_mint_refuses_bad_destinations(data_dir: Path, destination: str, message: str) -> None:
    result = clickedge("mint", "--data-dir", str(data_dir), "--campaign", "1", "--link", "1", destination)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_decode_says_why_a_link_is_not_valid(data_dir: Path) -> None:
    url = clickedge("mint", "--data-dir", str(data_dir), "--campaign", "1", "--link", "1", DEST).stdout.strip()
    i = len(url) - 10
    tampered = url[:i] + ("A" if url[i] != "A" else "B") + url[i + 1 :]
    result = clickedge("decode", "--data-dir", str(data_dir), tampered)
    assert result.returncode == 1
    assert "NOT VALID (invalid)" in result.stdout and "altered or forged" in result.stdout
    result = clickedge("decode", "--data-dir", str(data_dir), "not*a*token")
    assert result.returncode == 1
    assert "NOT VALID (malformed)" in result.stdout


def test_keys_rotation_from_the_command_line(tmp_path: Path) -> None:
    d = str(tmp_path)
    created = clickedge("keys", "--data-dir", d, "create")
    assert created.returncode == 0 and "created key 1 (active)" in created.stdout
    old = clickedge("mint", "--data-dir", d, "--campaign", "1", "--link", "1", DEST).stdout.strip()
    assert "created key 2 (verifying)" in clickedge("keys", "--data-dir", d, "create").stdout
    assert "key 2 is now active" in clickedge("keys", "--data-dir", d, "activate", "2").stdout
    new = clickedge("mint", "--data-dir", d, "--campaign", "1", "--link", "1", DEST).stdout.strip()
    assert "key          1 (verifying)" in clickedge("decode", "--data-dir", d, old).stdout
    assert "key          2 (active)" in clickedge("decode", "--data-dir", d, new).stdout

    refused = clickedge("keys", "--data-dir", d, "retire", "2")
    assert refused.returncode == 2 and "activate another key" in refused.stderr
    assert "key 1 is now retired" in clickedge("keys", "--data-dir", d, "retire", "1").stdout
    result = clickedge("decode", "--data-dir", d, old)
    assert result.returncode == 1 and "retired" in result.stdout
    listing = clickedge("keys", "--data-dir", d).stdout
    assert "    1  retired" in listing and "    2  active" in listing
    assert "secret" not in listing


def test_missing_keys_say_what_to_do(tmp_path: Path) -> None:
    result = clickedge("mint", "--data-dir", str(tmp_path), "--campaign", "1", "--link", "1", DEST)
    assert result.returncode == 2
    assert "clickedge keys create" in result.stderr


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["collector"], {"CLICKEDGE_DATABASE_URL": ""}, "CLICKEDGE_DATABASE_URL"),
        (["collector", "--collector-port", "99999"], {}, "--collector-port='99999' is not valid"),
        (["edge", "--batch-size", "0"], {}, "--batch-size='0' is not valid"),
        (["edge", "--trusted-proxies", "10.0.0.0/8,nonsense"], {}, "--trusted-proxies"),
        (["edge"], {"CLICKEDGE_BATCH_LINGER": "soon"}, "CLICKEDGE_BATCH_LINGER='soon' is not valid"),
        (["edge", "--fsync", "sometimes"], {}, "--fsync='sometimes' is not valid"),
        (
            ["collector"],
            {"CLICKEDGE_DATABASE_URL": "postgresql://u:pw@h:abc/db"},
            "port that is not a number",
        ),
        (["collector"], {"CLICKEDGE_DATABASE_URL": "mysql://h/db"}, "must start with postgresql://"),
    ],
)
def test_bad_configuration_stops_start_up_with_a_message(
    data_dir: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    result = clickedge(*args, env={"CLICKEDGE_DATA_DIR": str(data_dir), "CLICKEDGE_INGEST_SECRET": "x" * 20, **env})
    assert result.returncode == 2
    assert "configuration error" in result.stderr and message in result.stderr


def test_secrets_are_redacted_in_errors(database_url: str) -> None:
    # Errors that quote the DSN, from the session's real PostgreSQL (which checks passwords) and from a port
    # nothing listens on, with passwords in the user info and in the query. The redacted DSN must be in each
    # message (so the DSN was quoted), no password in anything printed.
    server = urlsplit(database_url)
    user, password, where = server.username, server.password, f"{server.hostname}:{server.port}"
    assert password  # the embedded PostgreSQL's, which this test must not print either
    wrong = f"postgresql://{user}:pw-s3cret@{where}/clickedge?sslpassword=ssl-s3cret"
    missing = f"postgresql://{user}:{password}@{where}/clickedge_no_such_db"
    closed = f"postgresql://u:pw-s3cret@127.0.0.1:{free_port()}/db?password=q-s3cret"
    config_error = "configuration error: the database at postgresql://"
    cases = [
        (
            ["migrate"],
            2,
            wrong,
            f"clickedge migrate: {config_error}{user}:***@{where}/clickedge?sslpassword=*** refused the "
            f'credentials: password authentication failed for user "{user}"',
        ),
        (
            ["webhooks"],
            2,
            missing,
            f"clickedge webhooks: {config_error}{user}:***@{where}/clickedge_no_such_db does not exist: "
            'database "clickedge_no_such_db" does not exist',
        ),
        (
            ["apikeys"],
            1,
            closed,
            f"clickedge apikeys: cannot connect to the database at postgresql://u:***@127.0.0.1:"
            f"{urlsplit(closed).port}/db?password=***: ",
        ),
        (["actions", "--campaign", "1", "--link", "1"], 2, missing, f"clickedge actions: {config_error}{user}:***@"),
    ]
    for args, code, dsn, message in cases:
        result = clickedge(*args, env={"CLICKEDGE_DATABASE_URL": dsn})
        assert result.returncode == code, result.stderr
        assert _one_line(result).startswith(message), (message, result.stderr)
        for secret in ("pw-s3cret", "ssl-s3cret", "q-s3cret", password):
            assert secret not in result.stderr + result.stdout, (args, result.stderr)


def test_migrate_is_idempotent(database_url: str) -> None:
    for _ in range(2):
        result = clickedge("migrate", env={"CLICKEDGE_DATABASE_URL": database_url})
        assert result.returncode == 0, result.stderr
        assert "schema at version" in result.stdout


def test_migrate_without_a_database_says_what_to_set() -> None:
    result = clickedge("migrate", env={"CLICKEDGE_DATABASE_URL": ""})
    assert result.returncode == 2
    assert "CLICKEDGE_DATABASE_URL" in result.stderr


NEWSLETTER = '<p><a href="https://shop.example.com/?a=1&amp;b=2">Shop</a> <a href="mailto:x@example.com">m</a></p>\n'


def test_rewrite_registers_links_and_the_recipient(
    data_dir: Path, database_url: str, tmp_path: Path, campaign_id: int
) -> None:
    campaign = campaign_id
    text = tmp_path / "message.txt"
    text.write_text("Shop at https://shop.example.com/?a=1&b=2 today.\n")
    env = {"CLICKEDGE_DATABASE_URL": database_url}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "clickedge",
            "rewrite",
            "--campaign",
            str(campaign),
            "--contact",
            "42",
            "--data-dir",
            str(data_dir),
            "--text",
            str(text),
        ],
        input=NEWSLETTER,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith('<p><a href="http://127.0.0.1:8080/c/')
    assert out.endswith('">Shop</a> <a href="mailto:x@example.com">m</a></p>\n')
    assert "left alone: mailto:x@example.com" in result.stderr
    token = out.split("/c/", 1)[1].split('"', 1)[0]
    decoded = clickedge("decode", "--data-dir", str(data_dir), token)
    assert "https://shop.example.com/?a=1&b=2" in decoded.stdout and "contact      42" in decoded.stdout
    assert "/c/" in (tmp_path / "message.txt.tracked").read_text()

    async def registered() -> tuple[list[tuple[int, str]], int]:
        conn = await asyncpg.connect(database_url)
        try:
            links = await conn.fetch(
                "SELECT link_id, destination FROM links WHERE campaign_id = $1 ORDER BY 1", campaign
            )
            recipients = await conn.fetchval("SELECT recipients FROM campaigns WHERE campaign_id = $1", campaign)
            return [tuple(r) for r in links], recipients
        finally:
            await conn.close()

    assert asyncio.run(registered()) == (
        [(1, "https://shop.example.com/?a=1&b=2"), (2, "https://shop.example.com/?a=1&b=2")],
        1,
    )

    actions = '[{"type": "add_tag", "tag": "shopper"}]'
    set_result = clickedge("actions", "--campaign", str(campaign), "--link", "1", "--set", actions, env=env)
    assert set_result.returncode == 0, set_result.stderr
    assert '"tag": "shopper"' in set_result.stdout
    assert "cli:" in set_result.stderr  # the audit line names who changed it
    bad = clickedge("actions", "--campaign", str(campaign), "--link", "1", "--set", '[{"type": "nope"}]', env=env)
    assert bad.returncode == 2 and "actions[0].type must be one of" in bad.stderr


def test_actions_past_their_limits_are_refused_by_the_command_line(database_url: str, campaign_id: int) -> None:
    campaign = campaign_id
    env = {"CLICKEDGE_DATABASE_URL": database_url}

    async def register() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await campaigns.upsert_campaign(conn, campaign, name="Limits")
            await campaigns.register_links(conn, campaign, [LinkSlot(1, "https://shop.example.com/", "A", "html")])
        finally:
            await conn.close()

    asyncio.run(register())
    link = ["actions", "--campaign", str(campaign), "--link", "1"]
    stored = [{"type": "add_tag", "tag": "kept"}]
    assert clickedge(*link, "--set", orjson.dumps(stored).decode(), env=env).returncode == 0
    # One case of each limit (a process start each; the API test takes every case).
    limits = ("21 actions", "a number after an object", "a 201-character tag", "a 2001-character URL", "a repeat")
    for case, body, message in (c for c in REFUSED_ACTIONS if c[0] in limits):
        result = clickedge(*link, "--set", orjson.dumps(body).decode(), env=env)
        assert result.returncode == 2, (case, result.stderr)
        assert _one_line(result) == f"clickedge actions: {message}", case
    shown = clickedge(*link, env=env)
    assert shown.returncode == 0 and orjson.loads(shown.stdout) == stored  # nothing of a refused list is kept


def test_apikeys_from_the_command_line(database_url: str) -> None:
    env = {"CLICKEDGE_DATABASE_URL": database_url}
    created = clickedge("apikeys", "create", "--name", "dashboards", "--scope", "read", env=env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("ck_") and "shown this once" in created.stderr
    key_id = key.split("_")[1]
    listing = clickedge("apikeys", env=env).stdout
    assert key_id in listing and "dashboards" in listing and key.split("_", 2)[2] not in listing
    assert clickedge("apikeys", "revoke", key_id, env=env).returncode == 0
    assert "revoked" in clickedge("apikeys", env=env).stdout.split(key_id, 1)[1].splitlines()[0]


# -- start-up and one-shot commands: one line saying what to fix, never a traceback (issue 11, items 7-9) --------


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    return lines[-1]


@pytest.mark.parametrize("command", ["migrate", "up"])
def test_an_unreachable_database_is_one_line_and_exit_1(command: str, tmp_path: Path) -> None:
    dsn = f"postgresql://u:pw-s3cret@127.0.0.1:{free_port()}/db"
    args = ["--data-dir", str(tmp_path / "d"), "--edge-port", "0", "--collector-port", "0"] if command == "up" else []
    result = clickedge(command, "--database-url", dsn, *args)
    assert result.returncode == 1
    line = _one_line(result)
    assert "cannot connect to the database at postgresql://u:***@127.0.0.1:" in line
    assert "pw-s3cret" not in result.stderr


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        ("postgresql://u:pw-s3cret@[::1/db", "not a valid URL"),
        ("postgresql://u:pw-s3cret@127.0.0.1:5432/db?sslmode=sometimes", "sslmode"),
        ("postgresql://u:pw-s3cret@127.0.0.1:99999/db", "port that is not a number"),
    ],
)
@pytest.mark.parametrize("command", ["migrate", "up"])
def test_a_malformed_database_url_is_one_line_and_exit_2(command: str, dsn: str, message: str, tmp_path: Path) -> None:
    args = ["--data-dir", str(tmp_path / "d"), "--edge-port", "0", "--collector-port", "0"] if command == "up" else []
    result = clickedge(command, "--database-url", dsn, *args)
    assert result.returncode == 2, result.stderr
    assert message in _one_line(result) and "pw-s3cret" not in result.stderr


def test_up_with_a_data_dir_that_is_a_file_says_so(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    for data_dir, message in ((tmp_path / "afile", "is a file, not a directory"), (tmp_path / "afile" / "d", "")):
        result = clickedge("up", "--data-dir", str(data_dir), "--edge-port", "0", "--collector-port", "0")
        assert result.returncode == 2, result.stderr
        line = _one_line(result)
        assert str(data_dir) in line and message in line


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory nothing can be written to: a read-only tmpfs as root (root ignores permission bits),
    else permissions."""
    path = tmp_path / "ro"
    path.mkdir()
    if os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], check=True)
        try:
            yield path
        finally:
            subprocess.run(["umount", str(path)], check=True)
    else:
        path.chmod(0o500)
        try:
            yield path
        finally:
            path.chmod(0o700)


@pytest.mark.parametrize("command", [["up", "--edge-port", "0", "--collector-port", "0"], ["keys", "create"]])
def test_a_read_only_data_dir_is_one_line_and_exit_2(command: list[str], read_only_dir: Path) -> None:
    result = clickedge(*command, "--data-dir", str(read_only_dir))
    assert result.returncode == 2, result.stderr
    line = _one_line(result)
    assert f"cannot write {read_only_dir}/keys.json" in line and "must be writable" in line


def test_help_says_what_each_default_means() -> None:
    text = " ".join(clickedge("up", "--help").stdout.split())
    assert "default: none: an embedded PostgreSQL in DATA_DIR/pg" in text
    assert "default: http://127.0.0.1:EDGE_PORT" in text
    assert "(set)" not in text and "default ]" not in text and "default: ]" not in text
    text = " ".join(clickedge("collector", "--help").stdout.split())
    assert "CLICKEDGE_INGEST_SECRET; default: none (required)" in text


def test_an_unset_ingest_secret_is_named_as_unset(database_url: str) -> None:
    result = clickedge("collector", env={"CLICKEDGE_DATABASE_URL": database_url, "CLICKEDGE_INGEST_SECRET": ""})
    assert result.returncode == 2
    assert "no ingest secret: set CLICKEDGE_INGEST_SECRET" in _one_line(result)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["up", "--edge-port", "abc"], "--edge-port='abc' is not valid: a port is a whole number from 0 to 65535"),
        (["edge", "--workers", "two"], "--workers='two' is not valid: must be a whole number of at least 1"),
        (["edge", "--batch-linger", "soon"], "--batch-linger='soon' is not valid: must be a number greater than 0"),
        (["edge", "--edge-port", "8\u0660"], "a port is a whole number from 0 to 65535"),
        (["mint", "--campaign", "0_5", "--link", "1", DEST], "must be a whole number written with the digits 0-9"),
    ],
)
def test_numbers_that_are_not_say_what_is_meant(args: list[str], message: str, data_dir: Path) -> None:
    result = clickedge(*args, env={"CLICKEDGE_DATA_DIR": str(data_dir)})
    assert result.returncode == 2
    line = _one_line(result)
    assert message in line and "invalid literal" not in line and "could not convert" not in line


def test_mint_and_rewrite_use_the_public_url_up_recorded(data_dir: Path) -> None:
    (data_dir / "public.url").write_text("http://127.0.0.1:38080\n")  # as `up --edge-port 38080` leaves it
    env = {"CLICKEDGE_PUBLIC_URL": ""}
    minted = clickedge("mint", "--data-dir", str(data_dir), "--campaign", "1", "--link", "1", DEST, env=env)
    assert minted.returncode == 0 and minted.stdout.startswith("http://127.0.0.1:38080/c/"), minted.stderr
    given = clickedge(
        "mint", "--data-dir", str(data_dir), "--campaign", "1", "--link", "1", "--public-url", "https://t.example", DEST
    )
    assert given.stdout.startswith("https://t.example/c/")  # told otherwise, it does as told
    rewritten = subprocess.run(
        [sys.executable, "-m", "clickedge", "rewrite", "--data-dir", str(data_dir), "--campaign", "5"],
        input='<a href="https://shop.example.com/">x</a>',
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CLICKEDGE_PUBLIC_URL": "", "CLICKEDGE_DATABASE_URL": ""},
        check=False,
    )
    assert rewritten.returncode == 0, rewritten.stderr
    assert 'href="http://127.0.0.1:38080/c/' in rewritten.stdout


def test_mint_unsubscribe_prints_a_one_click_url_that_only_unsubscribes(data_dir: Path) -> None:
    minted = clickedge("mint", "--data-dir", str(data_dir), "--unsubscribe", "--campaign", "7", "--contact", "42")
    assert minted.returncode == 0, minted.stderr
    url = minted.stdout.strip()
    assert url.startswith("http://127.0.0.1:8080/u/")
    opened = keys.load(data_dir / "keys.json").codec().decode_unsubscribe(url.rsplit("/", 1)[1])
    assert (opened.campaign_id, opened.contact_id) == (7, 42)
    for args, message in (
        (("--unsubscribe", "--campaign", "7"), "--unsubscribe needs --contact"),
        (("--unsubscribe", "--campaign", "7", "--contact", "42", "--link", "1"), "--unsubscribe takes no destination"),
        (("--unsubscribe", "--campaign", "7", "--contact", "42", DEST), "--unsubscribe takes no destination"),
        (("--campaign", "7", DEST), "a link needs a destination and --link"),
        (("--unsubscribe", "--campaign", "7", "--contact", "0"), "contact id must be an integer from 1"),
    ):
        refused = clickedge("mint", "--data-dir", str(data_dir), *args)
        assert refused.returncode == 2 and message in refused.stderr, (args, refused.stderr)
        assert refused.stdout == ""


def test_rewrite_writes_the_one_click_unsubscribe_headers(data_dir: Path, tmp_path: Path) -> None:
    headers = tmp_path / "headers.txt"
    env = {**os.environ, "CLICKEDGE_PUBLIC_URL": "https://t.example.com", "CLICKEDGE_DATABASE_URL": ""}
    command = [sys.executable, "-m", "clickedge", "rewrite", "--data-dir", str(data_dir), "--campaign", "5"]
    message = '<a href="https://shop.example.com/">x</a>'
    run = subprocess.run(
        [*command, "--contact", "42", "--headers", str(headers)],
        input=message,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    first, second = headers.read_text().splitlines()
    assert first.startswith("List-Unsubscribe: <https://t.example.com/u/") and first.endswith(">")
    assert second == "List-Unsubscribe-Post: List-Unsubscribe=One-Click"
    token = first.removeprefix("List-Unsubscribe: <https://t.example.com/u/").removesuffix(">")
    assert keys.load(data_dir / "keys.json").codec().decode_unsubscribe(token).contact_id == 42
    anonymous = subprocess.run(
        [*command, "--headers", str(headers)], input=message, capture_output=True, text=True, timeout=60, env=env
    )
    assert anonymous.returncode == 2 and "--headers needs --contact" in anonymous.stderr
