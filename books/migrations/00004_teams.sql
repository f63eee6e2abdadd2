-- Teams: an account's members and the audit log of member and key changes.

-- +goose Up
-- Members, queryable (the same facts as the "members" record, which restore
-- writes back): replaced as a whole on every member change.
CREATE TABLE members (
    account    text NOT NULL REFERENCES accounts (id),
    "user"     text NOT NULL,
    role       text NOT NULL CHECK (role IN ('owner', 'admin', 'billing', 'member')),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account, "user")
);

-- Every member and key change, append-only; Redis keeps only the newest.
-- id is the entry's id in the account's Redis audit stream (ms-seq).
CREATE TABLE audit_log (
    account    text NOT NULL REFERENCES accounts (id),
    id         text NOT NULL,
    actor      text NOT NULL,
    action     text NOT NULL,
    target     text NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (account, id)
);

-- The member who created a key ('' : the account itself or an operator).
ALTER TABLE api_keys ADD COLUMN created_by text NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE api_keys DROP COLUMN created_by;
DROP TABLE audit_log;
DROP TABLE members;
