-- Ours: the agent keeps the tail of output that does not fit a message and says so.
-- Nullable, so the original server (which never writes it) keeps working on this table.
ALTER TABLE job_output ADD COLUMN IF NOT EXISTS truncated boolean;
