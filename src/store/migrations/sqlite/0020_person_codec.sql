-- Version 20: persons' documents kept compressed (store::compress), as
-- records' profiles since version 15: `codec` 0, `doc` is the JSON text
-- (every person written before this version, and a document compression
-- would not shrink); otherwise `doc` is a zstd frame made with that
-- dictionary.
ALTER TABLE persons ADD COLUMN codec INTEGER NOT NULL DEFAULT 0;

-- No statement looks members up by their person (persons are found by
-- their customers, `person_members`' key): its index held about half of
-- the table's bytes.
DROP INDEX person_members_person;
