"""The gateway: the one door through which the outside reaches the suite."""
