-- Version 6: the embedded store's 0008 (fan-out after the delivery's
-- transaction, claims over the lines' heads). Outbox rows commit out of
-- their `seq` order here, so the fan-out numbers the rows it takes
-- (`published`, under its lock) and the cursors follow that number.
CREATE TABLE fanout (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    position BIGINT  NOT NULL
);
ALTER TABLE outbox ADD COLUMN published BIGINT;
UPDATE outbox SET published = seq;
INSERT INTO fanout (id, position) SELECT 1, COALESCE(MAX(seq), 0) FROM outbox;
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published IS NULL;
CREATE INDEX outbox_published ON outbox (published) WHERE published IS NOT NULL;
ALTER TABLE subscriptions ADD COLUMN fanned_to BIGINT;
UPDATE subscriptions SET fanned_to = (SELECT position FROM fanout) WHERE NOT enabled;

UPDATE messages SET next_attempt_at = NULL
WHERE status = 'pending' AND next_attempt_at IS NOT NULL
  AND EXISTS (SELECT 1 FROM messages p
              WHERE p.subscription_id = messages.subscription_id AND p.customer_id = messages.customer_id
                AND p.status = 'pending' AND p.outbox_seq < messages.outbox_seq);
DROP INDEX messages_pending_due;
CREATE INDEX messages_heads ON messages (subscription_id, next_attempt_at, seq) WHERE status = 'pending' AND next_attempt_at IS NOT NULL;
