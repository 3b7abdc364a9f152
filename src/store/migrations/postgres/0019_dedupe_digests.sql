-- Version 19: content hashes kept as digests (issue 19). A dedupe key
-- `sha256:` and 64 lowercase hex digits (the key of every body without an
-- event id) is kept as the byte 0xff, which no UTF-8 text holds, then its
-- 32 bytes; every other key as its UTF-8 bytes (store::rows::pack_dedupe_key),
-- in `events` and after the two times of each packed order key
-- (migration 17). Statements compare the keys as kept, byte for byte.
ALTER TABLE events ALTER COLUMN dedupe_key TYPE bytea USING
    CASE WHEN dedupe_key ~ '^sha256:[0-9a-f]{64}$' THEN '\xff'::bytea || decode(substr(dedupe_key, 8), 'hex')
         ELSE convert_to(dedupe_key, 'UTF8') END;
UPDATE customers SET order_key = substring(order_key from 1 for 16) || '\xff'::bytea
                                 || decode(convert_from(substring(order_key from 24), 'UTF8'), 'hex')
WHERE length(order_key) = 87 AND substring(order_key from 17 for 7) = convert_to('sha256:', 'UTF8')
  AND convert_from(substring(order_key from 24), 'UTF8') ~ '^[0-9a-f]{64}$';
UPDATE merge_links SET order_key = substring(order_key from 1 for 16) || '\xff'::bytea
                                   || decode(convert_from(substring(order_key from 24), 'UTF8'), 'hex')
WHERE length(order_key) = 87 AND substring(order_key from 17 for 7) = convert_to('sha256:', 'UTF8')
  AND convert_from(substring(order_key from 24), 'UTF8') ~ '^[0-9a-f]{64}$';
