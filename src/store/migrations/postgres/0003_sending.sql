-- Version 3: until when a message is being sent (Unix ms, the claim's
-- lease), cleared when its attempt is recorded. An erasure leaves such a
-- message pending, as its attempt is under way: the customer's `deleted`
-- message then waits behind it instead of overtaking it.
ALTER TABLE messages ADD COLUMN sending_until BIGINT;
