-- Migration 0006 (e0a99e9; issue 11, item 18): one click's actions show in the order they ran.
-- An action's place in its link's list, so the timeline shows one click's actions in the order they ran
-- (rows from before this column: 0, and their id keeps the order).
ALTER TABLE contact_events ADD COLUMN IF NOT EXISTS position integer NOT NULL DEFAULT 0;
