-- Migration 0007 (152bf71; issue 11, item 19): clicks far from the collector's clock are refused and kept
-- apart; partition maintenance moves the default partition's rows into their month's new partition.
-- (The runner calls clickedge_ensure_click_partitions after every migration run, so rows already waiting
-- in clicks_default are moved in this same transaction.)

-- Clicks the collector refused because of their time, with the values as the edge sent them: clicked
-- more than CLICKEDGE_COLLECTOR_MAX_CLOCK_SKEW ahead of the collector's clock (reason 'future': the edge's
-- clock is wrong) or more than CLICKEDGE_COLLECTOR_MAX_CLICK_AGE ago ('too_old'). Written with the rest of
-- their batch, once per event id; never in clicks or any report.
CREATE TABLE IF NOT EXISTS refused_clicks (
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
    received_at    timestamptz NOT NULL DEFAULT now()
);

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
