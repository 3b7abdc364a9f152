-- Version 21: a review's evidence kept compressed (store::compress), as
-- persons' documents since version 18: a review written since keeps its
-- evidence in `packed`, a zstd frame made with dictionary `codec` (or the
-- JSON's bytes, codec 0, when compression would not shrink it); reviews
-- written before keep their JSON in `evidence` (codec 0).
ALTER TABLE person_reviews ALTER COLUMN evidence DROP NOT NULL,
    ADD COLUMN packed BYTEA,
    ADD COLUMN codec SMALLINT NOT NULL DEFAULT 0;
