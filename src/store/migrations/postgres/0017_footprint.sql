-- Version 17: order keys packed (issue 19), as the embedded store keeps
-- them (store::rows::pack_order_key): the two times as 8 bytes each,
-- big-endian milliseconds since 1970 (the lowest bigint for none), then
-- the dedupe key's UTF-8 bytes; about half the bytes of the JSON they
-- replace.
ALTER TABLE customers ALTER COLUMN order_key TYPE bytea USING
    int8send(COALESCE((extract(epoch FROM (order_key::jsonb ->> 'at')::timestamptz) * 1000)::bigint,
                      '-9223372036854775808'::bigint))
    || int8send(COALESCE((extract(epoch FROM (order_key::jsonb ->> 'sentAt')::timestamptz) * 1000)::bigint,
                         '-9223372036854775808'::bigint))
    || convert_to(order_key::jsonb ->> 'dedupeKey', 'UTF8');
ALTER TABLE merge_links ALTER COLUMN order_key TYPE bytea USING
    int8send(COALESCE((extract(epoch FROM (order_key::jsonb ->> 'at')::timestamptz) * 1000)::bigint,
                      '-9223372036854775808'::bigint))
    || int8send(COALESCE((extract(epoch FROM (order_key::jsonb ->> 'sentAt')::timestamptz) * 1000)::bigint,
                         '-9223372036854775808'::bigint))
    || convert_to(order_key::jsonb ->> 'dedupeKey', 'UTF8');
