"""Shared plumbing of every service: config, database, server bootstrap, identity, errors, logs."""
