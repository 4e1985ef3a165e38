-- Clickedge database schema: the source of truth, the complete current schema with each table whole.
-- `clickedge migrate` (and `clickedge up`) applies it to an empty database and records it as the latest
-- version in schema_migrations. A database made earlier is brought up to date by the ordered files in
-- collector/migrations/ instead; a change to this file goes with a new migration that makes the same
-- change, and tests/collector/test_schema.py checks that both give the same database (collector/schema.py).

CREATE TABLE campaigns (
    campaign_id   bigint PRIMARY KEY CHECK (campaign_id BETWEEN 0 AND 4294967295),
    name          text NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- tracking off: messages of the campaign come back from rewriting unchanged.
    tracking      boolean NOT NULL DEFAULT true,
    -- Distinct recipients, kept with campaign_recipients, for click-through rates.
    recipients    bigint NOT NULL DEFAULT 0,
    -- The base URL of the campaign's tracked links (a sender's own tracking domain); NULL: the collector's
    -- CLICKEDGE_PUBLIC_URL. Every edge answers on every domain pointed at it.
    tracking_url  text CHECK (length(tracking_url) <= 200),
    -- Count every click as a person's, machines' included (internal test sends); verdicts are still kept.
    count_everything  boolean NOT NULL DEFAULT false,
    -- Rewriting adds a decoy link people cannot see or reach; any fetch of it marks the message's burst a
    -- scanner's (docs/click-truth.md).
    decoy_link    boolean NOT NULL DEFAULT false,
    -- Its clicks are stored without their contact (contact_id 0): counted, never a contact's, no actions.
    anonymous     boolean NOT NULL DEFAULT false,
    -- Its clicks keep the client's full address; otherwise only its network (IPv4 /24, IPv6 /48), unless
    -- CLICKEDGE_COLLECTOR_CLIENT_IPS=full.
    full_client_ips  boolean NOT NULL DEFAULT false,
    -- The list a one-click unsubscribe (RFC 8058) of its messages removes the contact from; NULL: none
    -- (the unsubscribe is still recorded, counted and sent to unsubscribe_webhook).
    unsubscribe_list     text CHECK (length(unsubscribe_list) BETWEEN 1 AND 200),
    -- Where a contact.unsubscribed event is sent (a webhook endpoint, signed like link actions' webhooks).
    unsubscribe_webhook  text CHECK (length(unsubscribe_webhook) BETWEEN 1 AND 2000)
);

CREATE TABLE campaign_recipients (
    campaign_id  bigint NOT NULL REFERENCES campaigns (campaign_id),
    contact_id   bigint NOT NULL CHECK (contact_id > 0),
    added_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, contact_id)
);
CREATE INDEX campaign_recipients_contact ON campaign_recipients (contact_id);  -- erasure

-- One row per placement of a link in a campaign's message (the same URL twice is two links).
CREATE TABLE links (
    campaign_id  bigint NOT NULL REFERENCES campaigns (campaign_id),
    link_id      bigint NOT NULL CHECK (link_id BETWEEN 0 AND 4294967295),
    destination  text NOT NULL CHECK (length(destination) <= 2048),
    placement    integer NOT NULL DEFAULT 0,
    name         text NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- What a contact's first qualifying click on this link does: a JSON array of
    -- {"type": "add_tag"|"remove_tag"|"start_automation"|"end_automation"|"subscribe"|"unsubscribe"|"webhook", ...}.
    actions      jsonb NOT NULL DEFAULT '[]',
    -- 'human': actions fire on a contact's first click judged a person's; 'every_click': on the first click
    -- whatever its verdict (a link only machines are meant to fetch).
    actions_on   text NOT NULL DEFAULT 'human' CHECK (actions_on IN ('human', 'every_click')),
    -- The campaign's decoy link (campaigns.decoy_link): never a person's.
    decoy        boolean NOT NULL DEFAULT false,
    PRIMARY KEY (campaign_id, link_id)
);

