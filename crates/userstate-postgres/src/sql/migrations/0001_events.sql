-- The event log. One row per event; `position` is assigned inside the committing transaction
-- while it holds the row lock on `position_counter` (see docs/adr/0002-postgres-positions.md),
-- so position order is commit order and `read_all` never skips a committed event.
CREATE TABLE events (
    instance    text        NOT NULL,
    stream      text        NOT NULL,
    sequence    bigint      NOT NULL CHECK (sequence > 0),
    position    bigint      NOT NULL CHECK (position > 0),
    created_at  timestamptz NOT NULL,
    type        text        NOT NULL,
    revision    integer     NOT NULL CHECK (revision BETWEEN 0 AND 65535),
    payload     jsonb       NOT NULL,
    metadata    jsonb       NOT NULL,
    event_id    uuid        NOT NULL,
    CONSTRAINT events_pkey PRIMARY KEY (instance, stream, sequence),
    CONSTRAINT events_position_key UNIQUE (position),
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);

-- The one-row counter whose row lock serialises position assignment.
CREATE TABLE position_counter (
    id    smallint PRIMARY KEY CHECK (id = 1),
    value bigint   NOT NULL CHECK (value >= 0)
);
INSERT INTO position_counter (id, value) VALUES (1, 0);
