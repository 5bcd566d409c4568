"""privacy: field encryption and keys, consent, data-subject requests, audit log."""
