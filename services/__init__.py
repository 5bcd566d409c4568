"""wallet-membership services."""
