-- Version 10: each claim of a message takes a new token (`claim`), and
-- its attempt is recorded against that token: a send that outlived its
-- lease, whose message another claim took since, keeps its attempt in the
-- list but no longer moves the message (its status, due time or lease).
ALTER TABLE messages ADD COLUMN claim INTEGER NOT NULL DEFAULT 0;
