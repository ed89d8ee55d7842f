-- Safe without any visibility filter: positions are assigned in commit order (see
-- lock_position.sql), so every statement snapshot holds a gap-free prefix of the log.
SELECT stream, sequence, position, created_at, type, revision, payload, metadata, event_id, hash
FROM events
WHERE position >= $1
ORDER BY position
LIMIT $2
