-- Version 14: outbox envelopes kept compressed (store::compress), as
-- history entries since version 13: `codec` 0, the envelope as JSON text
-- (every envelope written before this version, and every redacted one);
-- otherwise `body` is a zstd frame made with that dictionary.
ALTER TABLE outbox ADD COLUMN codec INTEGER NOT NULL DEFAULT 0;
