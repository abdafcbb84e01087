-- Many hosts on one store: each host's lease, and which epoch wrote each
-- journal entry (fencing, and an audit of who wrote what).

-- One row per live host. A host renews its lease well before
-- `lease_until_ms`; once that time has passed (by the database's clock),
-- other hosts may take the instances it owns.
CREATE TABLE weft_hosts (
    id          text PRIMARY KEY,
    -- The host's API (`http://host:port`), where other hosts forward
    -- operator requests for the instances it owns; null for `weft run`.
    api         text,
    started_ms  bigint NOT NULL,
    lease_until_ms bigint NOT NULL
);

-- The epoch of the instance's owner when the entry was written.
ALTER TABLE weft_entries ADD COLUMN epoch bigint;

-- Claims look for unfinished instances by owner.
CREATE INDEX weft_instances_owner ON weft_instances (owner);
