-- Version 11: raw bodies kept compressed (store::compress). `codec` says
-- how: 0, as received (every body kept before this version); otherwise
-- the id of the zstd dictionary the body was compressed with.
ALTER TABLE events ADD COLUMN codec INTEGER NOT NULL DEFAULT 0;
