-- Ours, not the original's (http.md §5.6 recommendations). Both additions are invisible
-- to the original server, so a database stays usable by it.
--
-- The request order of a job's nodes: the original kept none, so its rows have NULL and
-- are listed after positioned ones, by node name.
ALTER TABLE job_nodes ADD COLUMN IF NOT EXISTS position integer;

-- Listing an organization's jobs oldest first was a sequential scan and a sort.
CREATE INDEX IF NOT EXISTS jobs_org_id_created_at_idx ON jobs (org_id, created_at);
