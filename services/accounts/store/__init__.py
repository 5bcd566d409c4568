"""SQL of the accounts service (schema `accounts`), by topic; rows come back as domain types."""
