-- Version 8: the embedded store's 0010. Each claim of a message takes a
-- new token (`claim`), and its attempt is recorded against that token: a
-- send that outlived its lease, whose message another instance claimed
-- since, keeps its attempt in the list but no longer moves the message.
ALTER TABLE messages ADD COLUMN claim BIGINT NOT NULL DEFAULT 0;
