-- Version 12: outbox envelopes kept compressed (store::compress), as
-- history entries since version 11: a new envelope is `packed`, a zstd
-- frame made with dictionary `codec`, and `body` is NULL; envelopes
-- written before this version, and redacted ones, keep their JSON in
-- `body` (codec 0).
ALTER TABLE outbox ALTER COLUMN body DROP NOT NULL,
    ADD COLUMN packed BYTEA,
    ADD COLUMN codec SMALLINT NOT NULL DEFAULT 0;
