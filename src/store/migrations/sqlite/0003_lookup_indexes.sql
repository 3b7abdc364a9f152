-- Version 3: lookup rows are found by their key and customer id, both known
-- from the record, when they change and when the customer is erased. An
-- index by customer alone cost every new phone or business id one more
-- random page written, and served no query.
DROP INDEX customer_phones_customer;
DROP INDEX customer_businesses_customer;
