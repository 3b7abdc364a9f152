-- Version 24: a review's evidence kept compressed (store::compress), as
-- persons' documents since version 20: `codec` 0, `evidence` is the JSON
-- text (every review written before this version, and evidence
-- compression would not shrink); otherwise a zstd frame made with that
-- dictionary.
ALTER TABLE person_reviews ADD COLUMN codec INTEGER NOT NULL DEFAULT 0;
