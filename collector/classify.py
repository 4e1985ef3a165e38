"""Who clicked: a verdict for each click, with the short codes of the signals that decided it. Pure.

A verdict is one of ``human``, ``scanner`` (a mail security gateway opening links to check them),
``preview`` (a client or app fetching a link to show it) or ``script``. ``classify`` takes all the clicks of
one contact in one campaign that lie near each other in time, and judges each click by its own signals and
by the clicks around it. docs/click-truth.md explains every code, with the public sources behind it.

Signals that decide a click on their own (its agent, its method, a prefetch, the decoy link, a burst, an
echo) make it a machine's. Weaker signals (a click within seconds of the send, a scanner's network, a
request no browser navigation sends, a browser many versions old, the same link fetched twice in a moment,
two links in a moment) only count together: two of them make a scanner. A network alone never decides:
people click through the same vendors' browser-isolation proxies.

Context only ever makes a click a machine's through clicks near it in time: a scanner's burst at delivery
does not touch the same contact's click hours later.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from collector import agents
from common import signals as sig

Verdict = Literal["human", "scanner", "preview", "script"]
VERDICTS: tuple[Verdict, ...] = ("human", "scanner", "preview", "script")
AUTOMATED: tuple[Verdict, ...] = ("scanner", "preview", "script")

# Reason codes, by what they do. Deciding: one is enough, and names the verdict.
DECIDING: dict[str, Verdict] = {
    "decoy": "scanner",  # the hidden decoy link was fetched
    "decoy_burst": "scanner",  # within moments of a fetch of the decoy link
    "burst": "scanner",  # several links of the message within a couple of seconds
    "echo": "scanner",  # the same link again, from another network, just before or after a person's click
    "head": "scanner",  # a HEAD request: a check, not a visit
    "no_user_agent": "scanner",  # no User-Agent at all (Safe Links probes send none)
    "prefetch": "preview",  # Sec-Purpose/Purpose: prefetch
    "office_preflight": "preview",  # Office asking whether the link exists before opening the browser
    "preview_agent": "preview",  # a chat or social app's link preview
    "script_agent": "script",  # an HTTP library, a command-line tool, a headless browser
    "known_bot": "script",  # crawlerdetect's list (without the mail clients it lists)
}
# Weighing: two make a scanner.
WEIGHING = ("fast", "scanner_network", "not_a_navigation", "stale_browser", "repeat", "two_links")
# Noted, deciding nothing: a mail client people click from, an operator's allow-listed network, and a
# browser's user-activation header (Sec-Fetch-User: ?1), which a headless browser driven by a sandbox may
# send as well, so it is no proof of a person.
NOTED = ("mail_client", "allowed_network", "user_activation")
WEIGHT_FOR_SCANNER = 2

AGENT_REASONS: dict[agents.Kind, str] = {
    "none": "no_user_agent",
    "office_preflight": "office_preflight",
    "preview": "preview_agent",
    "script": "script_agent",
    "known_bot": "known_bot",
    "mail_client": "mail_client",
}
# When several deciding codes apply, the verdict named by the agent or the request wins: it says more
# precisely what the client is than the traffic's shape does.
PRECEDENCE: tuple[Verdict, ...] = ("preview", "script", "scanner")


@dataclass(frozen=True, slots=True)
class Policy:
    """The classifier's windows, in seconds (the collector's CLICKEDGE_COLLECTOR_VERDICT_* settings)."""

    fast_click: float = 300.0  # a click this soon after the send is a weighing signal
    burst_window: float = 2.0  # clicks this close together are one burst
    burst_links: int = 3  # distinct links of a message in one burst that decide it (2 only weigh)
    echo_window: float = 30.0  # the same link from another network this soon is an echo
    decoy_window: float = 60.0  # clicks from the decoy fetch's network this close to it share its verdict


@dataclass(slots=True)  # not frozen: built for every click a pass settles, and frozen init costs twice
class Fetch:
    """One click, as the classifier sees it."""

    key: Hashable  # the caller's name for it (its event id)
    link_id: int
    at: float  # Unix seconds
    sent_at: int  # Unix seconds; 0 when the token carries no send time
    method: str
    user_agent: str
    signals: int | None  # common/signals.py's bits; None: not recorded (an older edge)
    network: bytes | None = None  # the client's /24 (IPv4) or /48 (IPv6); None: no address
    scanner_network: bool = False  # in the scanner network list (and not allow-listed)
    allowed_network: bool = False  # in the operator's allow-listed networks
    decoy: bool = False  # the campaign's decoy link


@dataclass(frozen=True, slots=True)  # frozen: a lone click's decision is shared by every click like it
class Decision:
    verdict: Verdict
    reasons: tuple[str, ...]


@dataclass(slots=True)
class _Judged:
    fetch: Fetch
    deciding: list[str] = field(default_factory=list)
    weighing: list[str] = field(default_factory=list)
    noted: list[str] = field(default_factory=list)

    @property
    def weight(self) -> int:
        return len(self.weighing)

    def decision(self) -> Decision:
        return _decision(self.deciding, self.weighing, self.noted)


def _decision(deciding: Sequence[str], weighing: Sequence[str], noted: Sequence[str]) -> Decision:
    if deciding:
        named = {DECIDING[code] for code in deciding}
        verdict = next(v for v in PRECEDENCE if v in named)
        return Decision(verdict, _unique([*deciding, *weighing, *noted]))
    reasons = _unique([*weighing, *noted])
    return Decision("scanner" if len(weighing) >= WEIGHT_FOR_SCANNER else "human", reasons)


def classify(fetches: Sequence[Fetch], policy: Policy = Policy()) -> dict[Hashable, Decision]:
    """A decision for each of ``fetches``: the clicks of one contact in one campaign (for an anonymous click,
    that click alone), in any order."""
    if len(fetches) == 1:  # the common case: nothing around it to weigh, and many clicks alike
        only = fetches[0]
        return {only.key: _alone(_features(only, policy))}
    judged = sorted((_own(f, policy) for f in fetches), key=lambda j: (j.fetch.at, str(j.fetch.key)))
    _decoys(judged, policy)
    _bursts(judged, policy)
    candidates = [j for j in judged if not j.deciding]
    _repeats(candidates, policy)
    _echoes(candidates, policy)
    return {j.fetch.key: j.decision() for j in judged}


# What a click's own request says, as the arguments of _own_codes: method, user agent, signals, decoy link,
# fast, stale browser, allowed network, scanner network.
_Features = tuple[str, str, int | None, bool, bool, bool, bool, bool]


def _features(fetch: Fetch, policy: Policy) -> _Features:
    return (
        fetch.method,
        fetch.user_agent,
        fetch.signals,
        fetch.decoy,
        fetch.sent_at > 0 and fetch.at - fetch.sent_at < policy.fast_click,
        agents.stale(fetch.user_agent, fetch.at),
        fetch.allowed_network,
        fetch.scanner_network,
    )


def _own(fetch: Fetch, policy: Policy) -> _Judged:
    deciding, weighing, noted = _own_codes(*_features(fetch, policy))
    return _Judged(fetch, list(deciding), list(weighing), list(noted))


@lru_cache(maxsize=8192)
def _alone(features: _Features) -> Decision:
    """The decision of a click with no other click near it: its own codes alone (cached: lone clicks are
    most clicks, and most are alike)."""
    return _decision(*_own_codes(*features))


@lru_cache(maxsize=8192)
def _own_codes(
    method: str,
    user_agent: str,
    bits: int | None,
    decoy: bool,
    fast: bool,
    stale: bool,
    allowed: bool,
    scanner: bool,
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """What a click's own request says: its (deciding, weighing, noted) codes."""
    deciding: list[str] = []
    weighing: list[str] = []
    noted: list[str] = []
    if method == "HEAD":
        deciding.append("head")
    reason = AGENT_REASONS.get(agents.kind(user_agent))
    if reason in DECIDING:
        deciding.append(reason)
    elif reason is not None:
        noted.append(reason)
    if decoy:
        deciding.append("decoy")
    if bits is not None and sig.layout(bits) == sig.LAYOUT:
        if bits & sig.PREFETCH:
            deciding.append("prefetch")
        if not bits & (sig.ACCEPT_HTML | sig.ACCEPT_LANGUAGE):
            weighing.append("not_a_navigation")
        if bits & sig.FETCH_USER and bits & sig.FETCH_MODE_NAVIGATE:
            noted.append("user_activation")
    if fast:
        weighing.append("fast")
    if stale:
        weighing.append("stale_browser")
    if allowed:
        noted.append("allowed_network")
    elif scanner:
        weighing.append("scanner_network")
    return tuple(deciding), tuple(weighing), tuple(noted)


