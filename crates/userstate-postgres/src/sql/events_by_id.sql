-- The events of an interrupted batch, to learn whether (and how) it committed.
SELECT stream, sequence, position, created_at, type, revision, payload, metadata, event_id, hash
FROM events
WHERE event_id = ANY($1)
ORDER BY position
