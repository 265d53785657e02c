-- PostgreSQL baseline for benches/load.rs: the same semantics as a vevee reserve+commit pair.
-- One balance row per user (remaining, reserved), one row per reservation (the hold), one ledger
-- row per step, and a grants table whose key makes a grant idempotent like vevee's externalRef.
DROP TABLE IF EXISTS ledger, reservations, grants, balances;

CREATE TABLE balances (
    user_id   text PRIMARY KEY,
    remaining bigint NOT NULL CHECK (remaining >= 0),
    reserved  bigint NOT NULL DEFAULT 0 CHECK (reserved >= 0)
);

CREATE TABLE reservations (
    id         bigserial PRIMARY KEY,
    user_id    text NOT NULL REFERENCES balances (user_id),
    amount     bigint NOT NULL,
    status     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE grants (
    user_id      text NOT NULL,
    external_ref text NOT NULL,
    amount       bigint NOT NULL,
    PRIMARY KEY (user_id, external_ref)
);

CREATE TABLE ledger (
    id             bigserial PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT now(),
    user_id        text NOT NULL,
    type           text NOT NULL,
    amount         bigint NOT NULL,
    reservation_id bigint
);
CREATE INDEX ledger_user ON ledger (user_id, id);
