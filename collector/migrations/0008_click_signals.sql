-- Migration 0008 (issue 14): the request headers that tell a browser's navigation from a fetcher's, per click.
-- common/signals.py says what the bits mean; clicks from before this column, or from an older edge, have NULL.
ALTER TABLE clicks ADD COLUMN IF NOT EXISTS signals integer;
ALTER TABLE refused_clicks ADD COLUMN IF NOT EXISTS signals integer;
