-- Who started each job (issue 16: the dashboard's jobs view). The original kept no
-- requestor (`last_updated_by` holds the job id); rows written before stay NULL.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS requestor text;
