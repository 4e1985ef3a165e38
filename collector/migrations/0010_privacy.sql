-- Migration 0010 (issue 15): privacy by default. A campaign may keep its clicks' full client addresses
-- (otherwise a click keeps its network: IPv4 /24, IPv6 /48), and may be anonymous (its clicks are stored
-- without their contact). Clicks stored before keep what they had.
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS anonymous boolean NOT NULL DEFAULT false;
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS full_client_ips boolean NOT NULL DEFAULT false;
