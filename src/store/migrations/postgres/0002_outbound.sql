-- Outbound webhooks, version 2: the embedded store's 0002 in Postgres types.

CREATE TABLE subscriptions (
    id         TEXT    PRIMARY KEY,
    url        TEXT    NOT NULL,
    secret     TEXT    NOT NULL,
    actions    TEXT    NOT NULL,           -- JSON array; empty: every action
    sources    TEXT    NOT NULL,           -- JSON array; empty: every source
    enabled    BOOLEAN NOT NULL,
    created_at TEXT    NOT NULL
);

-- The transactional outbox: one row per change of the directory, committed
-- with the change. `id` is the envelope id every subscriber gets.
CREATE TABLE outbox (
    seq         BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          TEXT    NOT NULL UNIQUE,
    customer_id TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    version     BIGINT  NOT NULL,
    created_at  TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    redacted    BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX outbox_created ON outbox (created_at);
CREATE INDEX outbox_customer ON outbox (customer_id);

-- One outbox row to send to one subscription.
CREATE TABLE messages (
    seq             BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id              TEXT    NOT NULL UNIQUE,
    subscription_id TEXT    NOT NULL,
    outbox_seq      BIGINT  NOT NULL,
    customer_id     TEXT    NOT NULL,
    status          TEXT    NOT NULL,      -- pending | delivered | dead | cancelled
    failures        INTEGER NOT NULL DEFAULT 0,  -- failed attempts since the last (re)start
    generation      BIGINT  NOT NULL DEFAULT 0,  -- raised by each manual retry or replay
    next_attempt_at BIGINT,                -- Unix ms, while pending; also the claim lease
    UNIQUE (subscription_id, outbox_seq)
);
CREATE INDEX messages_pending_due ON messages (subscription_id, next_attempt_at) WHERE status = 'pending';
CREATE INDEX messages_pending_customer ON messages (subscription_id, customer_id, outbox_seq) WHERE status = 'pending';
CREATE INDEX messages_customer ON messages (customer_id) WHERE status = 'pending';
CREATE INDEX messages_subscription ON messages (subscription_id, seq);

CREATE TABLE attempts (
    seq         BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_seq BIGINT  NOT NULL,
    at          TEXT    NOT NULL,
    status_code INTEGER,
    error       TEXT,
    duration_ms BIGINT  NOT NULL
);
CREATE INDEX attempts_message ON attempts (message_seq);
