-- Version 13: records' profiles kept compressed (store::compress), as
-- history entries since version 11: a record written since keeps its
-- profile `packed_profile`, a zstd frame made with dictionary
-- `profile_codec`, and `profile` is NULL; records written before keep
-- their JSON in `profile` (codec 0).
ALTER TABLE customers ALTER COLUMN profile DROP NOT NULL,
    ADD COLUMN packed_profile BYTEA,
    ADD COLUMN profile_codec SMALLINT NOT NULL DEFAULT 0;
