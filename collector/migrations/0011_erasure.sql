-- Migration 0011 (issue 15): erasure. A tombstone per erased contact (a keyed hash of the id, never the
-- id), checked at ingest; an audit row per erasure; and indexes that find a contact's rows in the tables
-- whose keys do not start with the contact.
CREATE TABLE IF NOT EXISTS erased_contacts (
    tombstone  bytea PRIMARY KEY,
    erased_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS contact_erasures (
    id         bigserial PRIMARY KEY,
    tombstone  bytea NOT NULL,
    actor      text NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    removed    jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS link_clickers_contact ON link_clickers (contact_id);
CREATE INDEX IF NOT EXISTS campaign_clickers_contact ON campaign_clickers (contact_id);
CREATE INDEX IF NOT EXISTS campaign_recipients_contact ON campaign_recipients (contact_id);
CREATE INDEX IF NOT EXISTS applied_link_actions_contact ON applied_link_actions (contact_id);
CREATE INDEX IF NOT EXISTS refused_clicks_contact ON refused_clicks (contact_id);
CREATE INDEX IF NOT EXISTS webhook_outbox_contact ON webhook_outbox (((body->>'contact_id')::bigint));
