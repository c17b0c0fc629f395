-- sqitch change `job_status` (@1.0.0), made re-runnable so that a database deployed by the
-- original's sqitch plan is adopted as is: the table is only created when missing and
-- the seed rows only added when missing.
CREATE TABLE IF NOT EXISTS job_status (
    id integer NOT NULL PRIMARY KEY,
    description text NOT NULL
);

INSERT INTO job_status (id, description) VALUES
  (0, 'voting'),
  (1, 'running'),
  (2, 'complete'),
  (3, 'quorum_failed'),
  (4, 'aborted'),
  (5, 'new'),
  (6, 'timed_out'),
  (7, 'crashed')
ON CONFLICT DO NOTHING;
