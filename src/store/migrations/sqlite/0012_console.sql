-- Version 11: the console (SPEC §13).
--
-- Sessions by the SHA-256 of their cookie's id, with the SHA-256 of the
-- key they signed in with (looked up again on every request) and the
-- token their forms carry; times in Unix ms.
CREATE TABLE console_sessions (
    id_digest  TEXT PRIMARY KEY,
    credential TEXT NOT NULL,
    key_id     TEXT,
    csrf       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    seen_at    INTEGER NOT NULL
);
CREATE INDEX console_sessions_seen ON console_sessions (seen_at);

-- A customer's messages per subscription, for the customer's page.
CREATE INDEX messages_subscription_customer ON messages (subscription_id, customer_id, seq);
