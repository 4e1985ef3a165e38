"""The link-action planner alone (collector.actions.plan): no database, no I/O. What its plan does when
written is checked against a run of the actions one by one here in memory, and end to end against
PostgreSQL in tests/collector/test_actions.py."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.actions import (
    WEBHOOK_NAMESPACE,
    AppliedClick,
    LinkActions,
    ListState,
    Plan,
    Run,
    RunEnd,
    TagAdd,
    TagRemove,
    plan,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CAMPAIGN = 7


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def event(n: int) -> uuid.UUID:
    return uuid.UUID(int=n)


def click(n: int, seconds: float, *, link: int = 1, contact: int = 42) -> AppliedClick:
    return AppliedClick(CAMPAIGN, link, contact, event(n), at(seconds))


def link(*actions: dict[str, str]) -> LinkActions:
    return LinkActions("Launch", "Pricing_CTA", "https://shop.example.com/p", tuple(actions))


def tag(name: str) -> dict[str, str]:
    return {"type": "add_tag", "tag": name}


def untag(name: str) -> dict[str, str]:
    return {"type": "remove_tag", "tag": name}


def start(name: str) -> dict[str, str]:
    return {"type": "start_automation", "automation": name}


def end(name: str) -> dict[str, str]:
    return {"type": "end_automation", "automation": name}


def subscribe(name: str) -> dict[str, str]:
    return {"type": "subscribe", "list": name}


def unsubscribe(name: str) -> dict[str, str]:
    return {"type": "unsubscribe", "list": name}


def hook(url: str) -> dict[str, str]:
    return {"type": "webhook", "url": url}


def test_nothing_to_do_is_an_empty_plan() -> None:
    assert plan([], {}) == Plan()
    # A click whose link is not among the links (gone since) does nothing.
    assert plan([click(1, 0)], {}) == Plan()


def test_clicks_run_in_time_order_then_event_id_and_each_links_actions_in_listed_order() -> None:
    links = {(CAMPAIGN, 1): link(subscribe("w"), tag("a")), (CAMPAIGN, 2): link(unsubscribe("w"))}
    clicks = [click(3, 2, link=1), click(2, 1, link=2), click(1, 2, link=2)]  # given out of order
    result = plan(clicks, links)
    order = [(e.event_id, e.position, orjson.loads(e.action)) for e in result.timeline]
    assert order == [
        (event(2), 0, unsubscribe("w")),  # the earliest click
        (event(1), 0, unsubscribe("w")),  # same time as event 3: the lower event id first
        (event(3), 0, subscribe("w")),
        (event(3), 1, tag("a")),
    ]
    assert result.lists == (ListState(42, "w", True, at(2)),)  # the last change wins, with its time
    assert [(e.at, e.campaign_id, e.link_id, e.contact_id) for e in result.timeline] == [
        (at(1), CAMPAIGN, 2, 42),
        (at(2), CAMPAIGN, 2, 42),
        (at(2), CAMPAIGN, 1, 42),
        (at(2), CAMPAIGN, 1, 42),
    ]


def test_positions_are_each_actions_place_in_its_links_list() -> None:
    actions = (tag("a"), hook("https://crm.example.com/1"), start("trial"), hook("https://crm.example.com/2"))
    result = plan([click(1, 0)], {(CAMPAIGN, 1): link(*actions)})
    assert [(e.position, orjson.loads(e.action)) for e in result.timeline] == list(enumerate(actions))


def test_a_tag_removed_then_added_again_takes_the_new_time() -> None:
    links = {(CAMPAIGN, 1): link(untag("t"), tag("t"))}
    # Re-added: added_at is this click's even if the contact had the tag before (an upsert, not an insert).
    assert plan([click(1, 5)], links).tags_readded == (TagAdd(42, "t", at(5)),)
    assert plan([click(1, 5)], links).tags_added == ()
    # Across two clicks of one batch: the second click's time.
    links = {(CAMPAIGN, 1): link(untag("t")), (CAMPAIGN, 2): link(tag("t"))}
    result = plan([click(2, 9, link=2), click(1, 5, link=1)], links)
    assert (result.tags_readded, result.tags_added, result.tags_removed) == ((TagAdd(42, "t", at(9)),), (), ())
    # Added, then removed: removed.
    result = plan([click(1, 5)], {(CAMPAIGN, 1): link(tag("t"), untag("t"))})
    assert (result.tags_added, result.tags_readded, result.tags_removed) == ((), (), (TagRemove(42, "t"),))


def test_two_adds_of_a_tag_keep_the_first_time() -> None:
    links = {(CAMPAIGN, 1): link(tag("t")), (CAMPAIGN, 2): link(tag("t"))}
    result = plan([click(1, 3, link=1), click(2, 8, link=2)], links)
    # An insert that keeps an existing tag's added_at: a second add_tag changes nothing.
    assert (result.tags_added, result.tags_readded, result.tags_removed) == ((TagAdd(42, "t", at(3)),), (), ())
    # Removed, re-added, added again: still the re-add's time.
    links = {(CAMPAIGN, 1): link(untag("t"), tag("t")), (CAMPAIGN, 2): link(tag("t"))}
    result = plan([click(1, 3, link=1), click(2, 8, link=2)], links)
    assert (result.tags_added, result.tags_readded) == ((), (TagAdd(42, "t", at(3)),))


def test_end_automation_closes_runs_opened_earlier_in_the_batch_and_runs_open_before_it() -> None:
    links = {(CAMPAIGN, 1): link(start("a")), (CAMPAIGN, 2): link(end("a")), (CAMPAIGN, 3): link(start("a"))}
    clicks = [click(1, 1, link=1), click(2, 2, link=2), click(3, 3, link=3)]
    result = plan(clicks, links)
    # The run started by the first click is ended by the second; the third click starts one that stays open.
    assert result.runs == (Run(42, "a", at(1), at(2)), Run(42, "a", at(3), None))
    # Runs open before the batch end at the batch's first end_automation.
    assert result.runs_ended == (RunEnd(42, "a", at(2)),)


def test_end_then_start_in_one_click_leaves_a_new_run_open() -> None:
    result = plan([click(1, 1)], {(CAMPAIGN, 1): link(end("a"), start("a"))})
    assert (result.runs_ended, result.runs) == ((RunEnd(42, "a", at(1)),), (Run(42, "a", at(1), None),))
    result = plan([click(1, 1)], {(CAMPAIGN, 1): link(start("a"), end("a"))})
    assert (result.runs_ended, result.runs) == ((RunEnd(42, "a", at(1)),), (Run(42, "a", at(1), at(1)),))


def test_a_second_end_leaves_the_first_ends_time() -> None:
    links = {(CAMPAIGN, 1): link(end("a")), (CAMPAIGN, 2): link(end("a"))}
    result = plan([click(1, 1, link=1), click(2, 2, link=2)], links)
    assert result.runs_ended == (RunEnd(42, "a", at(1)),) and result.runs == ()


def test_rows_are_sorted_by_contact_and_name_one_per_key() -> None:
    links = {(CAMPAIGN, 1): link(subscribe("z"), subscribe("b"), tag("y"), tag("c"), start("x"), end("d"))}
    result = plan([click(1, 0, contact=9), click(2, 1, contact=3)], links)
    assert [(s.contact_id, s.list) for s in result.lists] == [(3, "b"), (3, "z"), (9, "b"), (9, "z")]
    assert [(t.contact_id, t.tag) for t in result.tags_added] == [(3, "c"), (3, "y"), (9, "c"), (9, "y")]
    assert [(r.contact_id, r.automation) for r in result.runs] == [(3, "x"), (9, "x")]
    assert [(r.contact_id, r.automation) for r in result.runs_ended] == [(3, "d"), (9, "d")]


def test_webhooks_carry_an_idempotency_key_per_click_and_position() -> None:
    url = "https://crm.example.com/hooks/click"
    links = {(CAMPAIGN, 1): link(tag("a"), hook(url), hook(url + "/2"))}
    first = plan([click(1, 0), click(2, 1, contact=43)], links)
    assert [w.url for w in first.webhooks] == [url, url + "/2", url, url + "/2"]
    keys = [w.idempotency_key for w in first.webhooks]
    assert keys == [uuid.uuid5(WEBHOOK_NAMESPACE, f"{event(n)}:{position}") for n in (1, 2) for position in (1, 2)]
    assert len(set(keys)) == 4
    # Planning again (a redelivered batch, another collector) gives the same keys: the outbox keeps one row each.
    assert plan([click(2, 1, contact=43), click(1, 0)], links).webhooks == first.webhooks
    body = orjson.loads(first.webhooks[0].body)
    assert body == {
        "type": "link.first_click",
        "idempotency_key": str(keys[0]),
        "campaign": {"id": CAMPAIGN, "name": "Launch"},
        "link": {"id": 1, "name": "Pricing_CTA", "destination": "https://shop.example.com/p"},
        "contact_id": 42,
        "event_id": str(event(1)),
        "clicked_at": at(0).isoformat(),
    }


# The reference: a contact's state, and each action run on it one at a time, as the statements of
# tests/collector/test_actions.py's apply_one_by_one would; and the plan's rows written with the meaning of
# collector.actions.write's statements.


@dataclass
class State:
    tags: dict[tuple[int, str], datetime] = field(default_factory=dict)
    lists: dict[tuple[int, str], tuple[bool, datetime]] = field(default_factory=dict)
    runs: dict[tuple[int, str, datetime], datetime | None] = field(default_factory=dict)  # -> ended_at

    def copy(self) -> State:
        return State(dict(self.tags), dict(self.lists), dict(self.runs))


def one_by_one(state: State, clicks: list[AppliedClick], links: dict[tuple[int, int], LinkActions]) -> State:
    state = state.copy()
    for c in sorted(clicks, key=lambda c: (c.clicked_at, c.event_id)):
        for action in links[c.campaign_id, c.link_id].actions:
            kind, value = action["type"], next(v for k, v in action.items() if k != "type")
            key = (c.contact_id, value)
            if kind == "add_tag":
                state.tags.setdefault(key, c.clicked_at)
            elif kind == "remove_tag":
                state.tags.pop(key, None)
            elif kind in ("subscribe", "unsubscribe"):
                state.lists[key] = (kind == "subscribe", c.clicked_at)
            elif kind == "start_automation":
                state.runs.setdefault((*key, c.clicked_at), None)
            elif kind == "end_automation":
                for run, ended in state.runs.items():
                    if run[:2] == key and ended is None:
                        state.runs[run] = c.clicked_at
    return state


def written(state: State, result: Plan) -> State:
    state = state.copy()
    for t in result.tags_added:
        state.tags.setdefault((t.contact_id, t.tag), t.added_at)
    for t in result.tags_readded:
        state.tags[t.contact_id, t.tag] = t.added_at
    for gone in result.tags_removed:
        state.tags.pop((gone.contact_id, gone.tag), None)
    for s in result.lists:
        state.lists[s.contact_id, s.list] = (s.subscribed, s.changed_at)
    for e in result.runs_ended:
        for run, ended in state.runs.items():
            if run[:2] == (e.contact_id, e.automation) and ended is None:
                state.runs[run] = e.ended_at
    for new in result.runs:
        state.runs.setdefault((new.contact_id, new.automation, new.started_at), new.ended_at)
    return state


ACTION = st.one_of(
    st.builds(tag, st.sampled_from("ab")),
    st.builds(untag, st.sampled_from("ab")),
    st.builds(start, st.sampled_from("ab")),
    st.builds(end, st.sampled_from("ab")),
    st.builds(subscribe, st.sampled_from("ab")),
    st.builds(unsubscribe, st.sampled_from("ab")),
)


@st.composite
def batches(draw: st.DrawFn) -> tuple[State, list[AppliedClick], dict[tuple[int, int], LinkActions]]:
    links = {
        (CAMPAIGN, n): link(*draw(st.lists(ACTION, max_size=5, unique_by=lambda a: tuple(a.items()))))
        for n in (1, 2, 3)
    }
    # Up to one click per (link, contact), as ingest applies; times may tie (event ids break the tie).
    pairs = draw(st.lists(st.tuples(st.sampled_from((1, 2, 3)), st.sampled_from((41, 42))), unique=True))
    clicks = [
        click(n, draw(st.integers(1, 4)), link=link_id, contact=contact) for n, (link_id, contact) in enumerate(pairs)
    ]
    before = State(
        tags={(c, t): at(-100) for c in (41, 42) for t in "ab" if draw(st.booleans())},
        lists={(c, name): (draw(st.booleans()), at(-100)) for c in (41, 42) for name in "ab" if draw(st.booleans())},
        runs={(c, name, at(-100)): draw(st.sampled_from((None, at(-50)))) for c in (41, 42) for name in "ab"},
    )
    return before, clicks, links


@settings(max_examples=300, deadline=None)
@given(batches())
def test_the_plan_written_leaves_what_running_each_action_alone_would(
    batch: tuple[State, list[AppliedClick], dict[tuple[int, int], LinkActions]],
) -> None:
    before, clicks, links = batch
    result = plan(clicks, links)
    assert written(before, result) == one_by_one(before, clicks, links)
    assert len(result.timeline) == sum(len(links[c.campaign_id, c.link_id].actions) for c in clicks)