-- Every change of a link's actions: who, when, before, after.
CREATE TABLE link_action_audit (
    id           bigserial PRIMARY KEY,
    campaign_id  bigint NOT NULL,
    link_id      bigint NOT NULL,
    actor        text NOT NULL,
    changed_at   timestamptz NOT NULL DEFAULT now(),
    before       jsonb NOT NULL,
    after        jsonb NOT NULL
);
CREATE INDEX link_action_audit_link ON link_action_audit (campaign_id, link_id, id);

-- Every recorded click. Partitioned by month on clicked_at so retention drops whole partitions.
-- The primary key starts with contact_id so the table can later be distributed by contact (Citus needs
-- unique keys to include the distribution column) and includes clicked_at because a partitioned table's
-- keys must include the partition column. contact_id 0 means an anonymous click (no contact in the token).
-- A redelivered event has the same (contact_id, clicked_at, event_id), so it conflicts and is not re-applied.
-- The monthly partitions are made by clickedge_ensure_click_partitions, below.
CREATE TABLE clicks (
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
    -- The request headers that tell a browser's navigation from a fetcher's, as the edge saw them
    -- (common/signals.py: bits, and in bits 24 to 30 the layout they follow); NULL from an older edge.
    signals      integer,
    -- Who clicked (collector/classify.py): set once, when final, and never changed. Clicks from before
    -- verdicts were counted as people and say so ('human', '{before_verdicts}').
    verdict      text NOT NULL CHECK (verdict IN ('human', 'scanner', 'preview', 'script')),
    -- The short codes of the signals that decided it (docs/click-truth.md lists them).
    verdict_reasons  text[] NOT NULL,
    PRIMARY KEY (contact_id, clicked_at, event_id)
) PARTITION BY RANGE (clicked_at);
CREATE INDEX clicks_campaign_link ON clicks (campaign_id, link_id, clicked_at);

-- Clicks whose verdict is not final yet: each waits until due_at (CLICKEDGE_COLLECTOR_VERDICT_HOLD after it
-- arrived, at most 60 s) for the clicks of its burst, then moves to clicks with its verdict, and only then
-- is counted or acts. Reports show how many wait.
CREATE TABLE pending_clicks (
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
CREATE INDEX pending_clicks_due ON pending_clicks (due_at);
CREATE INDEX pending_clicks_campaign ON pending_clicks (campaign_id);

-- Catches clicks whose time falls outside the monthly partitions made ahead of time.
CREATE TABLE clicks_default PARTITION OF clicks DEFAULT;

-- Clicks the collector refused because of their time, with the values as the edge sent them: clicked
-- more than CLICKEDGE_COLLECTOR_MAX_CLOCK_SKEW ahead of the collector's clock (reason 'future': the edge's
-- clock is wrong) or more than CLICKEDGE_COLLECTOR_MAX_CLICK_AGE ago ('too_old'). Written with the rest of
-- their batch, once per event id; never in clicks or any report.
CREATE TABLE refused_clicks (
    event_id       uuid PRIMARY KEY,
    reason         text NOT NULL,
    edge           text NOT NULL,
    clicked_at_us  bigint NOT NULL,
    campaign_id    bigint NOT NULL,
    link_id        bigint NOT NULL,
    contact_id     bigint,
    sent_at        bigint NOT NULL,
    key_id         integer NOT NULL,
    client_ip      inet,
    user_agent     text NOT NULL,
    method         text NOT NULL,
    received_at    timestamptz NOT NULL DEFAULT now(),
    signals        integer
);
CREATE INDEX refused_clicks_contact ON refused_clicks (contact_id);  -- erasure

-- Report tables, kept from click rows as their verdicts become final, in that transaction, so a report never
-- scans raw clicks. clicks, unique clicks and clickers count people (verdict 'human', or every click of a
-- campaign with count_everything); scanner_, preview_ and script_clicks count the machines' beside them.
-- Contact 0 (anonymous) has no unique-click rows.

