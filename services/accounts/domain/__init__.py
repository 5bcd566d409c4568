"""The pure rules and value types of accounts: no gRPC, no SQL, no clock, no I/O."""
