-- `read_all.sql` for a fold that borrows events (`EventStore::visit_all`): no metadata or event
-- id, and the payload as JSON text, parsed by the fold only where it needs it.
SELECT stream, sequence, position, created_at, type, revision, payload::text
FROM events
WHERE position >= $1
ORDER BY position
LIMIT $2
