-- Appends one group-commit batch in a single call, so a batch costs one round trip
-- (BEGIN; SELECT append_batch(...); COMMIT are pipelined) and the position lock is held only
-- while the server works and the commit flushes — never across a client round trip.
--
-- Requests are given as parallel arrays, at most one request per stream (the writer defers a
-- second request for a stream to the next batch); r_expected is -1 for "any", 0 for "no
-- stream", n for "exactly n". Events are given in request order with their request index
-- (1-based) and their offset within it (1-based). Returns one row per request: the stream's
-- version before the batch, and the first position given to it (NULL: refused, nothing
-- written). o_created_at is the commit time read under the lock.
CREATE FUNCTION append_batch(
    r_instance text[], r_stream text[], r_expected bigint[], r_count int[],
    e_request int[], e_offset int[], e_type text[], e_revision int[], e_payload jsonb[],
    e_metadata jsonb[], e_id uuid[], e_created timestamptz[], channel text
) RETURNS TABLE (o_request int, o_actual bigint, o_first_position bigint, o_created_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    base bigint;
    ts timestamptz;
    head bigint;
BEGIN
    -- Serialises every writer of every process until this transaction ends: positions are
    -- handed out in commit order, and the versions read below cannot change under us.
    SELECT c.value, clock_timestamp() INTO base, ts
    FROM position_counter c WHERE c.id = 1 FOR UPDATE;

    RETURN QUERY
    WITH req AS (
        SELECT r.ord::int AS request, r.i, r.s, r.expected, r.n,
               COALESCE((SELECT e.sequence FROM events e
                         WHERE e.instance = r.i AND e.stream = r.s
                         ORDER BY e.sequence DESC LIMIT 1), 0) AS actual
        FROM unnest(r_instance, r_stream, r_expected, r_count)
             WITH ORDINALITY AS r(i, s, expected, n, ord)
    ), placed AS (
        SELECT q.*, (q.expected < 0 OR q.expected = q.actual) AS ok,
               base + COALESCE(sum(CASE WHEN q.expected < 0 OR q.expected = q.actual
                                        THEN q.n ELSE 0 END)
                   OVER (ORDER BY q.request ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)
                   AS before
        FROM req q
    ), inserted AS (
        INSERT INTO events (instance, stream, sequence, position, created_at, type, revision,
                            payload, metadata, event_id)
        SELECT p.i, p.s, p.actual + x.k, p.before + x.k, COALESCE(x.c, ts), x.t, x.r, x.pl,
               x.m, x.id
        FROM unnest(e_request, e_offset, e_type, e_revision, e_payload, e_metadata, e_id,
                    e_created) AS x(req, k, t, r, pl, m, id, c)
        JOIN placed p ON p.request = x.req
        WHERE p.ok
    )
    SELECT p.request, p.actual, CASE WHEN p.ok THEN p.before + 1 END, ts
    FROM placed p ORDER BY p.request;

    SELECT COALESCE(max(e.position), base) INTO head FROM events e WHERE e.position > base;
    IF head > base THEN
        UPDATE position_counter SET value = head WHERE id = 1;
        -- Delivered when (and only if) the transaction commits.
        PERFORM pg_notify(channel, head::text);
    END IF;
END
$$;
