-- Version 17: order keys packed (issue 19), as the embedded store keeps
-- them (store::rows::pack_order_key): the two times as 8 bytes each,
-- big-endian milliseconds since 1970 (the lowest bigint for none), then
-- the dedupe key's UTF-8 bytes; about half the bytes of the JSON they
-- replace.
CREATE FUNCTION pg_temp.packed_order_key(k text) RETURNS bytea LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT int8send(COALESCE((extract(epoch FROM (k::jsonb ->> 'at')::timestamptz) * 1000)::bigint,
                             '-9223372036854775808'::bigint))
        || int8send(COALESCE((extract(epoch FROM (k::jsonb ->> 'sentAt')::timestamptz) * 1000)::bigint,
                             '-9223372036854775808'::bigint))
        || convert_to(k::jsonb ->> 'dedupeKey', 'UTF8')
$$;
ALTER TABLE customers ALTER COLUMN order_key TYPE bytea USING pg_temp.packed_order_key(order_key);
ALTER TABLE merge_links ALTER COLUMN order_key TYPE bytea USING pg_temp.packed_order_key(order_key);
