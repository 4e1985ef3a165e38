-- Migration 0012 (issue 15): the kill switch. Each block names a campaign, a campaign's link, or a
-- destination host; who made it, when and why; who lifted it and when (a lifted block stays, as its audit).
CREATE TABLE IF NOT EXISTS blocks (
    id                bigserial PRIMARY KEY,
    campaign_id       bigint CHECK (campaign_id BETWEEN 0 AND 4294967295),
    link_id           bigint CHECK (link_id BETWEEN 0 AND 4294967295),
    destination_host  text CHECK (length(destination_host) BETWEEN 1 AND 253),
    reason            text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    blocked_by        text NOT NULL,
    blocked_at        timestamptz NOT NULL DEFAULT now(),
    unblocked_by      text,
    unblocked_at      timestamptz,
    CHECK ((destination_host IS NULL) = (campaign_id IS NOT NULL)),
    CHECK (link_id IS NULL OR campaign_id IS NOT NULL)
);
-- One active block per target.
CREATE UNIQUE INDEX IF NOT EXISTS blocks_active
    ON blocks (coalesce(campaign_id, -1), coalesce(link_id, -1), coalesce(destination_host, ''))
    WHERE unblocked_at IS NULL;
