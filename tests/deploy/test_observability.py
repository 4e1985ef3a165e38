"""deploy/prometheus and deploy/grafana: valid for promtool, alerts proven by promtool's unit tests, a
consistent dashboard, and no metric named anywhere that the services do not export.

The last part runs a real collector and a real edge with two workers (each on a metrics port of its own),
sends clicks through it, and compares every clickedge_* and process_* name (and every label value
matched) in the alert rules, their unit tests and the dashboard with what those processes serve, and
that the state gauges the alerts rest on (ready, spool cap, database up) read healthy there. HAProxy's
names are checked against a real HAProxy's exporter the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from clickedge.pgembed import free_port
from tests.conftest import eventually, require
from tests.faults.harness import CollectorProc, EdgeProc, kill_leftovers, metric, tokens, wait_http

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
PROMETHEUS_YML = PROMETHEUS / "prometheus.yml"
ALERTS = PROMETHEUS / "alerts.yml"
ALERT_TESTS = PROMETHEUS / "alerts.test.yml"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "clickedge.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "clickedge.yml"
COMPOSE = ROOT / "deploy" / "docker" / "compose.yaml"
HAPROXY_CFG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"

SEVERITIES = {"critical", "warning"}
# Grafana's own variables, replaced by a value of the right kind when an expression is checked by promtool.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
OURS = re.compile(r"\b(?:clickedge|process)_\w+")
SELECTOR = re.compile(r"\b((?:clickedge|process|haproxy)_\w+)\s*\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
# Labels Prometheus attaches to every scraped series; the services themselves do not export them.
TARGET_LABELS = frozenset({"job", "instance"})
# The unit tests may also make up HAProxy proxy names (another backend than the edges').
TEST_SERIES_LABELS = TARGET_LABELS | {"proxy"}

Doc = dict[str, Any]


# --- reading the files ----------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[Doc]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def dashboard() -> Doc:
    doc: Doc = json.loads(DASHBOARD.read_text())
    return doc


def all_panels(panels: list[Doc]) -> Iterator[Doc]:
    """Every panel, including those inside collapsed rows."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def dashboard_exprs() -> list[tuple[str, str]]:
    return [
        (f"dashboard panel {panel['id']} ({panel['title']}) {target['refId']}", target["expr"])
        for panel in all_panels(dashboard()["panels"])
        for target in panel.get("targets", [])
    ]


