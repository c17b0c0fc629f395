-- Ours (issue 15 §5): retention deletes finished jobs oldest first by the time they
-- entered their status. Without this index each batch would scan the whole jobs table.
-- Invisible to the original server, like the other additions.
CREATE INDEX IF NOT EXISTS jobs_updated_at_idx ON jobs (updated_at);
