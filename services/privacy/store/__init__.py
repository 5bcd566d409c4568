"""The SQL of the privacy service (schema `privacy`), one module per topic, returning
domain types."""
