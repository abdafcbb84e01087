-- weft's schema on PostgreSQL (15 and later). Plain tables, btree indexes,
-- `ON CONFLICT`, `FOR UPDATE SKIP LOCKED` and LISTEN/NOTIFY only, so that
-- the Postgres-wire databases can follow.

-- One row per instance: what `InstanceRecord` holds, and who runs it.
CREATE TABLE weft_instances (
    id          text PRIMARY KEY,
    workflow    text NOT NULL,
    -- `sha256:<hex>` of the component the instance is pinned to.
    digest      text NOT NULL,
    input       text NOT NULL,
    status      text NOT NULL,
    output      text,
    -- `ErrorInfo` as JSON.
    error       text,
    created_ms  bigint NOT NULL,
    updated_ms  bigint NOT NULL,
    parent      text,
    seed        bigint NOT NULL,
    -- The host whose lease covers the instance, and until when.
    owner       text,
    lease_until_ms bigint,
    -- Raised each time a host takes the instance; every write of the
    -- instance's journal names the epoch its writer holds (fencing).
    epoch       bigint NOT NULL DEFAULT 0,
    -- When an unowned, unfinished instance is next due (null: now).
    wake_ms     bigint
);
CREATE INDEX weft_instances_status ON weft_instances (status, id);

-- The ordered history of an instance: `Entry` as JSON.
CREATE TABLE weft_entries (
    instance_id text NOT NULL,
    seq         bigint NOT NULL,
    entry       text NOT NULL,
    PRIMARY KEY (instance_id, seq)
);

-- Events buffered for an instance and not yet delivered.
CREATE TABLE weft_inbox (
    seq         bigserial PRIMARY KEY,
    instance_id text NOT NULL,
    event_type  text NOT NULL,
    -- `EventRecord` as JSON.
    event       text NOT NULL
);
CREATE INDEX weft_inbox_instance ON weft_inbox (instance_id, event_type, seq);

-- Components by digest, so that every host can load every version.
CREATE TABLE weft_components (
    digest      text PRIMARY KEY,
    bytes       bytea NOT NULL,
    created_ms  bigint NOT NULL
);
