"""accounts: who a member is: registration, encrypted profile, lifecycle, referral codes."""
