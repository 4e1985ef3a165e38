-- Migration 0002 (2cd9ac7): report tables kept at ingest, link actions applied once per contact with an
-- outbox for webhooks, campaign recipients, admin API keys.

-- tracking off: messages of the campaign come back from rewriting unchanged.
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS tracking boolean NOT NULL DEFAULT true;
-- Distinct recipients, kept with campaign_recipients, for click-through rates.
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS recipients bigint NOT NULL DEFAULT 0;

CREATE TABLE IF NOT EXISTS campaign_recipients (
    campaign_id  bigint NOT NULL REFERENCES campaigns (campaign_id),
    contact_id   bigint NOT NULL CHECK (contact_id > 0),
    added_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, contact_id)
);

-- What a contact's first qualifying click on this link does: a JSON array of
-- {"type": "add_tag"|"remove_tag"|"start_automation"|"end_automation"|"subscribe"|"unsubscribe"|"webhook", ...}.
ALTER TABLE links ADD COLUMN IF NOT EXISTS actions jsonb NOT NULL DEFAULT '[]';

-- Every change of a link's actions: who, when, before, after.
CREATE TABLE IF NOT EXISTS link_action_audit (
    id           bigserial PRIMARY KEY,
    campaign_id  bigint NOT NULL,
    link_id      bigint NOT NULL,
    actor        text NOT NULL,
    changed_at   timestamptz NOT NULL DEFAULT now(),
    before       jsonb NOT NULL,
    after        jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS link_action_audit_link ON link_action_audit (campaign_id, link_id, id);

-- Report tables, kept at ingest from newly inserted click rows only, in the click's transaction, so a
-- report never scans raw clicks. Contact 0 (anonymous) has no unique-click rows.
-- First and last click per contact x link: unique clicks, and "who clicked this link".
CREATE TABLE IF NOT EXISTS link_clickers (
    campaign_id  bigint NOT NULL,
    link_id      bigint NOT NULL,
    contact_id   bigint NOT NULL,
    first_click  timestamptz NOT NULL,
    last_click   timestamptz NOT NULL,
    clicks       bigint NOT NULL,
    PRIMARY KEY (campaign_id, link_id, contact_id)
);
-- Distinct clickers per campaign.
CREATE TABLE IF NOT EXISTS campaign_clickers (
    campaign_id  bigint NOT NULL,
    contact_id   bigint NOT NULL,
    first_click  timestamptz NOT NULL,
    PRIMARY KEY (campaign_id, contact_id)
);
CREATE TABLE IF NOT EXISTS campaign_stats (
    campaign_id      bigint PRIMARY KEY,
    clicks           bigint NOT NULL DEFAULT 0,
    unique_clicks    bigint NOT NULL DEFAULT 0,
    unique_clickers  bigint NOT NULL DEFAULT 0
);
ALTER TABLE link_click_counts ADD COLUMN IF NOT EXISTS unique_clicks bigint NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS campaign_hourly (
    campaign_id  bigint NOT NULL,
    hour         timestamptz NOT NULL,
    clicks       bigint NOT NULL,
    PRIMARY KEY (campaign_id, hour)
);

-- Contact state that link actions change.
CREATE TABLE IF NOT EXISTS contact_tags (
    contact_id  bigint NOT NULL,
    tag         text NOT NULL,
    added_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (contact_id, tag)
);
CREATE TABLE IF NOT EXISTS automation_runs (
    contact_id  bigint NOT NULL,
    automation  text NOT NULL,
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz,
    PRIMARY KEY (contact_id, automation, started_at)
);
CREATE TABLE IF NOT EXISTS list_memberships (
    contact_id  bigint NOT NULL,
    list        text NOT NULL,
    subscribed  boolean NOT NULL,
    changed_at  timestamptz NOT NULL,
    PRIMARY KEY (contact_id, list)
);
-- Each link's actions are applied once per contact: the row is the proof, inserted with the click.
CREATE TABLE IF NOT EXISTS applied_link_actions (
    campaign_id  bigint NOT NULL,
    link_id      bigint NOT NULL,
    contact_id   bigint NOT NULL,
    event_id     uuid NOT NULL,
    applied_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, link_id, contact_id)
);
-- The actions applied, for the contact timeline.
CREATE TABLE IF NOT EXISTS contact_events (
    id           bigserial PRIMARY KEY,
    contact_id   bigint NOT NULL,
    at           timestamptz NOT NULL,
    campaign_id  bigint NOT NULL,
    link_id      bigint NOT NULL,
    event_id     uuid NOT NULL,
    action       jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS contact_events_contact ON contact_events (contact_id, at);

-- Webhooks to call, written with the click; a background task delivers them (at least once).
CREATE TABLE IF NOT EXISTS webhook_outbox (
    id               bigserial PRIMARY KEY,
    idempotency_key  uuid NOT NULL UNIQUE,
    url              text NOT NULL,
    body             jsonb NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    attempts         integer NOT NULL DEFAULT 0,
    delivered_at     timestamptz,
    failed_at        timestamptz,
    last_error       text
);
CREATE INDEX IF NOT EXISTS webhook_outbox_due ON webhook_outbox (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;

-- Admin API keys: only a SHA-256 of the secret is kept.
CREATE TABLE IF NOT EXISTS api_keys (
    key_id       text PRIMARY KEY,
    name         text NOT NULL,
    secret_hash  bytea NOT NULL,
    scopes       text[] NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);