-- Per-link counters.
CREATE TABLE link_click_counts (
    campaign_id    bigint NOT NULL,
    link_id        bigint NOT NULL,
    clicks         bigint NOT NULL DEFAULT 0,
    last_click     timestamptz,
    unique_clicks  bigint NOT NULL DEFAULT 0,
    scanner_clicks  bigint NOT NULL DEFAULT 0,
    preview_clicks  bigint NOT NULL DEFAULT 0,
    script_clicks   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign_id, link_id)
);

-- First and last click per contact x link: unique clicks, and "who clicked this link".
-- A repeated click updates its pair's row; room left on each page (fillfactor 80) lets that be a HOT
-- update, which writes no new index entry.
CREATE TABLE link_clickers (
    campaign_id  bigint NOT NULL,
    link_id      bigint NOT NULL,
    contact_id   bigint NOT NULL,
    first_click  timestamptz NOT NULL,
    last_click   timestamptz NOT NULL,
    clicks       bigint NOT NULL,
    -- The reasons of the first click's verdict.
    first_reasons  text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (campaign_id, link_id, contact_id)
) WITH (fillfactor = 80);
CREATE INDEX link_clickers_contact ON link_clickers (contact_id);  -- erasure

-- Distinct clickers per campaign.
CREATE TABLE campaign_clickers (
    campaign_id  bigint NOT NULL,
    contact_id   bigint NOT NULL,
    first_click  timestamptz NOT NULL,
    PRIMARY KEY (campaign_id, contact_id)
);
CREATE INDEX campaign_clickers_contact ON campaign_clickers (contact_id);  -- erasure

CREATE TABLE campaign_stats (
    campaign_id      bigint PRIMARY KEY,
    clicks           bigint NOT NULL DEFAULT 0,
    unique_clicks    bigint NOT NULL DEFAULT 0,
    unique_clickers  bigint NOT NULL DEFAULT 0,
    scanner_clicks   bigint NOT NULL DEFAULT 0,
    preview_clicks   bigint NOT NULL DEFAULT 0,
    script_clicks    bigint NOT NULL DEFAULT 0,
    -- Contacts who unsubscribed with a message of the campaign (rows of unsubscribes).
    unsubscribes     bigint NOT NULL DEFAULT 0
);

CREATE TABLE campaign_hourly (
    campaign_id  bigint NOT NULL,
    hour         timestamptz NOT NULL,
    clicks       bigint NOT NULL,
    scanner_clicks  bigint NOT NULL DEFAULT 0,
    preview_clicks  bigint NOT NULL DEFAULT 0,
    script_clicks   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign_id, hour)
);

-- Contact state that link actions change.
CREATE TABLE contact_tags (
    contact_id  bigint NOT NULL,
    tag         text NOT NULL,
    added_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (contact_id, tag)
);

CREATE TABLE automation_runs (
    contact_id  bigint NOT NULL,
    automation  text NOT NULL,
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz,
    PRIMARY KEY (contact_id, automation, started_at)
);

CREATE TABLE list_memberships (
    contact_id  bigint NOT NULL,
    list        text NOT NULL,
    subscribed  boolean NOT NULL,
    changed_at  timestamptz NOT NULL,
    PRIMARY KEY (contact_id, list)
);

-- Each link's actions are applied once per contact: the row is the proof, inserted with the click.
CREATE TABLE applied_link_actions (
    campaign_id  bigint NOT NULL,
    link_id      bigint NOT NULL,
    contact_id   bigint NOT NULL,
    event_id     uuid NOT NULL,
    applied_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, link_id, contact_id)
);
CREATE INDEX applied_link_actions_contact ON applied_link_actions (contact_id);  -- erasure

-- The actions applied, for the contact timeline.
CREATE TABLE contact_events (
    id           bigserial PRIMARY KEY,
    contact_id   bigint NOT NULL,
    at           timestamptz NOT NULL,
    campaign_id  bigint NOT NULL,
    link_id      bigint NOT NULL,
    event_id     uuid NOT NULL,
    action       jsonb NOT NULL,
    -- The action's place in its link's list, so the timeline shows one click's actions in the order they
    -- ran (rows from before this column: 0, and their id keeps the order).
    position     integer NOT NULL DEFAULT 0
);
CREATE INDEX contact_events_contact ON contact_events (contact_id, at);

