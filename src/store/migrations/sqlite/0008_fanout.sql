-- Version 8: the delivery's transaction writes only the outbox row; the
-- dispatcher fans the outbox out into messages afterwards, in batches, and
-- claims over the heads of the customers' lines.
--
-- `fanout.position`: the last outbox row fanned out to the subscriptions
-- that follow it. A subscription's `fanned_to` is NULL while it follows;
-- a disabled one stops at the position it was disabled at, and once
-- enabled again catches up from there (it has the changes it missed).
CREATE TABLE fanout (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    position INTEGER NOT NULL
);
INSERT INTO fanout (id, position) SELECT 1, COALESCE(MAX(seq), 0) FROM outbox;
ALTER TABLE subscriptions ADD COLUMN fanned_to INTEGER;
UPDATE subscriptions SET fanned_to = (SELECT position FROM fanout) WHERE NOT enabled;

-- Only the head of a (subscription, customer) line has a due time: claims
-- read the heads' index and nothing else. Lines a manual retry during a
-- send left with two due messages are settled once, here.
UPDATE messages SET next_attempt_at = NULL
WHERE status = 'pending' AND next_attempt_at IS NOT NULL
  AND EXISTS (SELECT 1 FROM messages p
              WHERE p.subscription_id = messages.subscription_id AND p.customer_id = messages.customer_id
                AND p.status = 'pending' AND p.outbox_seq < messages.outbox_seq);
DROP INDEX messages_pending_due;
CREATE INDEX messages_heads ON messages (subscription_id, next_attempt_at) WHERE status = 'pending' AND next_attempt_at IS NOT NULL;
