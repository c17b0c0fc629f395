-- Ours (issue 16): the dashboard's login URLs already traded for a session, shared by
-- every instance of a cluster so that a URL works once whichever instance it reaches.
-- The nonce is the key, so the insert of a claim is what decides, atomically, who wins.
-- expires_at is Unix seconds; a claim deletes the rows past it. No index on it: a row
-- lives a couple of minutes at most, so the table holds the last minutes' logins and a
-- scan costs less than keeping an index up to date on every claim.
CREATE TABLE IF NOT EXISTS pushy_dashboard_logins (
    nonce text PRIMARY KEY,
    expires_at bigint NOT NULL
);
