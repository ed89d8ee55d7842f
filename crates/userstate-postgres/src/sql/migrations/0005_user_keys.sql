-- Crypto-shredding (ADR 0021): each user's data key, by `{instance}:{user}`; the row with the
-- empty id holds the instance-wide username secret. Erasure sets `key` to NULL: the row stays
-- so that the key is never made again.
CREATE TABLE user_keys (
    id  text  PRIMARY KEY,
    key bytea CHECK (key IS NULL OR length(key) = 32)
);
