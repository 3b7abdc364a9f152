-- Version 11: history entries kept compressed (store::compress), as
-- `events.body` since version 9: a new entry is `packed`, a zstd frame
-- made with dictionary `codec`, and `entry` is NULL; the entries written
-- before this version keep their JSON in `entry` (codec 0).
ALTER TABLE history ALTER COLUMN entry DROP NOT NULL,
    ADD COLUMN packed BYTEA,
    ADD COLUMN codec SMALLINT NOT NULL DEFAULT 0;
