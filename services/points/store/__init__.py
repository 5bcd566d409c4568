"""SQL of the points service (schema `points`), by topic."""
