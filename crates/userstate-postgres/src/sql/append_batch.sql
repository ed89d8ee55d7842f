SELECT o_request, o_actual, o_first_position, o_created_at, o_hashes
FROM append_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
