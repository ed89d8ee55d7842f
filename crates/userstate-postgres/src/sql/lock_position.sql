-- Taken first in every append transaction: the row lock serialises writers (of every process)
-- until commit, so positions are handed out in commit order. The timestamp is read under the
-- lock, so created_at never decreases along positions.
SELECT value, clock_timestamp() AS now FROM position_counter WHERE id = 1 FOR UPDATE
