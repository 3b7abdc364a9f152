-- Clientele's Postgres store, version 1: the tables of the embedded store's
-- 0001, in Postgres types. Times are RFC 3339 text (UTC, milliseconds),
-- which sorts as it reads; JSON documents are text, kept byte for byte.

-- Every delivery kept (the inbox). `body` is the raw request body after
-- gunzip.
CREATE TABLE events (
    seq         BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          TEXT    NOT NULL UNIQUE,
    source      TEXT    NOT NULL,
    dedupe_key  TEXT    NOT NULL,
    received_at TEXT    NOT NULL,
    headers     TEXT    NOT NULL,
    body        BYTEA,
    status      TEXT    NOT NULL,          -- accepted | quarantined | ignored
    reason      TEXT,
    outcome     TEXT,                      -- applied | stale | unchanged
    customer_id TEXT,
    duplicates  BIGINT  NOT NULL DEFAULT 0,
    redacted    BOOLEAN NOT NULL DEFAULT FALSE,
    -- What makes a retry a duplicate, also when two instances race.
    UNIQUE (source, dedupe_key)
);
CREATE INDEX events_status ON events (status, seq);

-- The directory: one row per customer. `profile` is the applied snapshot.
CREATE SEQUENCE customers_change_seq;
CREATE TABLE customers (
    id          TEXT   PRIMARY KEY,
    source      TEXT   NOT NULL,
    external_id TEXT   NOT NULL,
    account     TEXT,
    email       TEXT,
    status      TEXT   NOT NULL,
    profile     TEXT   NOT NULL,
    order_key   TEXT,                      -- NULL: a merge stub no snapshot reached
    merged_into TEXT,
    merged_from TEXT   NOT NULL,
    version     BIGINT NOT NULL,
    changed_at  TEXT   NOT NULL,
    change_seq  BIGINT NOT NULL UNIQUE
);
CREATE INDEX customers_source_account ON customers (source, account);
CREATE INDEX customers_email ON customers (email);

CREATE TABLE customer_phones (
    e164        TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    PRIMARY KEY (e164, customer_id)
);
CREATE INDEX customer_phones_customer ON customer_phones (customer_id);

CREATE TABLE customer_businesses (
    business_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    PRIMARY KEY (business_id, customer_id)
);
CREATE INDEX customer_businesses_customer ON customer_businesses (customer_id);

-- Merge facts: `absorbed` was merged into `survivor`, as claimed by an event
-- with `order_key` (the highest such claim).
CREATE TABLE merge_links (
    survivor  TEXT NOT NULL,
    absorbed  TEXT NOT NULL,
    order_key TEXT NOT NULL,
    PRIMARY KEY (survivor, absorbed)
);
CREATE INDEX merge_links_absorbed ON merge_links (absorbed);

-- Each customer's history, in arrival order.
CREATE TABLE history (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    entry       TEXT NOT NULL
);
CREATE INDEX history_customer ON history (customer_id, seq);

-- Erased customer ids: deliveries for them are answered `suppressed`.
CREATE TABLE suppressions (
    customer_id TEXT PRIMARY KEY,
    erased_at   TEXT NOT NULL
);
