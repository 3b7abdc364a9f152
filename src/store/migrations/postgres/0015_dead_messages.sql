-- Version 15: dead messages (SPEC §13). The console's overview counts
-- them, at most 1,001, from this index alone: a count bounded by the
-- dead rows, never a scan of the messages.
CREATE INDEX messages_dead ON messages (seq) WHERE status = 'dead';
