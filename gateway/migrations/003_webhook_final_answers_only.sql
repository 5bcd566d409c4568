-- Only answers a retry cannot change are kept for replays now (success, INVALID_ARGUMENT,
-- ALREADY_EXISTS; gateway/webhook_endpoint.py). Rows kept before that for a state-dependent
-- refusal (FAILED_PRECONDITION MEMBER_UNKNOWN, NOT_FOUND, ABORTED) would answer the sender's
-- retry with the old refusal forever: drop them, so the retry reaches points again. The
-- bodies are the gateway's compact JSON, where the gRPC code name reads `"status":"NAME"`.
DELETE FROM gateway.webhook_deliveries
WHERE response_status <> 200
  AND position('"status":"INVALID_ARGUMENT"'::bytea IN response_body) = 0
  AND position('"status":"ALREADY_EXISTS"'::bytea IN response_body) = 0;
