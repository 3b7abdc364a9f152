-- Version 7: what the kept bodies that the directory does not link to a
-- customer name (ignored event types such as appointments, bodies
-- quarantined before a customer id could be read): a key per platform
-- customer id, email and E.164 phone, a SHA-256 of it with its kind and
-- source, so that an erasure finds those bodies without reading every one.
-- Bodies kept before this version are not indexed.
CREATE TABLE event_mentions (
    key       TEXT    NOT NULL,
    event_seq INTEGER NOT NULL,
    PRIMARY KEY (key, event_seq)
) WITHOUT ROWID;
CREATE INDEX event_mentions_event ON event_mentions (event_seq);
