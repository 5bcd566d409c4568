"""Pure rules and value types of the privacy service: no gRPC, SQL, clock or I/O."""
