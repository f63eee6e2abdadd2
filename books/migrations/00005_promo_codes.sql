-- Promotional codes (metering.PromoCode), written before Redis so that a
-- restore brings them back; who redeemed each is in the journal (promo_grant
-- entries, ref promo:<code>).

-- +goose Up
CREATE TABLE promo_codes (
    code            text PRIMARY KEY,
    credits         int8 NOT NULL CHECK (credits > 0),  -- mc per redemption
    max_redemptions int8 NOT NULL DEFAULT 0,             -- 0: no bound
    expires_at      timestamptz,                         -- null: never
    grant_ttl_ms    int8 NOT NULL DEFAULT 0,             -- 0: grants never expire
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE promo_codes;
