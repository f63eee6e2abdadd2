-- Usage entries name the API key charged (the ledger entry's key_id field,
-- written by settle and lease_flush): restore rebuilds each key's spend
-- (its credit limit and its budget period) from it, and the usage export
-- lists it. NULL for entries that name no key (credits, and usage written
-- before the field existed).

-- +goose Up
ALTER TABLE journal ADD COLUMN key_id text;

-- +goose Down
ALTER TABLE journal DROP COLUMN key_id;
