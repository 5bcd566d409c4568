-- Issue 12. A fulfilment that stopped at a refused step (or whose retries ran out) records
-- why, for the officer: step, service, status code, reason, field names; never a value.
-- Rejections and cancellations carry an idempotency key: a request is closed once, so the
-- key and the fingerprint of the closing call live on the request itself.
ALTER TABLE privacy.data_requests
    ADD COLUMN step_failure       jsonb,
    ADD COLUMN close_request_id   text,
    ADD COLUMN close_request_hash bytea;
