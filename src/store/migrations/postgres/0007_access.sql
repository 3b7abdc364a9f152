-- Version 7: the embedded store's 0009: sources, their tokens and API keys as data (SPEC §9).
--
-- `access_version.version` moves with every change of a source or a
-- token: each instance polls it and reads the sources again when it moved.
CREATE TABLE access_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO access_version (id, version) VALUES (1, 0);

-- `spec`: the source's settings as JSON (store::sources::SourceSpec).
-- `version`: the `access_version` of its last change (or its tokens'),
-- so that an instance reads only what changed since it last looked.
-- `release_until`: the lease of the releaser applying its held deliveries.
CREATE TABLE sources (
    name          TEXT PRIMARY KEY,
    spec          TEXT NOT NULL,
    enabled       BOOLEAN NOT NULL,
    created_at    TEXT NOT NULL,
    version       BIGINT NOT NULL,
    release_until TEXT
);
CREATE INDEX sources_version ON sources (version);

-- Deleted sources, at the version of their deletion.
CREATE TABLE source_tombstones (
    name    TEXT PRIMARY KEY,
    version BIGINT NOT NULL
);

-- Tokens as SHA-256 digests; `secret` only for Standard Webhooks sources,
-- whose HMAC needs the key itself.
CREATE TABLE source_tokens (
    id           TEXT PRIMARY KEY,
    source       TEXT NOT NULL,
    digest       TEXT NOT NULL,
    secret       TEXT,
    created_at   TEXT NOT NULL,
    expires_at   TEXT,
    last_used_at TEXT
);
CREATE INDEX source_tokens_source ON source_tokens (source);

-- The deliveries of paused sources, in arrival order.
CREATE TABLE held (
    seq         BIGSERIAL PRIMARY KEY,
    source      TEXT NOT NULL,
    dedupe_key  TEXT NOT NULL,
    received_at TEXT NOT NULL,
    headers     TEXT NOT NULL,
    body        BYTEA NOT NULL
);
CREATE INDEX held_source ON held (source, seq);

-- Deliveries per source, hour (`YYYY-MM-DDTHH`) and outcome, added to by
-- each instance's flush.
CREATE TABLE source_stats (
    source  TEXT NOT NULL,
    hour    TEXT NOT NULL,
    outcome TEXT NOT NULL,
    count   BIGINT NOT NULL,
    PRIMARY KEY (source, hour, outcome)
);

CREATE TABLE source_last_delivery (
    source TEXT PRIMARY KEY,
    at     TEXT NOT NULL
);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    digest     TEXT NOT NULL UNIQUE,
    scopes     TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE audit (
    seq    BIGSERIAL PRIMARY KEY,
    at     TEXT NOT NULL,
    key_id TEXT,
    action TEXT NOT NULL,
    target TEXT NOT NULL
);
