-- Version 21: content hashes kept as digests (issue 19). A dedupe key
-- `sha256:` and 64 lowercase hex digits (the key of every body without an
-- event id) is kept as the byte 0xff, which no UTF-8 text holds, then its
-- 32 bytes; every other key as its UTF-8 bytes, a BLOB
-- (store::rows::pack_dedupe_key), in `events` and after the two times of
-- each packed order key (migration 19). Statements compare the keys as
-- kept, byte for byte. (`||` makes text of blobs: each key is made whole
-- in hex first.)
UPDATE events SET dedupe_key = unhex('ff' || substr(dedupe_key, 8))
WHERE typeof(dedupe_key) = 'text' AND length(dedupe_key) = 71 AND substr(dedupe_key, 1, 7) = 'sha256:'
  AND substr(dedupe_key, 8) NOT GLOB '*[^0-9a-f]*';
UPDATE events SET dedupe_key = CAST(dedupe_key AS BLOB) WHERE typeof(dedupe_key) = 'text';
UPDATE customers SET order_key = unhex(hex(substr(order_key, 1, 16)) || 'ff' || CAST(substr(order_key, 24) AS TEXT))
WHERE length(order_key) = 87 AND CAST(substr(order_key, 17, 7) AS TEXT) = 'sha256:'
  AND CAST(substr(order_key, 24) AS TEXT) NOT GLOB '*[^0-9a-f]*';
UPDATE merge_links SET order_key = unhex(hex(substr(order_key, 1, 16)) || 'ff' || CAST(substr(order_key, 24) AS TEXT))
WHERE length(order_key) = 87 AND CAST(substr(order_key, 17, 7) AS TEXT) = 'sha256:'
  AND CAST(substr(order_key, 24) AS TEXT) NOT GLOB '*[^0-9a-f]*';
