"""The classifier alone (collector/classify.py, collector/agents.py, collector/networks.py): pure, no database."""

from __future__ import annotations

import ipaddress
import os
import time
from pathlib import Path
from typing import Any

import pytest

from collector import agents
from collector.classify import DECIDING, NOTED, WEIGHING, Fetch, Policy, classify
from collector.networks import DEFAULT_FILE, NetworkFileError, Reloading, load, parse, prefix
from common import signals as sig

NOW = 1_764_000_000.0  # 2025-11-24
CHROME = f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/{agents.current_version('Chrome', NOW)}.0.0.0 Safari/537.36"
NAVIGATION = (
    sig.LAYOUT << sig.LAYOUT_SHIFT
    | sig.ACCEPT_HTML
    | sig.ACCEPT_LANGUAGE
    | sig.FETCH_SITE
    | sig.FETCH_MODE_NAVIGATE
    | sig.FETCH_DEST_DOCUMENT
)
BARE = sig.LAYOUT << sig.LAYOUT_SHIFT  # Accept: */* and nothing else


def fetch(key: str, at: float, *, link: int = 1, **kw: object) -> Fetch:
    values: dict[str, object] = {
        "key": key,
        "link_id": link,
        "at": NOW + at,
        "sent_at": int(NOW) - 86400,
        "method": "GET",
        "user_agent": CHROME,
        "signals": NAVIGATION,
        "network": b"\x64\x46\x01",
    }
    values.update(kw)
    return Fetch(**values)  # type: ignore[arg-type]


DEFAULT = Policy()


def verdicts(*fetches: Fetch, policy: Policy = DEFAULT) -> dict[object, tuple[str, tuple[str, ...]]]:
    return {k: (d.verdict, d.reasons) for k, d in classify(fetches, policy).items()}


def test_a_persons_navigation_a_day_after_the_send_is_human_with_no_reason() -> None:
    assert verdicts(fetch("a", 0)) == {"a": ("human", ())}


@pytest.mark.parametrize(
    ("changes", "verdict", "reason"),
    [
        ({"method": "HEAD"}, "scanner", "head"),
        ({"user_agent": ""}, "scanner", "no_user_agent"),
        ({"user_agent": "curl/8.5.0"}, "script", "script_agent"),
        ({"user_agent": "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)"}, "script", "known_bot"),
        ({"user_agent": "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"}, "preview", "preview_agent"),
        ({"user_agent": "Microsoft Office Existence Discovery"}, "preview", "office_preflight"),
        ({"signals": NAVIGATION | sig.PREFETCH}, "preview", "prefetch"),
        ({"decoy": True}, "scanner", "decoy"),
    ],
)
def test_a_deciding_signal_alone_names_the_verdict(changes: dict[str, Any], verdict: str, reason: str) -> None:
    got = verdicts(fetch("a", 0, **changes))["a"]
    assert got[0] == verdict and got[1][0] == reason


def test_the_agent_or_request_wins_over_the_traffics_shape() -> None:
    # A preview bot inside a burst is a preview: what it is beats how it came.
    burst = [fetch(str(n), n * 0.1, link=n) for n in range(1, 4)]
    slack = fetch("p", 0.15, link=4, user_agent="Slackbot-LinkExpanding 1.0")
    got = verdicts(*burst, slack)
    assert got["p"][0] == "preview" and "burst" in got["p"][1]


def test_mail_clients_crawlerdetect_lists_are_noted_not_judged() -> None:
    outlook = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17928; Pro)"
    apple_mail = "Mail/3774.600.62 CFNetwork/1410.0.3 Darwin/22.6.0"
    for agent in (outlook, apple_mail, "Outlook-iOS/723.4027091.prod.iphone (4.36.0)"):
        assert agents._crawlerdetect(agent) or "Outlook-iOS" in agent  # the library calls them crawlers
        assert verdicts(fetch("a", 0, user_agent=agent)) == {"a": ("human", ("mail_client",))}


def test_one_weighing_signal_is_not_enough_and_two_are() -> None:
    fast = {"sent_at": int(NOW) - 40}
    assert verdicts(fetch("a", 0, **fast)) == {"a": ("human", ("fast",))}
    assert verdicts(fetch("a", 0, scanner_network=True)) == {"a": ("human", ("scanner_network",))}
    assert verdicts(fetch("a", 0, signals=BARE)) == {"a": ("human", ("not_a_navigation",))}
    assert verdicts(fetch("a", 0, scanner_network=True, **fast)) == {"a": ("scanner", ("fast", "scanner_network"))}


def test_a_browser_many_versions_old_weighs_and_a_current_one_does_not() -> None:
    old = CHROME.replace(
        f"Chrome/{agents.current_version('Chrome', NOW)}", f"Chrome/{agents.current_version('Chrome', NOW) - 9}"
    )
    assert verdicts(fetch("a", 0, user_agent=old))["a"] == ("human", ("stale_browser",))
    assert verdicts(fetch("a", 0, user_agent=old, sent_at=int(NOW) - 40))["a"][0] == "scanner"
    assert not agents.stale(CHROME, NOW) and not agents.stale("Mozilla/5.0 Safari/605.1.15", NOW)


def test_a_user_activation_header_is_noted_and_does_not_outweigh_a_sandbox() -> None:
    activated = NAVIGATION | sig.FETCH_USER
    got = verdicts(fetch("a", 0, signals=activated, scanner_network=True, sent_at=int(NOW) - 30))["a"]
    assert got == ("scanner", ("fast", "scanner_network", "user_activation"))


