"""The edge's block list (edge/blocklist.py), alone: what it blocks, how it reads the collector's list and
its own saved copy."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from edge.blocklist import Blocklist, host_of


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://Shop.Example/a/b?c=d#e", "shop.example"),
        ("http://shop.example:8443/", "shop.example"),
        ("https://user:pw@shop.example./x", "shop.example"),
        ("https://shop.example?x=//evil.example/", "shop.example"),
        ("https://shop.example#@evil.example", "shop.example"),
        ("http://[2001:db8::1]:8080/x", "[2001:db8::1]"),
        ("https://xn--bcher-kva.example/", "xn--bcher-kva.example"),
    ],
)
def test_the_host_of_a_destination(url: str, host: str) -> None:
    assert host_of(url) == host


def test_what_a_list_blocks() -> None:
    blocks = Blocklist(frozenset({7}), frozenset({(8, 2)}), frozenset({"phish.example"}), '"v1"')
    assert blocks.entries == 3
    assert blocks.blocks(7, 1, "https://fine.example/")  # the whole campaign
    assert blocks.blocks(8, 2, "https://fine.example/") and not blocks.blocks(8, 3, "https://fine.example/")
    assert blocks.blocks(9, 1, "https://phish.example/x")
    assert blocks.blocks(9, 1, "https://login.secure.phish.example/x")  # and the hosts under it
    assert not blocks.blocks(9, 1, "https://notphish.example/x")
    assert not blocks.blocks(9, 1, "https://phish.example.com/x")
    assert not Blocklist().blocks(7, 1, "https://phish.example/") and Blocklist().entries == 0


def test_the_collectors_list_is_read_strictly() -> None:
    good = orjson.dumps({"campaigns": [1], "links": [[1, 2]], "hosts": ["a.example"]})
    parsed = Blocklist.parse(good, '"e"')
    assert (parsed.campaigns, parsed.links, parsed.hosts, parsed.etag) == (
        frozenset({1}),
        frozenset({(1, 2)}),
        frozenset({"a.example"}),
        '"e"',
    )
    for bad, said in (
        (b"not json", "not JSON"),
        (b"[]", "JSON object"),
        (orjson.dumps({"campaigns": ["1"], "links": [], "hosts": []}), "campaigns"),
        (orjson.dumps({"campaigns": [], "links": [[1]], "hosts": []}), "links"),
        (orjson.dumps({"campaigns": [], "links": [], "hosts": [""]}), "hosts"),
        (orjson.dumps({"campaigns": [-1], "links": [], "hosts": []}), "campaigns"),
    ):
        with pytest.raises(ValueError, match=said):
            Blocklist.parse(bad, "")


def test_a_saved_list_comes_back_whole(tmp_path: Path) -> None:
    path = tmp_path / "blocklist.json"
    assert Blocklist.load(path) is None
    saved = Blocklist(frozenset({7}), frozenset({(8, 2)}), frozenset({"phish.example"}), '"v9"')
    saved.save(path)
    assert Blocklist.load(path) == saved
    assert path.stat().st_mode & 0o777 == 0o600


def test_answers_per_destination_are_kept_within_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("edge.blocklist.MAX_SEEN", 2)
    blocks = Blocklist(hosts=frozenset({"phish.example"}))
    urls = ["https://a.example/", "https://login.phish.example/", "https://b.example/", "https://phish.example/"]
    assert [blocks.blocks(1, 1, url) for url in urls * 2] == [False, True, False, True] * 2
    assert len(blocks._seen) <= 2
