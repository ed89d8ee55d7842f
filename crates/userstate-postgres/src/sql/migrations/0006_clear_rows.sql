-- Rows written before crypto-shredding (ADR 0021, migration 0005) hold personal data in clear
-- and name username reservation streams in clear. They are left as they are (the chain of
-- migration 0004 covers them), and the last position of such a row is kept here: a store
-- with any (`clear_until > 0`) is not opened for service, whose erasure could not forget them
-- and whose hashed username lookup would not see them; it is upgraded by export and import
-- into a new database (docs/OPERATIONS.md, "Upgrading"). Zero for a store without any.
ALTER TABLE position_counter ADD COLUMN clear_until bigint NOT NULL DEFAULT 0;
UPDATE position_counter SET clear_until = (
    SELECT coalesce(max(position), 0) FROM events
    WHERE type IN ('user.human.added', 'username.reserved') AND NOT payload ? 'sealed'
);
