"""The `membership` operator command."""