-- Webhooks to call, written with the click; a background task delivers them (at least once).
CREATE TABLE webhook_outbox (
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
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;
-- A link's webhook deliveries, for GET /v1/campaigns/{id}/links/{link}/webhooks: the body names them.
CREATE INDEX webhook_outbox_link ON webhook_outbox
    (((body->'campaign'->>'id')::bigint), ((body->'link'->>'id')::bigint), id);
-- A contact's webhooks, for erasure and export: the body names the contact.
CREATE INDEX webhook_outbox_contact ON webhook_outbox (((body->>'contact_id')::bigint));

-- Every URL a webhook action names is an endpoint with its own signing secret,
-- HMAC-SHA256(master webhook secret, 'endpoint:<id>:<generation>'), derived by the collector and never
-- stored. Rotating an endpoint moves it to the next generation. Endpoints are made when an action list
-- first names a URL (and by the deliverer for a URL that has none yet).
CREATE TABLE webhook_endpoints (
    id          bigserial PRIMARY KEY,
    url         text NOT NULL UNIQUE,
    generation  integer NOT NULL DEFAULT 1 CHECK (generation >= 1),
    created_at  timestamptz NOT NULL DEFAULT now(),
    rotated_at  timestamptz
);

-- One-click unsubscribes (RFC 8058, collector/unsubscribes.py): a contact's first with a campaign's messages,
-- with the list it named then. A later one of the same contact and campaign changes the list again only if
-- the contact was subscribed again since; it adds no row.
CREATE TABLE unsubscribes (
    campaign_id      bigint NOT NULL,
    contact_id       bigint NOT NULL CHECK (contact_id > 0),
    event_id         uuid NOT NULL,
    unsubscribed_at  timestamptz NOT NULL,
    list             text,
    PRIMARY KEY (campaign_id, contact_id)
);
CREATE INDEX unsubscribes_contact ON unsubscribes (contact_id);  -- erasure

-- The kill switch (collector/blocks.py): each block names a campaign, a campaign's link, or a destination
-- host (and the hosts under it); who made it, when and why; who lifted it and when (a lifted block stays,
-- as its audit). Edges fetch the active ones.
CREATE TABLE blocks (
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
CREATE UNIQUE INDEX blocks_active
    ON blocks (coalesce(campaign_id, -1), coalesce(link_id, -1), coalesce(destination_host, ''))
    WHERE unblocked_at IS NULL;

-- Erased contacts: a keyed hash of each id (collector/contacts.py), never the id, checked at ingest so that
-- a late click of an erased contact is stored as an anonymous click.
CREATE TABLE erased_contacts (
    tombstone  bytea PRIMARY KEY,
    erased_at  timestamptz NOT NULL DEFAULT now()
);

-- Each erasure: when, by whom, the tombstone, and how many rows of each table went.
CREATE TABLE contact_erasures (
    id         bigserial PRIMARY KEY,
    tombstone  bytea NOT NULL,
    actor      text NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    removed    jsonb NOT NULL
);

-- Admin API keys: only a SHA-256 of the secret is kept.
CREATE TABLE api_keys (
    key_id       text PRIMARY KEY,
    name         text NOT NULL,
    secret_hash  bytea NOT NULL,
    scopes       text[] NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);

-- Report pages (/ui/): one-time sign-in URLs (`clickedge login-url`) and sessions. Only hashes of their
-- secrets are kept. A sign-in token is spent on first use; a session ends when it expires, is revoked (by
-- a write key or by signing out), or its API key is revoked.
CREATE TABLE ui_sign_in_tokens (
    token_hash  bytea PRIMARY KEY,
    scopes      text[] NOT NULL,
    next_path   text NOT NULL CHECK (length(next_path) <= 500),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE TABLE ui_sessions (
    session_id    text PRIMARY KEY,
    secret_hash   bytea NOT NULL,
    -- The API key it was signed in with; NULL for a one-time sign-in URL.
    key_id        text REFERENCES api_keys (key_id),
    name          text NOT NULL CHECK (length(name) <= 100),
    scopes        text[] NOT NULL,
    user_agent    text NOT NULL DEFAULT '' CHECK (length(user_agent) <= 200),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz,
    revoked_by    text CHECK (length(revoked_by) <= 200)
);

-- Each edge as the collectors have heard from it, for the status page: kept in memory per batch and written
-- every few seconds (collector/ui/edges.py), never in the batch's transaction.
CREATE TABLE edge_status (
    edge              text PRIMARY KEY CHECK (length(edge) <= 200),
    last_batch_at     timestamptz,
    -- Seconds from the oldest click of the last batch (at the edge) to its commit.
    last_lag_seconds  double precision,
    batches           bigint NOT NULL DEFAULT 0,
    clicks            bigint NOT NULL DEFAULT 0,
    -- Batches refused as never writable: the edge keeps them in its dead-letter file.
    rejected_batches  bigint NOT NULL DEFAULT 0,
    last_rejected_at  timestamptz,
    last_rejection    text CHECK (length(last_rejection) <= 300)
);
-- The status page counts failed deliveries.
CREATE INDEX webhook_outbox_failed ON webhook_outbox (failed_at) WHERE failed_at IS NOT NULL;

-- Creates the monthly partitions of clicks from `months_back` months before now to `months_ahead` after,
-- and one for every month that has rows in clicks_default (clicks that arrived before their month had a
-- partition: after a long outage, say). Such a month's partition is made as a plain table, the default
-- partition's rows for it are moved in, and it is attached; PostgreSQL cannot create a partition over
-- rows the default partition holds for its range. Safe to call often and from several collectors: it
-- takes a transaction-level advisory lock, and runs as one transaction.
CREATE OR REPLACE FUNCTION clickedge_ensure_click_partitions(months_back integer, months_ahead integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    this_month date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
    m date;
    name text;
    low timestamptz;
    high timestamptz;
    created integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('clickedge.click_partitions'));
    FOR m IN
        SELECT (this_month + make_interval(months => i))::date FROM generate_series(-months_back, months_ahead) i
        UNION
        SELECT date_trunc('month', clicked_at AT TIME ZONE 'UTC')::date FROM clicks_default
        ORDER BY 1
    LOOP
        name := format('clicks_%s', to_char(m, 'YYYY_MM'));
        CONTINUE WHEN to_regclass(name) IS NOT NULL;
        IF created = 0 THEN
            -- Creating a partition locks clicks anyway; locking it first (before clicks_default, as ingest
            -- does) means a concurrent batch waits instead of deadlocking with the move below.
            LOCK TABLE ONLY clicks IN ACCESS EXCLUSIVE MODE;
        END IF;
        low := m::timestamp AT TIME ZONE 'UTC';
        high := (m + interval '1 month')::timestamp AT TIME ZONE 'UTC';
        IF EXISTS (SELECT 1 FROM clicks_default WHERE clicked_at >= low AND clicked_at < high) THEN
            EXECUTE format('CREATE TABLE %I (LIKE clicks INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name);
            EXECUTE format(
                'WITH moved AS (DELETE FROM clicks_default WHERE clicked_at >= %L AND clicked_at < %L RETURNING *) '
                'INSERT INTO %I SELECT * FROM moved', low, high, name);
            EXECUTE format('ALTER TABLE clicks ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', name, low, high);
            RAISE NOTICE 'clickedge: moved rows of % from clicks_default into %', m, name;
        ELSE
            EXECUTE format('CREATE TABLE %I PARTITION OF clicks FOR VALUES FROM (%L) TO (%L)', name, low, high);
        END IF;
        created := created + 1;
    END LOOP;
    RETURN created;
END;
$$;

SELECT clickedge_ensure_click_partitions(1, 3);
