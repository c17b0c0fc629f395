-- sqitch change `job_output` (@2.0.0-alpha.3), column for column.
CREATE TABLE IF NOT EXISTS job_output (
    job_id character(32) NOT NULL
           REFERENCES jobs(id) ON UPDATE CASCADE ON DELETE CASCADE,
    node_name text NOT NULL,
    stdout text NOT NULL,
    stderr text NOT NULL,
    UNIQUE (job_id, node_name)
);
