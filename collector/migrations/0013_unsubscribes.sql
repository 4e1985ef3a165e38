-- Migration 0013 (issue 15): one-click unsubscribe (RFC 8058). A campaign names the list its unsubscribe
-- removes people from and where a contact.unsubscribed event goes; each contact's first unsubscribe with a
-- campaign's messages is kept and counted.
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS unsubscribe_list text
    CHECK (length(unsubscribe_list) BETWEEN 1 AND 200);
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS unsubscribe_webhook text
    CHECK (length(unsubscribe_webhook) BETWEEN 1 AND 2000);
ALTER TABLE campaign_stats ADD COLUMN IF NOT EXISTS unsubscribes bigint NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS unsubscribes (
    campaign_id      bigint NOT NULL,
    contact_id       bigint NOT NULL CHECK (contact_id > 0),
    event_id         uuid NOT NULL,
    unsubscribed_at  timestamptz NOT NULL,
    list             text,
    PRIMARY KEY (campaign_id, contact_id)
);
CREATE INDEX IF NOT EXISTS unsubscribes_contact ON unsubscribes (contact_id);
