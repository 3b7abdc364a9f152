-- Version 23: event and envelope ids as 16 bytes (issue 19). An id that
-- Clientele made, `evt_` and a UUID's 32 lowercase hex digits, is kept as
-- those 16 bytes (a BLOB) in `events.id`, `history.event_id` and
-- `outbox.id`, rather than 36 characters in each row and in the index
-- that holds it (store::sqlite::ids); any other id stays text. The
-- columns keep their declared type: SQLite keeps a BLOB as it is.
UPDATE events SET id = unhex(substr(id, 5))
WHERE typeof(id) = 'text' AND length(id) = 36 AND substr(id, 1, 4) = 'evt_' AND substr(id, 5) NOT GLOB '*[^0-9a-f]*';
UPDATE history SET event_id = unhex(substr(event_id, 5))
WHERE typeof(event_id) = 'text' AND length(event_id) = 36 AND substr(event_id, 1, 4) = 'evt_'
  AND substr(event_id, 5) NOT GLOB '*[^0-9a-f]*';
UPDATE outbox SET id = unhex(substr(id, 5))
WHERE typeof(id) = 'text' AND length(id) = 36 AND substr(id, 1, 4) = 'evt_' AND substr(id, 5) NOT GLOB '*[^0-9a-f]*';
