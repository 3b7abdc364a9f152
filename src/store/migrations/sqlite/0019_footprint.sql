-- Version 19: a smaller store (issue 19).
--
-- Order keys packed (store::rows::pack_order_key): the two times as 8
-- bytes each, big-endian milliseconds since 1970 (0x8000000000000000 for
-- none), then the dedupe key's bytes; about half the bytes of the JSON
-- they replace. Every time Clientele writes has the form
-- `YYYY-MM-DDThh:mm:ss.SSSZ`.
UPDATE customers SET order_key = unhex(
    CASE WHEN order_key ->> '$.at' IS NULL THEN '8000000000000000'
         ELSE printf('%016x', unixepoch(substr(order_key ->> '$.at', 1, 19)) * 1000 + substr(order_key ->> '$.at', 21, 3)) END
    || CASE WHEN order_key ->> '$.sentAt' IS NULL THEN '8000000000000000'
            ELSE printf('%016x', unixepoch(substr(order_key ->> '$.sentAt', 1, 19)) * 1000 + substr(order_key ->> '$.sentAt', 21, 3)) END
    || hex(order_key ->> '$.dedupeKey'))
WHERE typeof(order_key) = 'text';
UPDATE merge_links SET order_key = unhex(
    CASE WHEN order_key ->> '$.at' IS NULL THEN '8000000000000000'
         ELSE printf('%016x', unixepoch(substr(order_key ->> '$.at', 1, 19)) * 1000 + substr(order_key ->> '$.at', 21, 3)) END
    || CASE WHEN order_key ->> '$.sentAt' IS NULL THEN '8000000000000000'
            ELSE printf('%016x', unixepoch(substr(order_key ->> '$.sentAt', 1, 19)) * 1000 + substr(order_key ->> '$.sentAt', 21, 3)) END
    || hex(order_key ->> '$.dedupeKey'))
WHERE typeof(order_key) = 'text';

-- The outbox's `id` loses its unique index and `created_at` its index: no
-- query looks an envelope up by its id (a random UUIDv7, unique where it
-- is made), and retention finds the last change before its cutoff by a
-- search over `seq` (store::sqlite::retention), as the one writer numbers
-- the changes in the order of their times. The two indexes held about a
-- fifth of the outbox's bytes. SQLite cannot drop a unique constraint: the
-- table is made again, its rows and its `seq` counter copied.
CREATE TABLE outbox_new (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT    NOT NULL,
    customer_id TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    created_at  TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    prev        INTEGER,
    codec       INTEGER NOT NULL DEFAULT 0
);
INSERT INTO outbox_new (seq, id, customer_id, source, action, version, created_at, body, prev, codec)
    SELECT seq, id, customer_id, source, action, version, created_at, body, prev, codec FROM outbox;
DELETE FROM sqlite_sequence WHERE name = 'outbox_new';
INSERT INTO sqlite_sequence (name, seq) SELECT 'outbox_new', seq FROM sqlite_sequence WHERE name = 'outbox';
DROP TABLE outbox;
ALTER TABLE outbox_new RENAME TO outbox;
