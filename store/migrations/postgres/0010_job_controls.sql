-- Operators' controls (issue 15): rate control, any N, success threshold, stored as the
-- JSON the server wrote (NULL for every job without them, and every job of the original),
-- and the job status a rate-controlled job ends with when its error limit is passed.
ALTER TABLE job_options ADD COLUMN IF NOT EXISTS controls text;
INSERT INTO job_status (id, description) VALUES (8, 'stopped') ON CONFLICT DO NOTHING;
