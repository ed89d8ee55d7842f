-- append_batch of 0004, answering each request's chain hashes as one slice of the batch's
-- (its events are contiguous, in request order) instead of a scan of every event per request:
-- that scan was a third of the function's time for a batch of 64 one-event requests
-- (docs/PERFORMANCE.md, "Issue 29, session 13"). Same arguments, same answer.
CREATE OR REPLACE FUNCTION append_batch(
    r_instance text[], r_stream text[], r_expected bigint[], r_count int[],
    e_request int[], e_offset int[], e_type text[], e_revision int[], e_payload jsonb[],
    e_metadata jsonb[], e_id uuid[], e_created timestamptz[], e_content bytea[], channel text
) RETURNS TABLE (o_request int, o_actual bigint, o_first_position bigint,
                 o_created_at timestamptz, o_hashes bytea[])
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    base bigint;
    ts timestamptz;
    prev bytea;
    head bigint;
    q_actual bigint[];
    q_ok boolean[];
    q_before bigint[];
    e_hash bytea[];
    q_first int[];
    i int;
    r int;
BEGIN
    -- Serialises every writer of every process until this transaction ends: positions are
    -- handed out in commit order, and the versions read below cannot change under us.
    SELECT c.value, clock_timestamp(), c.head_hash INTO base, ts, prev
    FROM position_counter c WHERE c.id = 1 FOR UPDATE;

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
    )
    SELECT array_agg(p.actual ORDER BY p.request), array_agg(p.ok ORDER BY p.request),
           array_agg(p.before ORDER BY p.request)
    INTO q_actual, q_ok, q_before
    FROM placed p;

    -- Events come in request order, then offset order: that is position order.
    e_hash := array_fill(NULL::bytea, ARRAY[coalesce(array_length(e_request, 1), 0)]);
    q_first := array_fill(NULL::int, ARRAY[coalesce(array_length(r_instance, 1), 0)]);
    FOR i IN 1 .. coalesce(array_length(e_request, 1), 0) LOOP
        r := e_request[i];
        IF q_first[r] IS NULL THEN
            q_first[r] := i;
        END IF;
        IF q_ok[r] THEN
            prev := chain_link(prev, q_before[r] + e_offset[i], q_actual[r] + e_offset[i],
                               COALESCE(e_created[i], ts), e_id[i], e_revision[i], e_content[i]);
            e_hash[i] := prev;
        END IF;
    END LOOP;

    INSERT INTO events (instance, stream, sequence, position, created_at, type, revision,
                        payload, metadata, event_id, hash)
    SELECT r_instance[x.req], r_stream[x.req], q_actual[x.req] + x.k, q_before[x.req] + x.k,
           COALESCE(x.c, ts), x.t, x.r, x.pl, x.m, x.id, x.h
    FROM unnest(e_request, e_offset, e_type, e_revision, e_payload, e_metadata, e_id,
                e_created, e_hash) AS x(req, k, t, r, pl, m, id, c, h)
    WHERE q_ok[x.req];

    -- A request's events are contiguous: its hashes are one slice of e_hash.
    RETURN QUERY
    SELECT q.ord::int, q_actual[q.ord], CASE WHEN q_ok[q.ord] THEN q_before[q.ord] + 1 END, ts,
           CASE WHEN q_ok[q.ord] AND q_first[q.ord] IS NOT NULL
                THEN e_hash[q_first[q.ord] : q_first[q.ord] + r_count[q.ord] - 1] END
    FROM generate_series(1, coalesce(array_length(r_instance, 1), 0)) AS q(ord)
    ORDER BY q.ord;

    SELECT COALESCE(max(e.position), base) INTO head FROM events e WHERE e.position > base;
    IF head > base THEN
        UPDATE position_counter SET value = head, head_hash = prev WHERE id = 1;
        -- Delivered when (and only if) the transaction commits.
        PERFORM pg_notify(channel, head::text);
    END IF;
END
$$;