def alert_exprs() -> list[tuple[str, str]]:
    return [(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]


def alert_test_series() -> list[tuple[str, str]]:
    return [
        (f"alerts.test.yml: {group['name']}", series["series"])
        for group in load_yaml(ALERT_TESTS)["tests"]
        for series in group["input_series"]
    ]


def scrape_jobs() -> dict[str, list[str]]:
    """job name -> static targets of the live (uncommented) scrape configs."""
    config = load_yaml(PROMETHEUS_YML)
    return {
        job["job_name"]: [target for static in job.get("static_configs", []) for target in static["targets"]]
        for job in config["scrape_configs"]
    }


def datasource_uid() -> str:
    (source,) = load_yaml(DATASOURCES)["datasources"]
    assert source["type"] == "prometheus"
    uid: str = source["uid"]
    return uid


def promtool() -> str:
    found = shutil.which("promtool")
    require(found is not None, "promtool (Debian package prometheus)")
    assert found is not None
    return found


def run_promtool(*args: str) -> str:
    done = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=60, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def program(name: str) -> str | None:
    """A system program; Debian puts daemons in /usr/sbin, which a non-root PATH may lack."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")


# --- Prometheus -----------------------------------------------------------------------------------------


def test_prometheus_config_is_valid_and_loads_the_alerts() -> None:
    output = run_promtool("check", "config", str(PROMETHEUS_YML))
    # promtool resolves rule_files next to the config file, as Prometheus does: the alerts were read.
    found = re.search(r"Checking (\S*alerts\.yml)\s+SUCCESS: (\d+) rules found", output)
    assert found, output
    assert Path(found.group(1)).resolve() == ALERTS.resolve()
    assert int(found.group(2)) == len(alert_rules())


def test_prometheus_config_examples_are_valid(tmp_path: Path) -> None:
    """The commented examples (hosts, file_sd, Kubernetes) work once uncommented."""
    text = PROMETHEUS_YML.read_text()
    examples = re.findall(r"^ *# >>> example:.*?\n(.*?)^ *# <<<", text, re.S | re.M)
    assert len(examples) == 3
    for index, example in enumerate(examples):
        code = example[example.index("  # - job_name:") :]
        body = "\n".join(re.sub(r"^(\s*)# ", r"\1", line) for line in code.splitlines())
        (job,) = yaml.safe_load(body)
        if "kubernetes_sd_configs" in job:
            # Debian builds Prometheus without Kubernetes discovery, so its promtool cannot read this one;
            # check what it must produce instead: the jobs the alerts and the dashboard select on.
            replacements = [r for r in job["relabel_configs"] if r.get("target_label") == "job"]
            assert [r["replacement"] for r in replacements] == ["clickedge-$1"]
            continue
        assert job["job_name"] == "clickedge-edge"
        config = tmp_path / f"example-{index}.yml"
        config.write_text("global:\n  scrape_interval: 15s\nscrape_configs:\n" + body + "\n")
        run_promtool("check", "config", str(config))


def test_alert_rules_are_valid_and_pass_their_unit_tests() -> None:
    run_promtool("check", "rules", str(ALERTS))
    output = run_promtool("test", "rules", str(ALERT_TESTS))
    assert "SUCCESS" in output


def test_every_alert_has_severity_runbook_and_a_firing_and_a_silent_test() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "duplicate alert names"
    for rule in rules:
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook"} <= annotations.keys(), rule["alert"]
        for part in ("Means:", "Check:", "Fix:"):
            assert part in annotations["runbook"], f"{rule['alert']}: runbook lacks {part!r}"
    firing: set[str] = set()
    silent: set[str] = set()
    for group in load_yaml(ALERT_TESTS)["tests"]:
        for case in group.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    assert not set(names) - firing, f"alerts never shown to fire: {sorted(set(names) - firing)}"
    assert not set(names) - silent, f"alerts never shown to stay silent: {sorted(set(names) - silent)}"
    assert (firing | silent) <= set(names), f"tests of alerts that do not exist: {(firing | silent) - set(names)}"


def test_alerts_and_dashboard_select_jobs_prometheus_scrapes() -> None:
    jobs = scrape_jobs()
    assert {"clickedge-edge", "clickedge-collector", "haproxy"} <= jobs.keys()
    for where, expr in alert_exprs() + dashboard_exprs():
        for job in re.findall(r'\bjob="([^"]+)"', expr):
            assert job in jobs, f"{where} selects job {job!r}, which prometheus.yml does not scrape"


def test_haproxy_target_is_haproxys_exporter_port() -> None:
    """prometheus.yml scrapes HAProxy where deploy/haproxy/haproxy.cfg serves its Prometheus exporter."""
    sections = re.split(r"^(?=\S)", HAPROXY_CFG.read_text(), flags=re.M)
    (exporter,) = [s for s in sections if s.startswith("frontend") and "prometheus-exporter" in s]
    ports = {int(port) for port in re.findall(r"^\s*bind\s+\S*:(\d+)", exporter, re.M)}
    targets = scrape_jobs()["haproxy"]
    assert targets
    for target in targets:
        assert int(target.rsplit(":", 1)[1]) in ports, f"{target}: haproxy.cfg serves its exporter on {ports}"


# --- Grafana --------------------------------------------------------------------------------------------


def test_dashboard_is_consistent() -> None:
    doc = dashboard()
    uid = datasource_uid()
    source = {"type": "prometheus", "uid": uid}
    assert doc["uid"] and doc["title"] and doc["schemaVersion"] >= 36
    assert not doc["templating"]["list"], "a variable would need its own checks below"
    panels = list(all_panels(doc["panels"]))
    ids = [panel["id"] for panel in panels]
    assert all(isinstance(i, int) for i in ids)
    assert len(ids) == len(set(ids)), f"panel ids repeat: {sorted(i for i in ids if ids.count(i) > 1)}"
    cells: dict[tuple[int, int], int] = {}
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, f"panel {panel['id']} is wider than the grid"
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"panels {cells[x, y]} and {panel['id']} overlap"
                cells[x, y] = panel["id"]
        if panel["type"] == "row":
            continue
        assert panel.get("title"), f"panel {panel['id']} has no title"
        assert panel["datasource"] == source, f"panel {panel['id']}: datasource {panel['datasource']}"
        targets = panel["targets"]
        assert targets, f"panel {panel['id']} has no queries"
        assert len({t["refId"] for t in targets}) == len(targets), f"panel {panel['id']}: refIds repeat"
        for target in targets:
            assert isinstance(target.get("expr"), str) and target["expr"].strip(), f"panel {panel['id']}: no expr"
            assert target["datasource"] == source, f"panel {panel['id']} {target['refId']}: datasource"
    # Nothing else in the dashboard names a datasource (an annotation, a library panel) by another uid.
    uids = set(re.findall(r'"uid":\s*"([^"]*)"', DASHBOARD.read_text())) - {doc["uid"]}
    assert uids == {uid}


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    rules = []
    for index, (where, expr) in enumerate(dashboard_exprs()):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"{where}: unknown variable in {expr}"
        rules.append({"record": f"dashboard:query_{index}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run_promtool("check", "rules", str(path))


def test_grafana_provisioning_matches_compose() -> None:
    """The provisioning files point where deploy/docker/compose.yaml mounts things."""
    compose = load_yaml(COMPOSE)["services"]
    grafana_mounts = dict(volume.split(":")[:2] for volume in compose["grafana"]["volumes"])
    (provider,) = load_yaml(DASHBOARD_PROVIDERS)["providers"]
    assert grafana_mounts["../grafana/dashboards"] == provider["options"]["path"]
    assert grafana_mounts["../grafana/provisioning"] == "/etc/grafana/provisioning"
    (source,) = load_yaml(DATASOURCES)["datasources"]
    url = re.fullmatch(r"http://([^:/]+):(\d+)/?", source["url"])
    assert url, source["url"]
    assert url.group(1) in compose and url.group(2) == "9090"
    prometheus_mounts = dict(volume.split(":")[:2] for volume in compose["prometheus"]["volumes"])
    config_in = Path(prometheus_mounts["../prometheus/prometheus.yml"]).parent
    assert Path(prometheus_mounts["../prometheus/alerts.yml"]).parent == config_in  # rule_files: [alerts.yml]


# --- every name, against live processes -----------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    where: str
    name: str
    matchers: tuple[tuple[str, str, str], ...]
    free_labels: frozenset[str]  # labels whose values are not the services' to export


def references(prefix: re.Pattern[str]) -> list[Reference]:
    """Every metric name in the alert rules, their unit tests' series and the dashboard, with the label
    matchers written next to it."""
    found = []
    for sources, free in (
        (alert_exprs() + dashboard_exprs(), TARGET_LABELS),
        (alert_test_series(), TEST_SERIES_LABELS),
    ):
        for where, expr in sources:
            selectors = {m.start(1): m for m in SELECTOR.finditer(expr)}
            for name in prefix.finditer(expr):
                selector = selectors.get(name.start())
                matchers = tuple(MATCHER.findall(selector.group(2))) if selector else ()
                found.append(Reference(where, name.group(0), matchers, free))
    return found


Scrape = dict[str, list[dict[str, str]]]  # sample name -> the label sets it has


def parse(text: str) -> Scrape:
    samples: Scrape = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample.labels)
    return samples


def merge(scrapes: Iterable[Scrape]) -> Scrape:
    merged: Scrape = {}
    for samples in scrapes:
        for name, label_sets in samples.items():
            merged.setdefault(name, []).extend(label_sets)
    return merged


def missing(reference: Reference, scrapes: list[Scrape]) -> str | None:
    """What of ``reference`` the scrapes lack (None: nothing). The name must be in every one of them
    (every edge worker); a label value in any (worker="1" is in worker 1's only)."""
    for samples in scrapes:
        if reference.name not in samples:
            return f"{reference.where}: {reference.name} is not exported"
    label_sets = merge(scrapes)[reference.name]
    for label, op, value in reference.matchers:
        if label in reference.free_labels:
            continue
        have = {labels[label] for labels in label_sets if label in labels}
        if not have:
            return f"{reference.where}: {reference.name} has no label {label!r}"
        if op == "=" and value not in have:
            return f"{reference.where}: {reference.name}{{{label}={value!r}}} is not exported (have {sorted(have)})"
        if op == "=~" and re.fullmatch(r"[\w.+-]+(\|[\w.+-]+)*", value):
            for alternative in value.split("|"):
                if alternative not in have:
                    return f"{reference.where}: {reference.name}{{{label}={alternative!r}}} is not exported"
    return None


def consecutive_free_ports(count: int, avoid: int) -> int:
    """A base port with ``count`` free ports from it (the workers' metrics ports)."""
    for _ in range(100):
        base = free_port()
        if base + count > 65535 or avoid in range(base, base + count):
            continue
        with contextlib.ExitStack() as sockets:
            try:
                for offset in range(1, count):
                    sockets.enter_context(socket.socket()).bind(("127.0.0.1", base + offset))
            except OSError:
                continue
        return base
    raise AssertionError("no run of free ports found")


async def scrape(http: aiohttp.ClientSession, url: str) -> Scrape:
    return parse(await scrape_text(http, url))


async def scrape_text(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url) as resp:
        assert resp.status == 200, f"{url}: {resp.status}"
        return await resp.text()


def values(text: str, name: str) -> list[float]:
    return [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


@pytest.fixture
async def no_leftover_processes() -> AsyncIterator[None]:
    yield
    await kill_leftovers()


async def test_every_metric_named_exists_on_a_live_edge_and_collector(
    no_leftover_processes: None, database_url: str, data_dir: Path, campaign_id: int
) -> None:
    collector = CollectorProc(database_url)
    await collector.start()
    edge_port = free_port()
    metrics_base = consecutive_free_ports(2, avoid=edge_port)
    edge = EdgeProc(data_dir, collector.port, "--workers", "2", "--metrics-port", str(metrics_base), port=edge_port)
    await edge.start()
    worker_urls = [f"http://127.0.0.1:{metrics_base + i}" for i in range(2)]
    await wait_http(f"{collector.url}/readyz")
    await wait_http(f"{edge.url}/readyz")
    for url in worker_urls:
        await wait_http(f"{url}/healthz")

    clicks = tokens(data_dir, campaign_id, 6)
    # A connection per request, so the kernel spreads them over both workers (SO_REUSEPORT).
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as http:
        for _, token in clicks:
            async with http.get(f"{edge.url}/c/{token}", allow_redirects=False) as resp:
                assert resp.status == 302
        async with http.get(f"{edge.url}/c/{'A' * 60}", allow_redirects=False) as resp:
            assert resp.status != 302

        async def ingested() -> bool:
            # Committed, so the ingest lag and database histograms have observations too.
            return await metric(collector.url, "clickedge_collector_clicks_received_total") >= len(clicks)

        await eventually(ingested, timeout=30)
        worker_texts = [await scrape_text(http, f"{url}/metrics") for url in worker_urls]
        # The collector checks PostgreSQL (SELECT 1) while it answers this scrape.
        collector_text = await scrape_text(http, f"{collector.url}/metrics")
    workers = [parse(text) for text in worker_texts]
    collector_scrape = parse(collector_text)

    # The state gauges the alerts rest on say what a healthy system is: every worker ready with room in
    # its spool, the database reachable.
    for index, text in enumerate(worker_texts):
        assert values(text, "clickedge_edge_ready") == [1.0], f"worker {index}"
        (cap,) = values(text, "clickedge_edge_spool_max_bytes")
        (backlog,) = values(text, "clickedge_edge_spool_bytes")
        assert 0 <= backlog < cap, f"worker {index}: spool {backlog} of {cap} bytes"
    assert values(collector_text, "clickedge_collector_database_up") == [1.0]
    # The webhook outbox is read at each scrape too (NaN: it could not be read).
    for gauge in ("clickedge_collector_webhook_outbox_pending", "clickedge_collector_webhook_oldest_pending_seconds"):
        (value,) = values(collector_text, gauge)
        assert value >= 0, f"{gauge} = {value}"

    # Each worker's port serves that worker's series, every one labelled with it.
    for index, samples in enumerate(workers):
        workers_seen = {labels.get("worker") for label_sets in samples.values() for labels in label_sets}
        assert workers_seen == {str(index)}, f"metrics port {metrics_base + index}: worker labels {workers_seen}"

    refs = references(OURS)
    assert {ref.name for ref in refs} >= {
        "clickedge_edge_requests_total",
        "clickedge_edge_ready",
        "clickedge_edge_spool_max_bytes",
        "clickedge_collector_database_up",
        "clickedge_collector_ingest_lag_seconds_bucket",
        "clickedge_collector_webhook_oldest_pending_seconds",
        "clickedge_collector_webhook_deliveries_total",
        "process_resident_memory_bytes",
    }, "the name extraction found too little"
    problems = []
    for ref in refs:
        if ref.name.startswith("clickedge_edge_"):
            scrapes = workers
        elif ref.name.startswith("clickedge_collector_"):
            scrapes = [collector_scrape]
        else:  # process_*, clickedge_build_info: every process exports them
            scrapes = [*workers, collector_scrape]
        if problem := missing(ref, scrapes):
            problems.append(problem)
    assert not problems, "\n".join(sorted(set(problems)))


async def test_every_haproxy_metric_named_exists_in_haproxys_exporter(tmp_path: Path) -> None:
    haproxy = program("haproxy")
    require(haproxy is not None, "haproxy")
    assert haproxy is not None
    # The proxies the rules and panels select on (proxy="edges", proxy="clicks") are the shipped file's.
    shipped = HAPROXY_CFG.read_text()
    assert re.search(r"^backend edges$", shipped, re.M) and re.search(r"^frontend clicks$", shipped, re.M)
    port, clicks_port, edge_port = free_port(), free_port(), free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        "defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n"
        f"frontend clicks\n    bind 127.0.0.1:{clicks_port}\n    default_backend edges\n"
        f"backend edges\n    option httpchk GET /readyz\n    server edge1 127.0.0.1:{edge_port} check\n"
        f"frontend stats\n    bind 127.0.0.1:{port}\n"
        "    http-request use-service prometheus-exporter if { path /metrics }\n"
    )
    log = (tmp_path / "haproxy.log").open("w")
    proc = await asyncio.create_subprocess_exec(haproxy, "-db", "-f", str(config), stdout=log, stderr=log)
    try:
        await wait_http(f"http://127.0.0.1:{port}/metrics", timeout=15)
        async with aiohttp.ClientSession() as http:
            samples = await scrape(http, f"http://127.0.0.1:{port}/metrics")
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()
        log.close()
    refs = references(re.compile(r"\bhaproxy_\w+"))
    assert refs, "no haproxy_* names found"
    problems = [problem for ref in refs if (problem := missing(ref, [samples]))]
    assert not problems, "\n".join(sorted(set(problems)))
