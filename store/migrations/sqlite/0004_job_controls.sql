-- Operators' controls (issue 15): rate control, any N, success threshold, as JSON (NULL
-- for jobs without them), and the status of a job stopped by its error limit.
ALTER TABLE job_options ADD COLUMN controls TEXT;
INSERT INTO job_status (id, description) VALUES (8, 'stopped');
