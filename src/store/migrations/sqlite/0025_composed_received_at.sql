-- Version 25: a history entry kept composed (store::sqlite::composed)
-- keeps when its event was received, Unix milliseconds, so that writing it
-- out reads nothing but its own row; NULL for every other entry.
ALTER TABLE history ADD COLUMN received_at INTEGER;
