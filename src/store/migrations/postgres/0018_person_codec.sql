-- Version 18: persons' documents kept compressed (store::compress), as
-- records' profiles since version 13: a person written since keeps its
-- document in `packed`, a zstd frame made with dictionary `codec` (or the
-- JSON's bytes, codec 0, when compression would not shrink it), and `doc`
-- is NULL; persons written before keep their JSON in `doc` (codec 0).
ALTER TABLE persons ALTER COLUMN doc DROP NOT NULL,
    ADD COLUMN packed BYTEA,
    ADD COLUMN codec SMALLINT NOT NULL DEFAULT 0;

-- No statement looks members up by their person (persons are found by
-- their customers, `person_members`' key): its index held about half of
-- the table's bytes.
DROP INDEX person_members_person;
