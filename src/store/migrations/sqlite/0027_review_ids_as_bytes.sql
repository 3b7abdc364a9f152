-- Version 27: a review's id as 12 bytes (issue 19), as event ids since
-- version 23. The id Clientele derives from a review's two customers,
-- `rev_` and 24 lowercase hex digits, is kept as those 12 bytes (a BLOB)
-- in `person_reviews.id` and its unique index, rather than 28 characters
-- in each (store::sqlite::ids); the column keeps its declared type.
UPDATE person_reviews SET id = unhex(substr(id, 5))
WHERE typeof(id) = 'text' AND length(id) = 28 AND substr(id, 1, 4) = 'rev_' AND substr(id, 5) NOT GLOB '*[^0-9a-f]*';
