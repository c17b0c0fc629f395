-- sqitch change `job_nodes` (@1.0.0), column for column: `job_id` really is nullable and
-- there is no primary key. The constraint names are PostgreSQL's defaults, as in the
-- original (`job_nodes_job_id_fkey`, `job_nodes_job_id_org_id_node_name_key`).
CREATE TABLE IF NOT EXISTS job_nodes (
    job_id character(32) REFERENCES jobs(id) ON UPDATE CASCADE ON DELETE CASCADE,
    org_id character(32) NOT NULL,
    node_name text NOT NULL,
    UNIQUE (job_id, org_id, node_name),
    status integer NOT NULL,
    created_at timestamp without time zone NOT NULL,
    updated_at timestamp without time zone NOT NULL
);
