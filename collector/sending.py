"""One recipient's message made ready to send: the rewrite API and `clickedge rewrite` both come here.

One rule for where the links point: the campaign's own tracking domain (``tracking_url``) when it has one,
else the configured public URL (the collector's CLICKEDGE_PUBLIC_URL; for the command line, its
--public-url, CLICKEDGE_PUBLIC_URL, the URL `up` recorded, or the default). And one transaction for what
is registered: the campaign, its link placements and the recipient, together or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from collector import campaigns
from links.rewrite import PreparedMessage
from links.token import UNSUBSCRIBE_PATH, TokenCodec

# RFC 8058: the POST a mailbox provider sends to the List-Unsubscribe URL when the person asks.
ONE_CLICK = "List-Unsubscribe=One-Click"


@dataclass(frozen=True, slots=True)
class Sendable:
    html: str
    text: str | None
    tracking: bool  # False: tracking is off for the campaign and the message is unchanged
    headers: dict[str, str]  # the message's one-click unsubscribe headers; none for an anonymous message


def unsubscribe_headers(
    codec: TokenCodec, base: str, *, campaign_id: int, contact: int | None, sent_at: int
) -> dict[str, str]:
    """The List-Unsubscribe (RFC 2369) and List-Unsubscribe-Post (RFC 8058) headers for one recipient: their
    one-click URL on ``base``. None for an anonymous message (no one to unsubscribe). Given whether tracking is
    on or off: unsubscribing is not tracking."""
    if contact is None:
        return {}
    token = codec.mint_unsubscribe(campaign_id=campaign_id, contact_id=contact, sent_at=sent_at)
    return {"List-Unsubscribe": f"<{base}{UNSUBSCRIBE_PATH}{token}>", "List-Unsubscribe-Post": ONE_CLICK}


def base_url(tracking_url: str | None, public_url: str) -> str:
    """Where a campaign's links point: its tracking domain, else the public URL."""
    return tracking_url or public_url


async def tracking_for(conn: asyncpg.Connection, campaign_id: int) -> campaigns.SendingSettings:
    """The campaign's settings for rewriting, creating the campaign (tracking on) if it is new."""
    return await campaigns.ensure_campaign(conn, campaign_id)


async def register(
    conn: asyncpg.Connection,
    campaign_id: int,
    message: PreparedMessage,
    contact: int | None,
    *,
    links: bool = True,
    decoy: bool = False,
) -> campaigns.SendingSettings:
    """In one transaction: the campaign, its placements (unless ``links`` is False: already registered) and
    the recipient; the decoy placement too when the campaign asks for one or ``decoy`` does. Returns the
    campaign's settings, decoy_link set when a decoy goes in; nothing is registered when tracking is off.
    Raises campaigns.Conflict when a placement is registered for another destination."""
    async with conn.transaction():
        settings = await campaigns.ensure_campaign(conn, campaign_id)
        if settings.tracking:
            with_decoy = settings.decoy_link or decoy
            slots = list(message.links) if links else []
            if with_decoy and message.decoy is not None:
                slots.append(message.decoy)
            await campaigns.register_links(conn, campaign_id, slots)
            if contact is not None:
                await campaigns.record_recipient(conn, campaign_id, contact)
            settings = campaigns.SendingSettings(settings.tracking, settings.tracking_url, with_decoy)
    return settings


def render(
    message: PreparedMessage,
    original: tuple[str, str | None],
    codec: TokenCodec,
    *,
    tracking: bool,
    base: str,
    campaign_id: int,
    contact: int | None,
    sent_at: int,
    decoy: bool = False,
) -> Sendable:
    """The recipient's message: its links minted on ``base`` (and the decoy link if ``decoy``), or the
    original when tracking is off; with its one-click unsubscribe headers either way."""
    headers = unsubscribe_headers(codec, base, campaign_id=campaign_id, contact=contact, sent_at=sent_at)
    if not tracking:
        return Sendable(original[0], original[1], False, headers)
    html, text = message.render(
        codec, base_url=base, campaign_id=campaign_id, contact_id=contact, sent_at=sent_at, decoy=decoy
    )
    return Sendable(html, text, True, headers)
