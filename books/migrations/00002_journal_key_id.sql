-- Usage entries name the API key charged (the ledger entry's key_id field,
-- written by settle and lease_flush): restore rebuilds each key's spend
-- (its credit limit and its budget period) from it, and the usage export
-- lists it. NULL for entries that name no key (credits, and usage written
-- before the field existed).
--
-- usage_daily counts cache writes too, so that its input tokens are those of
-- the Redis day counters (input, cached input and cache writes): the daily
-- usage chart reads it when there are books. Existing rows are filled in from
-- the journal.

-- +goose Up
ALTER TABLE journal ADD COLUMN key_id text;
ALTER TABLE usage_daily ADD COLUMN cache_write_tokens int8 NOT NULL DEFAULT 0,
    ADD COLUMN cache_write_1h_tokens int8 NOT NULL DEFAULT 0;
UPDATE usage_daily u SET cache_write_tokens = j.w, cache_write_1h_tokens = j.w1h
FROM (SELECT account, (at AT TIME ZONE 'UTC')::date AS day, model,
        coalesce(sum((fields->>'cache_write_tokens')::int8), 0) AS w,
        coalesce(sum((fields->>'cache_write_1h_tokens')::int8), 0) AS w1h
      FROM journal WHERE type = 'usage' GROUP BY 1, 2, 3) j
WHERE u.account = j.account AND u.day = j.day AND u.model = j.model;

-- +goose Down
ALTER TABLE usage_daily DROP COLUMN cache_write_tokens, DROP COLUMN cache_write_1h_tokens;
ALTER TABLE journal DROP COLUMN key_id;
