-- The dashboard's login URLs already traded for a session (issue 16), so that each works
-- once. expires_at is Unix seconds; a claim deletes the rows past it. No index on it: a
-- row lives a couple of minutes at most, so a scan of the few left is cheaper.
CREATE TABLE pushy_dashboard_logins (
    nonce TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
