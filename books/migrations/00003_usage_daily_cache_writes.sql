-- +goose NO TRANSACTION
-- Fills in usage_daily's cache writes (00002) from the journal, for the rows
-- counted before the shipper counted them: one month of the journal (one
-- partition) and a hundred accounts at a time, each slice in its own short
-- transaction (a procedure that commits after each), so that no lock is held
-- for longer than one slice's read of its accounts' entries (the journal's
-- primary key leads with the account).
--
-- The cutoff against the shipper, which adds the cache writes of the rows it
-- inserts (ON CONFLICT … DO UPDATE), is the shipper's own lock: a slice first
-- takes its accounts' shipping locks (pg_advisory_xact_lock on
-- 'tollgate.ship:<account>', waiting for a shipping transaction to end; a
-- shipper only tries it and skips the account meanwhile), so no entry of them
-- is shipped while it reads and writes; it then sets each row to the sum of
-- the journal's entries. Setting a sum, not adding to it: running it again
-- changes nothing.

-- +goose Up
-- +goose StatementBegin
CREATE OR REPLACE PROCEDURE tollgate_fill_cache_writes() LANGUAGE plpgsql AS $$
DECLARE
    m     timestamp;  -- the month's first day, UTC (timestamp: months of UTC, whatever the session's zone)
    last  timestamp;
    lo    timestamptz;
    hi    timestamptz;
    after text;
    ids   text[];
BEGIN
    SELECT date_trunc('month', min(day)::timestamp), max(day)::timestamp INTO m, last FROM usage_daily;
    COMMIT;
    WHILE m IS NOT NULL AND m <= last LOOP
        after := '';
        lo := m AT TIME ZONE 'UTC';
        hi := (m + interval '1 month') AT TIME ZONE 'UTC';
        LOOP
            SELECT array_agg(id ORDER BY id) INTO ids
                FROM (SELECT id FROM accounts WHERE id > after ORDER BY id LIMIT 100) x;
            EXIT WHEN ids IS NULL;
            after := ids[array_length(ids, 1)];
            PERFORM pg_advisory_xact_lock(hashtextextended('tollgate.ship:' || a, 0))
                FROM unnest(ids) WITH ORDINALITY AS u(a, i) ORDER BY i;
            UPDATE usage_daily u SET cache_write_tokens = j.w, cache_write_1h_tokens = j.w1h
            FROM (SELECT account, (at AT TIME ZONE 'UTC')::date AS day, model,
                    coalesce(sum((fields->>'cache_write_tokens')::int8), 0) AS w,
                    coalesce(sum((fields->>'cache_write_1h_tokens')::int8), 0) AS w1h
                  FROM journal
                  WHERE account = ANY(ids) AND at >= lo AND at < hi AND type = 'usage'
                  GROUP BY 1, 2, 3) j
            WHERE u.account = j.account AND u.day = j.day AND u.model = j.model
              AND (u.cache_write_tokens, u.cache_write_1h_tokens) IS DISTINCT FROM (j.w, j.w1h);
            COMMIT;
        END LOOP;
        m := m + interval '1 month';
    END LOOP;
END
$$;
-- +goose StatementEnd
CALL tollgate_fill_cache_writes();
DROP PROCEDURE IF EXISTS tollgate_fill_cache_writes();

-- +goose Down
SELECT 1;
