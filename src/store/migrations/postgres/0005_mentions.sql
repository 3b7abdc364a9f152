-- Version 5: the embedded store's 0007 (what the kept bodies that the
-- directory does not link to a customer name, for erasure) in Postgres
-- types. Bodies kept before this version are not indexed.
CREATE TABLE event_mentions (
    key       TEXT   NOT NULL,
    event_seq BIGINT NOT NULL,
    PRIMARY KEY (key, event_seq)
);
CREATE INDEX event_mentions_event ON event_mentions (event_seq);
