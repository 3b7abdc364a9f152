-- The version each customer had before a rebuild, kept until the rebuild
-- has finished: no change may reuse a version subscribers received.
CREATE TABLE version_floors (
    customer_id TEXT   PRIMARY KEY,
    version     BIGINT NOT NULL
);
