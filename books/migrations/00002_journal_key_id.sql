-- Usage entries name the API key charged (the ledger entry's key_id field,
-- written by settle and lease_flush): restore rebuilds each key's spend
-- (its credit limit and its budget period) from it, and the usage export
-- lists it. NULL for entries that name no key (credits, and usage written
-- before the field existed).
--
-- usage_daily counts cache writes too, so that its input tokens are those of
-- the Redis day counters (input, cached input and cache writes): the daily
-- usage chart reads it when there are books. Rows counted before are filled
-- in from the journal by 00003, a slice at a time.
--
-- Catalog changes only (a nullable column, constant defaults): the ACCESS
-- EXCLUSIVE locks they take are held for milliseconds, never for a scan.

-- +goose Up
ALTER TABLE journal ADD COLUMN key_id text;
ALTER TABLE usage_daily ADD COLUMN cache_write_tokens int8 NOT NULL DEFAULT 0,
    ADD COLUMN cache_write_1h_tokens int8 NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE usage_daily DROP COLUMN cache_write_tokens, DROP COLUMN cache_write_1h_tokens;
ALTER TABLE journal DROP COLUMN key_id;
