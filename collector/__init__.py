"""The collector: exactly-once click ingest into PostgreSQL."""