def test_three_links_in_the_burst_window_decide_and_two_only_weigh() -> None:
    three = verdicts(*(fetch(str(n), n * 0.4, link=n) for n in range(1, 4)))
    assert {v for v, _ in three.values()} == {"scanner"} and all("burst" in r for _, r in three.values())
    two = verdicts(fetch("a", 0, link=1), fetch("b", 1.5, link=2))
    assert two == {"a": ("human", ("two_links",)), "b": ("human", ("two_links",))}
    apart = verdicts(*(fetch(str(n), n * 2.5, link=n) for n in range(1, 4)))
    assert {v for v, _ in apart.values()} == {"human"}


def test_a_scanners_burst_does_not_taint_the_persons_click_later() -> None:
    burst = [fetch(str(n), n * 0.1, link=n, scanner_network=True, network=b"\x28\x5c\x01") for n in range(1, 5)]
    person = fetch("person", 3 * 3600, link=2)
    got = verdicts(*burst, person)
    assert got["person"] == ("human", ())
    assert all(got[str(n)][0] == "scanner" for n in range(1, 5))


def test_a_double_click_weighs_and_stays_a_persons() -> None:
    assert verdicts(fetch("a", 0), fetch("b", 0.4)) == {"a": ("human", ("repeat",)), "b": ("human", ("repeat",))}


def test_an_echo_from_another_network_is_the_machine_whichever_came_first() -> None:
    person = fetch("person", 0, network=b"\x64\x46\x01")
    echo = fetch("echo", 12, network=b"\x28\x5c\x11", scanner_network=True)
    assert verdicts(person, echo) == {"person": ("human", ()), "echo": ("scanner", ("echo", "scanner_network"))}
    check_first = fetch("check", -0.3, network=b"\x28\x5c\x11", scanner_network=True)
    assert verdicts(check_first, person)["check"][0] == "scanner"
    assert verdicts(check_first, person)["person"] == ("human", ())
    # Without a difference between them, the later one is the echo; past the window, neither is.
    assert verdicts(person, fetch("later", 12, network=b"\x01\x02\x03"))["later"][1] == ("echo",)
    assert verdicts(person, fetch("later", 31, network=b"\x01\x02\x03"))["later"] == ("human", ())


def test_an_allowed_network_is_never_a_scanner_network_nor_an_echo() -> None:
    person = fetch("person", 0)
    office = fetch("office", 12, network=b"\x0a\x00\x00", allowed_network=True, scanner_network=True)
    assert verdicts(person, office)["office"] == ("human", ("allowed_network",))


def test_a_decoy_fetch_marks_its_networks_clicks_within_the_window() -> None:
    scanner = b"\x14\x2a\x07"
    decoy = fetch("decoy", 0, link=99, decoy=True, network=scanner)
    near = fetch("near", 40, link=1, network=scanner)
    elsewhere = fetch("elsewhere", 40, link=2, network=b"\x64\x46\x09")
    moment = fetch("moment", 1, link=3, network=b"\x64\x46\x0a")
    late = fetch("late", 61, link=4, network=scanner)
    got = verdicts(decoy, near, elsewhere, moment, late)
    assert got["decoy"][1][0] == "decoy" and got["near"][1][0] == "decoy_burst" and got["moment"][0] == "scanner"
    assert got["elsewhere"][0] == "human" and got["late"][0] == "human"


def test_every_code_the_classifier_writes_is_documented() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "click-truth.md").read_text()
    for code in (*DECIDING, *WEIGHING, *NOTED):
        assert f"`{code}`" in doc, code


def test_the_default_scanner_networks_are_dated_and_found() -> None:
    networks = load(DEFAULT_FILE)
    assert networks.updated and len(networks) > 5
    assert networks.label(ipaddress.ip_address("40.92.17.3").packed) == "microsoft-eop"
    assert networks.label(ipaddress.ip_address("2a01:111:f400::1").packed) == "microsoft-eop"
    assert networks.label(ipaddress.ip_address("100.70.1.2").packed) is None
    assert networks.label(None) is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [("10.0.0.0/33 x", "line 1: '10.0.0.0/33' is not an IP network"), ("192.0.2.0/24 " + "x" * 65, "at most 64")],
)
def test_a_bad_network_line_names_the_line_and_the_problem(text: str, problem: str) -> None:
    with pytest.raises(NetworkFileError, match=problem):
        parse(text, "f.txt")


def test_the_network_file_is_read_again_when_it_changes_and_a_broken_one_keeps_the_last(tmp_path: Path) -> None:
    path = tmp_path / "scanners.txt"
    path.write_text("# updated: 2026-01-01\n192.0.2.0/24 one\n")
    reloading = Reloading(path)
    assert reloading.current().updated == "2026-01-01" and len(reloading.current()) == 1
    path.write_text("# updated: 2026-02-01\n192.0.2.0/24 one\n198.51.100.0/24 two\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000_000))  # a new mtime even on a coarse clock
    assert len(reloading.current()) == 2
    path.write_text("not a network\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2_000_000_000))
    assert len(reloading.current()) == 2  # kept
    path.unlink()
    assert len(reloading.current()) == 2


def test_a_clicks_network_is_its_24_or_48() -> None:
    assert prefix(ipaddress.ip_address("192.0.2.77").packed) == bytes([192, 0, 2])
    assert prefix(ipaddress.ip_address("2001:db8:1:2::9").packed) == bytes.fromhex("20010db80001")
    assert prefix(None) is None
