"""points: the double-entry points ledger (settlement, tiers, rewards). Health only for now."""
