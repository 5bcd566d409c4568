"""Test support: embedded PostgreSQL, per-test databases, in-process services."""
