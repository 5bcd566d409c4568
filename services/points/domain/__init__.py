"""Pure rules and value types of points: no grpc, asyncpg, protobuf, clock or I/O."""
