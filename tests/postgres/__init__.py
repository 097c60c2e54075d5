"""PostgreSQL-only tests: ordering for tailing readers, retries, several worker processes."""
