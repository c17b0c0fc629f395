-- Retention (issue 15 §5) deletes finished jobs oldest first by the time they entered
-- their status; without this index each batch would scan the whole jobs table.
CREATE INDEX jobs_updated_at_idx ON jobs (updated_at);
