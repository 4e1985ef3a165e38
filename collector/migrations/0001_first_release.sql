-- Migration 0001: the first released schema, schema.sql as first committed (2dfa5f9, "Click path end to
-- end"), verbatim below this header. Databases made by any later commit's schema.sql contain it.

-- Clickedge database schema: the source of truth. Applied idempotently by `clickedge migrate` and
-- `clickedge up`, in one transaction under an advisory lock, so several collectors may apply it at once.

CREATE TABLE IF NOT EXISTS campaigns (
    campaign_id  bigint PRIMARY KEY CHECK (campaign_id BETWEEN 0 AND 4294967295),
    name         text NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- One row per placement of a link in a campaign's message (the same URL twice is two links).
CREATE TABLE IF NOT EXISTS links (
    campaign_id  bigint NOT NULL REFERENCES campaigns (campaign_id),
    link_id      bigint NOT NULL CHECK (link_id BETWEEN 0 AND 4294967295),
    destination  text NOT NULL CHECK (length(destination) <= 2048),
    placement    integer NOT NULL DEFAULT 0,
    name         text NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, link_id)
);

-- Every recorded click. Partitioned by month on clicked_at so retention drops whole partitions.
-- The primary key starts with contact_id so the table can later be distributed by contact (Citus needs
-- unique keys to include the distribution column) and includes clicked_at because a partitioned table's
-- keys must include the partition column. contact_id 0 means an anonymous click (no contact in the token).
-- A redelivered event has the same (contact_id, clicked_at, event_id), so it conflicts and is not re-applied.
CREATE TABLE IF NOT EXISTS clicks (
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
    PRIMARY KEY (contact_id, clicked_at, event_id)
) PARTITION BY RANGE (clicked_at);

-- Catches clicks whose time falls outside the monthly partitions made ahead of time.
CREATE TABLE IF NOT EXISTS clicks_default PARTITION OF clicks DEFAULT;

CREATE INDEX IF NOT EXISTS clicks_campaign_link ON clicks (campaign_id, link_id, clicked_at);

-- Per-link counters, kept at ingest from newly inserted rows only, in the click's transaction.
CREATE TABLE IF NOT EXISTS link_click_counts (
    campaign_id  bigint NOT NULL,
    link_id      bigint NOT NULL,
    clicks       bigint NOT NULL DEFAULT 0,
    last_click   timestamptz,
    PRIMARY KEY (campaign_id, link_id)
);

-- Creates the monthly partitions of clicks from `months_back` months before now to `months_ahead` after.
-- Safe to call often and from several collectors: it takes a transaction-level advisory lock.
CREATE OR REPLACE FUNCTION clickedge_ensure_click_partitions(months_back integer, months_ahead integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    first_month date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
    m date;
    name text;
    created integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('clickedge.click_partitions'));
    FOR i IN -months_back .. months_ahead LOOP
        m := (first_month + make_interval(months => i))::date;
        name := format('clicks_%s', to_char(m, 'YYYY_MM'));
        IF to_regclass(name) IS NULL THEN
            -- A partition cannot be attached over rows already in the default partition for its range.
            IF EXISTS (SELECT 1 FROM clicks_default
                       WHERE clicked_at >= (m::timestamp AT TIME ZONE 'UTC')
                         AND clicked_at < ((m + interval '1 month')::timestamp AT TIME ZONE 'UTC')) THEN
                RAISE NOTICE 'clickedge: rows for % are in clicks_default; partition % not created', m, name;
                CONTINUE;
            END IF;
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF clicks FOR VALUES FROM (%L) TO (%L)',
                name,
                m::timestamp AT TIME ZONE 'UTC',
                (m + interval '1 month')::timestamp AT TIME ZONE 'UTC');
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END;
$$;

SELECT clickedge_ensure_click_partitions(1, 3);
