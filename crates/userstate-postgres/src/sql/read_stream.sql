SELECT stream, sequence, position, created_at, type, revision, payload, metadata, event_id, hash
FROM events
WHERE instance = $1 AND stream = $2 AND sequence >= $3
ORDER BY sequence
