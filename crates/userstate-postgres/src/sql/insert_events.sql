-- One statement per batch: insert every accepted event, move the counter to the new head and
-- queue a notification that PostgreSQL delivers when (and only if) the transaction commits.
WITH inserted AS (
    INSERT INTO events (instance, stream, sequence, position, created_at, type, revision,
                        payload, metadata, event_id)
    SELECT i, s, q, p, c, t, r, pl, m, id
    FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::int[],
                $7::jsonb[], $8::jsonb[], $9::uuid[], $11::timestamptz[])
         AS x(i, s, q, p, t, r, pl, m, id, c)
), counter AS (
    UPDATE position_counter SET value = $10 WHERE id = 1
)
SELECT pg_notify($12, $10::text)
