-- Version 14: persons (SPEC §11). Ids, scores and evidence only, never a
-- customer's data: a person's profile is read from its customers' records.
--
-- `persons.doc`: `{"customerIds": [...], "links": [...]}`; `seq` orders
-- the persons by their last change (paging, `changedSince`).
CREATE TABLE persons (
    id         TEXT    PRIMARY KEY,
    doc        TEXT    NOT NULL,
    created_at TEXT    NOT NULL,
    changed_at TEXT    NOT NULL,
    seq        BIGINT  NOT NULL UNIQUE
);

-- Each resolved customer's person (none for a merged record), and the
-- version of the record resolved: a record whose version differs was
-- changed where the feed does not reach (a rebuild, an import without
-- publishing), and the resolver resolves it when it starts.
CREATE TABLE person_members (
    customer_id TEXT    PRIMARY KEY,
    person_id   TEXT,
    version     BIGINT  NOT NULL
);
CREATE INDEX person_members_person ON person_members (person_id);

-- Ids that joins absorbed, each with the person that holds its customers.
CREATE TABLE person_aliases (
    alias     TEXT PRIMARY KEY,
    person_id TEXT NOT NULL
);
CREATE INDEX person_aliases_person ON person_aliases (person_id);

-- Possible matches for an operator; `id` is derived from the pair.
CREATE TABLE person_reviews (
    seq        BIGSERIAL PRIMARY KEY,
    id         TEXT    NOT NULL UNIQUE,
    a          TEXT    NOT NULL,
    b          TEXT    NOT NULL,
    score      DOUBLE PRECISION NOT NULL,
    evidence   TEXT    NOT NULL,
    status     TEXT    NOT NULL,           -- open | decided
    decision   TEXT,                       -- link | separate
    created_at TEXT    NOT NULL,
    decided_at TEXT
);
CREATE INDEX person_reviews_status ON person_reviews (status, seq);
CREATE INDEX person_reviews_a ON person_reviews (a);
CREATE INDEX person_reviews_b ON person_reviews (b);

-- Operators' decisions, one per pair (the lower id first).
CREATE TABLE person_decisions (
    a          TEXT NOT NULL,
    b          TEXT NOT NULL,
    decision   TEXT NOT NULL,              -- link | separate
    decided_at TEXT NOT NULL,
    PRIMARY KEY (a, b)
);

-- Customers a decision queued for the resolver.
CREATE TABLE person_queue (
    seq         BIGSERIAL PRIMARY KEY,
    customer_id TEXT NOT NULL,
    queued_at   TEXT NOT NULL
);

-- The resolver: its position in the feed (the outbox's `published`), who holds
-- the lease and until when (Unix ms), and the last person `seq` given.
CREATE TABLE person_resolver (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    position    BIGINT  NOT NULL,
    holder      TEXT,
    lease_until BIGINT  NOT NULL,
    person_seq  BIGINT  NOT NULL
);
-- A store with customers already resolves them all when the resolver starts.
INSERT INTO person_resolver (id, position, holder, lease_until, person_seq)
    SELECT 1, COALESCE(MAX(published), 0), NULL, 0, 0 FROM outbox;

-- Subscriptions name the types of change they want (JSON): `customer`
-- (also when empty), `person`. A person's change is an outbox row whose
-- `source` is `@person`, a name no source can have.
ALTER TABLE subscriptions ADD COLUMN types TEXT NOT NULL DEFAULT '[]';
