"""The Rewriter object itself, with a real tokenizer process and the real PostgreSQL: what
tests/collector/test_rewriter.py (the tokenizer pool through the API and a collector process) and
test_admin_api.py (registration, recipients, tracking off, tracking domains) leave out: a campaign's message
is tokenized once and then only minted, the cache is bounded, a stopping collector takes no new message,
a collector without usable keys says so, and untracked links are reported with their reason."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from collector import campaigns
from collector.rewriter import CACHE_SIZE, RewriteBusy, Rewriter
from links import keys
from links.token import LINK_PATH

PUBLIC_URL = "https://t.example.net"
MESSAGE = '<p><a href="https://shop.example.com/pricing">Pricing</a> <a href="mailto:hi@example.com">mail</a></p>'
SENT_AT = 1_700_000_000


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(database_url, min_size=0, max_size=2) as pool:
        yield pool


@pytest.fixture
async def rewriter(data_dir: Path) -> AsyncIterator[Rewriter]:
    rewriter = Rewriter(data_dir / "keys.json", PUBLIC_URL, workers=1, queue=1)
    try:
        yield rewriter
    finally:
        await rewriter.close()


def contacts(data_dir: Path, html: str) -> list[int | None]:
    """The contact each tracked link in ``html`` was minted for."""
    codec = keys.load(data_dir / "keys.json").codec()
    tokens = re.findall(re.escape(PUBLIC_URL + LINK_PATH) + r"([A-Za-z0-9_-]+)", html)
    assert tokens
    return [codec.decode(token).contact_id for token in tokens]


async def test_a_message_is_tokenized_once_per_campaign_then_only_minted(
    rewriter: Rewriter, pool: asyncpg.Pool, data_dir: Path, campaign_id: int
) -> None:
    first = await rewriter.rewrite(pool, campaign_id, MESSAGE, None, 1, SENT_AT)
    assert contacts(data_dir, first["html"]) == [1]
    await rewriter.tokenizers.close()  # from now on, a message that needs tokenizing is refused
    second = await rewriter.rewrite(pool, campaign_id, MESSAGE, None, 2, SENT_AT)
    assert contacts(data_dir, second["html"]) == [2]  # the same placements, minted for this recipient
    assert (
        second["links"]
        == first["links"]
        == [{"id": 1, "destination": "https://shop.example.com/pricing", "name": "link_1", "part": "html"}]
    )
    with pytest.raises(RewriteBusy, match="the collector is stopping"):
        await rewriter.rewrite(pool, campaign_id, MESSAGE + " ", None, 3, SENT_AT)  # another message
    with pytest.raises(RewriteBusy, match="the collector is stopping"):
        await rewriter.rewrite(pool, campaign_id + 1, MESSAGE, None, 1, SENT_AT)  # another campaign: its own
    async with pool.acquire() as conn:
        assert [link["id"] for link in await campaigns.list_links(conn, campaign_id)] == [1]


async def test_the_prepared_messages_kept_are_bounded(rewriter: Rewriter, pool: asyncpg.Pool, campaign_id: int) -> None:
    # One more message than are kept; each its own text around the same placement (a sent message's links
    # cannot change).
    messages = [f'<a href="https://shop.example.com/p">offer {n}</a>' for n in range(CACHE_SIZE + 1)]
    for html in messages:
        await rewriter.rewrite(pool, campaign_id, html, None, None, SENT_AT)
    await rewriter.tokenizers.close()
    await rewriter.rewrite(pool, campaign_id, messages[-1], None, None, SENT_AT)  # still kept
    with pytest.raises(RewriteBusy):
        await rewriter.rewrite(pool, campaign_id, messages[0], None, None, SENT_AT)  # the oldest: let go


async def test_untracked_links_are_reported_with_their_reason(
    rewriter: Rewriter, pool: asyncpg.Pool, campaign_id: int
) -> None:
    html = MESSAGE + '<a href="#top">top</a><a href="{{unsubscribe_url}}">x</a>'
    result = await rewriter.rewrite(pool, campaign_id, html, "see https://shop.example.com/text", 5, SENT_AT)
    assert result["tracking"] is True
    assert [(link["id"], link["part"]) for link in result["links"]] == [(1, "html"), (2, "text")]
    assert result["skipped"] == [
        {"href": "mailto:hi@example.com", "reason": "mailto: link"},
        {"href": "#top", "reason": "in-page anchor"},
        {"href": "{{unsubscribe_url}}", "reason": "template placeholder"},
    ]
    assert 'href="mailto:hi@example.com"' in result["html"] and 'href="#top"' in result["html"]


async def test_a_collector_without_usable_link_keys_says_so(
    pool: asyncpg.Pool, tmp_path: Path, campaign_id: int
) -> None:
    rewriter = Rewriter(tmp_path / "missing-keys.json", PUBLIC_URL, workers=1)
    try:
        with pytest.raises(campaigns.Conflict, match=r"this collector cannot mint links: key file .* does not exist"):
            await rewriter.rewrite(pool, campaign_id, MESSAGE, None, 1, SENT_AT)
    finally:
        await rewriter.close()
