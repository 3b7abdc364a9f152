-- Version 28: a person's id as 16 bytes (issue 19), as event ids since
-- version 23. The id Clientele makes for a person, `per_` and a UUID's 32
-- lowercase hex digits, is kept as those 16 bytes (a BLOB) in
-- `persons.id`, `person_members.person_id` and both columns of
-- `person_aliases`, and in their indexes, rather than 36 characters in
-- each (store::sqlite::ids); the columns keep their declared type. A
-- person's own changes in the outbox keep its id as text.
UPDATE persons SET id = unhex(substr(id, 5))
WHERE typeof(id) = 'text' AND length(id) = 36 AND substr(id, 1, 4) = 'per_' AND substr(id, 5) NOT GLOB '*[^0-9a-f]*';
UPDATE person_members SET person_id = unhex(substr(person_id, 5))
WHERE typeof(person_id) = 'text' AND length(person_id) = 36 AND substr(person_id, 1, 4) = 'per_'
  AND substr(person_id, 5) NOT GLOB '*[^0-9a-f]*';
UPDATE person_aliases SET alias = unhex(substr(alias, 5))
WHERE typeof(alias) = 'text' AND length(alias) = 36 AND substr(alias, 1, 4) = 'per_' AND substr(alias, 5) NOT GLOB '*[^0-9a-f]*';
UPDATE person_aliases SET person_id = unhex(substr(person_id, 5))
WHERE typeof(person_id) = 'text' AND length(person_id) = 36 AND substr(person_id, 1, 4) = 'per_'
  AND substr(person_id, 5) NOT GLOB '*[^0-9a-f]*';
