-- Who started each job (issue 16); NULL for rows written before.
ALTER TABLE jobs ADD COLUMN requestor TEXT;
