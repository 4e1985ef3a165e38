-- Migration 0004 (6d24b86): tracking domains per campaign.
-- The base URL of the campaign's tracked links (a sender's own tracking domain); NULL: the collector's
-- CLICKEDGE_PUBLIC_URL. Every edge answers on every domain pointed at it.
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS tracking_url text CHECK (length(tracking_url) <= 200);
