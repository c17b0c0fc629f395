-- sqitch change `job_options` (@1.1.0, @2.0.0-alpha.2), column for column. `job_user` is
-- blank-padded character(32): readers right-trim it, and longer names are refused.
CREATE TABLE IF NOT EXISTS job_options (
    job_id character(32) NOT NULL PRIMARY KEY
           REFERENCES jobs(id) ON UPDATE CASCADE ON DELETE CASCADE,
    job_user character(32),
    dir text,
    env text,
    capture boolean,
    job_file text
);
