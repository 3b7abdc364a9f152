-- Version 13: history entries kept compressed (store::compress), as
-- `events.body` since version 11: `codec` 0, the entry as JSON text (every
-- entry written before this version); otherwise `entry` is a zstd frame
-- made with that dictionary.
ALTER TABLE history ADD COLUMN codec INTEGER NOT NULL DEFAULT 0;
