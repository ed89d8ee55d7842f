-- Waits for the position lock (taken by append_batch() in every append transaction) and so for
-- any append transaction still running, e.g. one whose connection was lost during COMMIT.
SELECT value, clock_timestamp() AS now FROM position_counter WHERE id = 1 FOR UPDATE