def _decoys(judged: list[_Judged], policy: Policy) -> None:
    """A decoy fetch marks the clicks around it: from its network within the decoy window, from any network
    within the burst window (a scanner sweeping the message from several addresses)."""
    decoys = [j.fetch for j in judged if j.fetch.decoy]
    for j in judged:
        if j.fetch.decoy:
            continue
        for d in decoys:
            gap = abs(j.fetch.at - d.at)
            same = d.network is not None and j.fetch.network == d.network
            if gap <= policy.burst_window or (same and gap <= policy.decoy_window):
                j.deciding.append("decoy_burst")
                break


def _bursts(judged: list[_Judged], policy: Policy) -> None:
    """Distinct links within the burst window of each click (every click counts: a scanner's HEAD sweep and
    its GETs are one burst). ``judged`` is in time order."""
    start = 0
    for j in judged:
        while judged[start].fetch.at < j.fetch.at - policy.burst_window:
            start += 1
        links = set()
        for other in judged[start:]:
            if other.fetch.at > j.fetch.at + policy.burst_window:
                break
            links.add(other.fetch.link_id)
        if len(links) >= policy.burst_links:
            j.deciding.append("burst")
        elif len(links) == 2:
            j.weighing.append("two_links")


def _repeats(candidates: list[_Judged], policy: Policy) -> None:
    """The same link fetched twice within the burst window from one network by clicks nothing else decided:
    both weigh (from two networks it is an echo, below)."""
    for i, a in enumerate(candidates):
        for b in candidates[i + 1 :]:
            if b.fetch.at - a.fetch.at > policy.burst_window:
                break
            if a.fetch.link_id == b.fetch.link_id and a.fetch.network == b.fetch.network:
                for j in (a, b):
                    if "repeat" not in j.weighing:
                        j.weighing.append("repeat")


def _echoes(candidates: list[_Judged], policy: Policy) -> None:
    """Two fetches of one link from different networks within the echo window: the one that looks more like
    a machine (more weight; on a tie, the later one) is a gateway checking the person's click."""
    for i, a in enumerate(candidates):
        for b in candidates[i + 1 :]:
            if b.fetch.at - a.fetch.at > policy.echo_window:
                break
            if (
                a.fetch.link_id != b.fetch.link_id
                or a.fetch.network is None
                or b.fetch.network is None
                or a.fetch.network == b.fetch.network
                or a.fetch.allowed_network
                or b.fetch.allowed_network
            ):
                continue
            machine = a if a.weight > b.weight else b
            if "echo" not in machine.deciding:
                machine.deciding.append("echo")


def _unique(codes: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(codes))
