-- The points schema; the ledger tables arrive with the points issue.
CREATE SCHEMA IF NOT EXISTS points;
