-- The last sequence (0: none) of each (instance, stream) pair, read under the position lock.
SELECT s.instance, s.stream,
       COALESCE((SELECT e.sequence FROM events e
                 WHERE e.instance = s.instance AND e.stream = s.stream
                 ORDER BY e.sequence DESC LIMIT 1), 0) AS version
FROM unnest($1::text[], $2::text[]) AS s(instance, stream)
