-- Version 18: customers found by name (SPEC §13): one row per word of a
-- customer's names, folded (see `rows::name_words`), like the phone and
-- business lookups. Profiles are kept compressed, out of SQL's reach, so
-- the rows of the customers already kept are written at start-up, in
-- batches, from the position `backfills` holds (the row goes when done).
CREATE TABLE customer_names (
    word        TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    PRIMARY KEY (word, customer_id)
) WITHOUT ROWID;

CREATE TABLE backfills (
    name  TEXT PRIMARY KEY,
    after TEXT NOT NULL
) WITHOUT ROWID;
INSERT INTO backfills (name, after) SELECT 'customer_names', '' WHERE EXISTS (SELECT 1 FROM customers);
