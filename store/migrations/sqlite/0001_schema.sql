-- The PostgreSQL schema (migrations/postgres, 0001 to 0006) in SQLite's types. There is
-- no older database to adopt, so it is one migration. Ids are TEXT; timestamps are TEXT
-- 'YYYY-MM-DD HH:MM:SS' in UTC, which sorts chronologically; booleans are 0/1.
-- STRICT makes SQLite refuse a value of the wrong type, as PostgreSQL would.

CREATE TABLE job_status (
    id INTEGER NOT NULL PRIMARY KEY,
    description TEXT NOT NULL
) STRICT;

INSERT INTO job_status (id, description) VALUES
  (0, 'voting'),
  (1, 'running'),
  (2, 'complete'),
  (3, 'quorum_failed'),
  (4, 'aborted'),
  (5, 'new'),
  (6, 'timed_out'),
  (7, 'crashed');

CREATE TABLE jobs (
    id TEXT NOT NULL PRIMARY KEY,
    org_id TEXT NOT NULL,
    command TEXT NOT NULL,
    status INTEGER NOT NULL REFERENCES job_status(id),
    run_timeout INTEGER,
    last_updated_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    quorum INTEGER
) STRICT;

CREATE INDEX jobs_org_id_created_at_idx ON jobs (org_id, created_at);

CREATE TABLE job_nodes (
    job_id TEXT REFERENCES jobs(id) ON UPDATE CASCADE ON DELETE CASCADE,
    org_id TEXT NOT NULL,
    node_name TEXT NOT NULL,
    status INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    position INTEGER,
    UNIQUE (job_id, org_id, node_name)
) STRICT;

-- The length check stands in for PostgreSQL's character(32), which refuses longer names.
CREATE TABLE job_options (
    job_id TEXT NOT NULL PRIMARY KEY
           REFERENCES jobs(id) ON UPDATE CASCADE ON DELETE CASCADE,
    job_user TEXT CHECK (length(job_user) <= 32),
    dir TEXT,
    env TEXT,
    capture INTEGER,
    job_file TEXT
) STRICT;

CREATE TABLE job_output (
    job_id TEXT NOT NULL
           REFERENCES jobs(id) ON UPDATE CASCADE ON DELETE CASCADE,
    node_name TEXT NOT NULL,
    stdout TEXT NOT NULL,
    stderr TEXT NOT NULL,
    UNIQUE (job_id, node_name)
) STRICT;
