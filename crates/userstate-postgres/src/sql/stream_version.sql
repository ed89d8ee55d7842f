SELECT COALESCE(max(sequence), 0) FROM events WHERE instance = $1 AND stream = $2
