-- Migration 0009 (issue 14): every click's verdict and its reasons; clicks wait in pending_clicks until their
-- verdict is final; reports count people, with the automated clicks beside them.
-- Clicks from before verdicts were counted as people: they stay so, with the reason 'before_verdicts'.
ALTER TABLE clicks ADD COLUMN IF NOT EXISTS verdict text NOT NULL DEFAULT 'human'
    CHECK (verdict IN ('human', 'scanner', 'preview', 'script'));
ALTER TABLE clicks ALTER COLUMN verdict DROP DEFAULT;
ALTER TABLE clicks ADD COLUMN IF NOT EXISTS verdict_reasons text[] NOT NULL DEFAULT '{before_verdicts}';
ALTER TABLE clicks ALTER COLUMN verdict_reasons DROP DEFAULT;

CREATE TABLE IF NOT EXISTS pending_clicks (
    contact_id   bigint NOT NULL CHECK (contact_id >= 0),
    clicked_at   timestamptz NOT NULL,
    event_id     uuid NOT NULL,
    campaign_id  bigint NOT NULL,
    link_id      bigint NOT NULL,
    sent_at      timestamptz NOT NULL,
    key_id       integer NOT NULL,
    client_ip    inet,
    user_agent   text NOT NULL,
    method       text NOT NULL,
    edge         text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    signals      integer,
    due_at       timestamptz NOT NULL,
    PRIMARY KEY (contact_id, clicked_at, event_id)
);
CREATE INDEX IF NOT EXISTS pending_clicks_due ON pending_clicks (due_at);
CREATE INDEX IF NOT EXISTS pending_clicks_campaign ON pending_clicks (campaign_id);

ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS count_everything boolean NOT NULL DEFAULT false;
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS decoy_link boolean NOT NULL DEFAULT false;
ALTER TABLE links ADD COLUMN IF NOT EXISTS actions_on text NOT NULL DEFAULT 'human'
    CHECK (actions_on IN ('human', 'every_click'));
ALTER TABLE links ADD COLUMN IF NOT EXISTS decoy boolean NOT NULL DEFAULT false;

ALTER TABLE link_click_counts ADD COLUMN IF NOT EXISTS scanner_clicks bigint NOT NULL DEFAULT 0;
ALTER TABLE link_click_counts ADD COLUMN IF NOT EXISTS preview_clicks bigint NOT NULL DEFAULT 0;
ALTER TABLE link_click_counts ADD COLUMN IF NOT EXISTS script_clicks bigint NOT NULL DEFAULT 0;
ALTER TABLE campaign_stats ADD COLUMN IF NOT EXISTS scanner_clicks bigint NOT NULL DEFAULT 0;
ALTER TABLE campaign_stats ADD COLUMN IF NOT EXISTS preview_clicks bigint NOT NULL DEFAULT 0;
ALTER TABLE campaign_stats ADD COLUMN IF NOT EXISTS script_clicks bigint NOT NULL DEFAULT 0;
ALTER TABLE campaign_hourly ADD COLUMN IF NOT EXISTS scanner_clicks bigint NOT NULL DEFAULT 0;
ALTER TABLE campaign_hourly ADD COLUMN IF NOT EXISTS preview_clicks bigint NOT NULL DEFAULT 0;
ALTER TABLE campaign_hourly ADD COLUMN IF NOT EXISTS script_clicks bigint NOT NULL DEFAULT 0;
ALTER TABLE link_clickers ADD COLUMN IF NOT EXISTS first_reasons text[] NOT NULL DEFAULT '{}';
