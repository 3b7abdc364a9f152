-- Version 22: outbox rows take their place in the feed (`published`) as
-- they are written, from this sequence, under a lock their transaction
-- holds until it ends, so that the numbers follow the commits; the
-- fan-out no longer numbers them in a second write of each row. Rows not
-- numbered yet are numbered here, in `seq` order, after those fanned out,
-- as the fan-out would have.
CREATE SEQUENCE outbox_places;
WITH n AS (
    SELECT seq, (SELECT position FROM fanout) + row_number() OVER (ORDER BY seq) AS published
    FROM outbox WHERE published IS NULL
)
UPDATE outbox o SET published = n.published FROM n WHERE o.seq = n.seq;
SELECT setval('outbox_places',
              GREATEST((SELECT position FROM fanout), (SELECT COALESCE(MAX(published), 0) FROM outbox)) + 1,
              false);
ALTER TABLE outbox ALTER COLUMN published SET NOT NULL;
DROP INDEX outbox_unpublished;
