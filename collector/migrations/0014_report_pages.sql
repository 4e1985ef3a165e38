-- Migration 0014 (issue 16): the report pages' sign-in and sessions, and what the status page shows.
-- Report pages (/ui/): one-time sign-in URLs (`clickedge login-url`) and sessions. Only hashes of their
-- secrets are kept. A sign-in token is spent on first use; a session ends when it expires, is revoked (by
-- a write key or by signing out), or its API key is revoked.
CREATE TABLE IF NOT EXISTS ui_sign_in_tokens (
    token_hash  bytea PRIMARY KEY,
    scopes      text[] NOT NULL,
    next_path   text NOT NULL CHECK (length(next_path) <= 500),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS ui_sessions (
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
CREATE TABLE IF NOT EXISTS edge_status (
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
CREATE INDEX IF NOT EXISTS webhook_outbox_failed ON webhook_outbox (failed_at) WHERE failed_at IS NOT NULL;
