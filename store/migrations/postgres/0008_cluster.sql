-- Ours: several server instances on one database (issue 14). The original's tables are
-- untouched; these are only read and written by instances running with [cluster].

-- One row per running instance. It holds the advisory lock (PUSHY_LOCK_CLASS, lock_key)
-- on a connection of its own for as long as it lives, and renews lease_until: a row
-- whose lock is free or whose lease lapsed is a dead instance.
CREATE TABLE IF NOT EXISTS pushy_instances (
    id text PRIMARY KEY,
    lock_key integer NOT NULL UNIQUE,
    zmq_host text NOT NULL,
    heartbeat_port integer NOT NULL,
    command_port integer NOT NULL,
    curve_public_key text NOT NULL,
    incarnation text NOT NULL,
    api_address text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    lease_until timestamptz NOT NULL
);
CREATE SEQUENCE IF NOT EXISTS pushy_instance_lock_keys;

-- Which instance drives each job. Written before the job row, so a live job always has
-- its owner; an owner that dies leaves the row for a survivor to claim.
CREATE TABLE IF NOT EXISTS pushy_job_owners (
    job_id text PRIMARY KEY,
    instance_id text NOT NULL
);

-- Which instance holds each connected node, and its availability, as that instance last
-- wrote it.
CREATE TABLE IF NOT EXISTS pushy_presence (
    org_id text NOT NULL,
    node_name text NOT NULL,
    instance_id text NOT NULL,
    available boolean NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, node_name)
);
CREATE INDEX IF NOT EXISTS pushy_presence_instance ON pushy_presence (instance_id);

-- The message path between instances: commands for nodes held elsewhere, those nodes'
-- news for a job's owner, job events for every instance's feeds. Writers hold one
-- advisory transaction lock while inserting, so ids are handed out in commit order and a
-- reader's cursor (the last id it read) never skips a row committed later.
CREATE TABLE IF NOT EXISTS pushy_bus (
    id bigserial PRIMARY KEY,
    target text NOT NULL,
    job_id text,
    body text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS pushy_bus_target ON pushy_bus (target, id);
-- News for a job's owner, found by job when its owner died (events are not news).
CREATE INDEX IF NOT EXISTS pushy_bus_news ON pushy_bus (job_id)
    WHERE job_id IS NOT NULL AND target NOT IN ('*', 'events');
