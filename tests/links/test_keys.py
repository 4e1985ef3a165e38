"""The key file: rotation rules and safe storage."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from links import keys
from links.token import TokenError


def test_first_key_is_active_and_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    ring = keys.load_or_create(path)
    assert [(k.id, k.state) for k in ring.keys] == [(1, keys.ACTIVE)]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys.load_or_create(path).keys == ring.keys  # reused, not replaced


def test_rotation_through_the_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    ring = keys.load_or_create(path)
    old_token = ring.codec().mint("https://example.com/", campaign_id=1, link_id=1, contact_id=1, sent_at=0)

    ring = ring.create()  # verifying: opens links, does not mint yet
    keys.save(ring, path)
    ring = keys.load(path)
    assert ring.active is not None and ring.active.id == 1
    assert ring.get(2).state == keys.VERIFYING

    ring = ring.activate(2)
    assert ring.get(1).state == keys.VERIFYING
    new_token = ring.codec().mint("https://example.com/", campaign_id=1, link_id=1, contact_id=1, sent_at=0)
    assert ring.codec().decode(old_token).key_id == 1
    assert ring.codec().decode(new_token).key_id == 2

    ring = ring.retire(1)
    with pytest.raises(TokenError, match="retired"):
        ring.codec().decode(old_token)
    with pytest.raises(keys.KeyFileError, match="retired"):
        ring.activate(1)
    with pytest.raises(keys.KeyFileError, match="active key"):
        ring.retire(2)
    assert ring.create().keys[-1].id == 3  # retired ids are never reused


def test_unreadable_key_file_says_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    with pytest.raises(keys.KeyFileError, match="does not exist"):
        keys.load(path)
    path.write_text("{not json")
    with pytest.raises(keys.KeyFileError, match="cannot be read"):
        keys.load(path)
    path.write_text('{"keys": [{"id": 1, "secret": "c2hvcnQ=", "state": "active", "created_at": 0, "changed_at": 0}]}')
    with pytest.raises(keys.KeyFileError, match="32 bytes"):
        keys.load(path)
    key = {"id": 70000, "secret": "A" * 43 + "=", "state": "active", "created_at": 0, "changed_at": 0}
    path.write_text(json.dumps({"keys": [key]}))
    with pytest.raises(keys.KeyFileError, match="out of range"):
        keys.load(path)
