-- The agent keeps the tail of output that does not fit a message and says so.
ALTER TABLE job_output ADD COLUMN truncated INTEGER;
