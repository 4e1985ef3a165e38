-- Migration 0005 (7047157, 480e207; webhook hardening, issue 11): a signing secret per webhook endpoint,
-- and an index for a link's deliveries.

-- Every URL a webhook action names is an endpoint with its own signing secret,
-- HMAC-SHA256(master webhook secret, 'endpoint:<id>:<generation>'), derived by the collector and never
-- stored. Rotating an endpoint moves it to the next generation. Endpoints are made when an action list
-- first names a URL (and by the deliverer for a URL that has none yet).
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    id          bigserial PRIMARY KEY,
    url         text NOT NULL UNIQUE,
    generation  integer NOT NULL DEFAULT 1 CHECK (generation >= 1),
    created_at  timestamptz NOT NULL DEFAULT now(),
    rotated_at  timestamptz
);
-- Webhook URLs set before endpoints existed, on links and in deliveries still pending.
INSERT INTO webhook_endpoints (url)
SELECT url FROM (
    SELECT a->>'url' AS url FROM links, jsonb_array_elements(actions) AS a WHERE a->>'type' = 'webhook'
    UNION
    SELECT url FROM webhook_outbox WHERE delivered_at IS NULL AND failed_at IS NULL
) AS named WHERE url IS NOT NULL ORDER BY url
ON CONFLICT (url) DO NOTHING;

-- A link's webhook deliveries, for GET /v1/campaigns/{id}/links/{link}/webhooks: the body names them.
CREATE INDEX IF NOT EXISTS webhook_outbox_link ON webhook_outbox
    (((body->'campaign'->>'id')::bigint), ((body->'link'->>'id')::bigint), id);
