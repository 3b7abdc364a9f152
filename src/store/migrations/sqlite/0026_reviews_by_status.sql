-- Version 26: `person_reviews` without its index by status. No statement
-- of the embedded store reads through it: the listing walks `seq` (its
-- status test, `($2 = '' OR status = $2)`, cannot use an index), a
-- decision finds its review by its customers (`person_reviews_a`), and
-- the reviews touching customers go by `_a` and `_b`. It held about 8
-- bytes a kept event on the benchmark's mix.
DROP INDEX person_reviews_status;
