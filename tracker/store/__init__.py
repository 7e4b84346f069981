"""The store: every SQL statement the tracker runs, on SQLite or PostgreSQL."""
