-- Version 23: a customer's lookup keys (E.164 phones, business ids, the
-- words of its names), each with its lookup's prefix (`p:`, `b:`, `n:`),
-- in one row of the customer's, found by a GIN index, instead of a row a
-- key in three tables of two indexes each: in the benchmark (mostly new
-- customers) the keys took about 14 WAL records a delivery, and take 5 or
-- 6 now. The row is written only when a key changes, as the tables' rows
-- were.
CREATE TABLE customer_keys (
    customer_id TEXT PRIMARY KEY,
    keys        TEXT[] NOT NULL
);
-- GIN appends a row's keys to a pending list and merges the list into the
-- index when it passes gin_pending_list_limit (4 MB by default): the
-- writer that fills it pays for the merge, and a search reads the list.
-- 1 MB keeps both short: with 4 MB a group of deliveries waited for a
-- merge and ingest's p99 rose from about 70 to about 200 ms.
CREATE INDEX customer_keys_keys ON customer_keys USING gin (keys) WITH (gin_pending_list_limit = 1024);
INSERT INTO customer_keys (customer_id, keys)
SELECT customer_id, array_agg(key ORDER BY key)
FROM (SELECT customer_id, 'p:' || e164 AS key FROM customer_phones
      UNION ALL SELECT customer_id, 'b:' || business_id FROM customer_businesses
      UNION ALL SELECT customer_id, 'n:' || word FROM customer_names) k
GROUP BY customer_id;
DROP TABLE customer_phones, customer_businesses, customer_names;
