-- The durable books: PostgreSQL is the system of record; Redis the hot store.
-- Amounts are int8 milli-credits (mc), never floats.

-- +goose Up
CREATE TABLE accounts (
    id         text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- An account's control-plane records as Redis holds them (subscription,
-- auto-recharge settings, Stripe customer, API keys: metadata and the hash of
-- the secret, never the secret; payments), written before the change is
-- acknowledged; restore writes them back.
CREATE TABLE account_records (
    account    text NOT NULL REFERENCES accounts (id),
    name       text NOT NULL,  -- plan, ar, stripe, key:<id>, pay:<payment>
    fields     jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account, name)
);

-- API keys, queryable (the same facts as the key:<id> records).
CREATE TABLE api_keys (
    account      text NOT NULL REFERENCES accounts (id),
    id           text NOT NULL,
    hash         text NOT NULL,  -- SHA-256 of the secret, hex
    name         text NOT NULL DEFAULT '',
    credit_limit int8 NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL,
    revoked      boolean NOT NULL DEFAULT false,
    PRIMARY KEY (account, id)
);

-- Payments as sold and paid (purchases and auto-recharges), with what
-- refunds and disputes took back: reconcile matches the journal's purchases
-- against them.
CREATE TABLE payments (
    account      text NOT NULL REFERENCES accounts (id),
    ref          text NOT NULL,  -- checkout:<session>, the purchase entry's reference
    payment_id   text NOT NULL DEFAULT '',
    credits      int8 NOT NULL,  -- mc bought
    amount_minor int8 NOT NULL,
    currency     text NOT NULL,
    removed      int8 NOT NULL DEFAULT 0,  -- mc taken back by refunds and disputes
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account, ref)
);

-- Every ledger entry, append-only, exactly once: the primary key is the
-- entry's id in its account's Redis stream (ms-seq), and at is the entry id's
-- time, so that the partition of an entry never depends on anything else.
CREATE TABLE journal (
    account       text NOT NULL,
    at            timestamptz NOT NULL,  -- the entry id's milliseconds
    seq           int8 NOT NULL,         -- the entry id's sequence number
    type          text NOT NULL,
    amount        int8 NOT NULL,         -- signed mc
    balance_after int8 NOT NULL,
    ref           text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL,
    model         text NOT NULL DEFAULT '',
    fields        jsonb NOT NULL DEFAULT '{}',  -- everything else the entry recorded
    PRIMARY KEY (account, at, seq)
) PARTITION BY RANGE (at);

-- Entries outside every monthly partition (older than the books) land here;
-- monthly partitions are created ahead by migrate and the shipper.
CREATE TABLE journal_default PARTITION OF journal DEFAULT;

-- Where shipping stands per account: the last entry copied, in the same
-- transaction as the entries.
CREATE TABLE ship_cursor (
    account       text PRIMARY KEY,
    at            timestamptz NOT NULL,
    seq           int8 NOT NULL,
    balance_after int8 NOT NULL,
    entries       int8 NOT NULL DEFAULT 0,  -- entries shipped in all
    shipped_at    timestamptz NOT NULL DEFAULT now()
);

-- Usage per day, account and model (history and charts), added to in the
-- transaction that inserts the usage entries, from the rows really inserted.
CREATE TABLE usage_daily (
    account             text NOT NULL,
    day                 date NOT NULL,
    model               text NOT NULL,
    calls               int8 NOT NULL DEFAULT 0,
    input_tokens        int8 NOT NULL DEFAULT 0,
    cached_input_tokens int8 NOT NULL DEFAULT 0,
    output_tokens       int8 NOT NULL DEFAULT 0,
    reasoning_tokens    int8 NOT NULL DEFAULT 0,
    credits             int8 NOT NULL DEFAULT 0,  -- mc charged
    PRIMARY KEY (account, day, model)
);

-- +goose Down
DROP TABLE usage_daily;
DROP TABLE ship_cursor;
DROP TABLE journal;
DROP TABLE payments;
DROP TABLE api_keys;
DROP TABLE account_records;
DROP TABLE accounts;
