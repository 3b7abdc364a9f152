-- Version 15: records' profiles kept compressed (store::compress), as
-- history entries since version 13: `profile_codec` 0, the profile as JSON
-- text (every record written before this version); otherwise `profile` is
-- a zstd frame made with that dictionary.
ALTER TABLE customers ADD COLUMN profile_codec INTEGER NOT NULL DEFAULT 0;
