//! The database step of reconfigure (ops.md §4.2): roles, database, grants, then the schema
//! migrations, which adopt a database the original's sqitch plan deployed (1.x at `@1.0.0`,
//! 2.x at `@2.0.0-alpha.3`) and upgrade it in place (§4.5). Runs as Chef Server's PostgreSQL
//! superuser, over TCP to `postgresql.vip:port` (§4.1).
//!
//! Safe to re-run: roles and the database are created only when absent; an existing role has
//! its SUPERUSER flag dropped (1.x created both roles WITH SUPERUSER) and its password set from
//! the secrets file; grants are re-issued; only pending migrations are applied.

use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection as _, PgConnection, Row as _};

use crate::secrets::GROUP;
use crate::settings::Settings;
use crate::veil::SecretsFile;

/// How long a connection attempt may take before it counts as refused.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// How to reach PostgreSQL as its superuser.
#[derive(Clone)]
pub struct Admin {
    /// Host (Chef Server's `postgresql.vip`).
    pub host: String,
    /// Port (Chef Server's `postgresql.port`).
    pub port: u16,
    /// Superuser name (Chef Server's `postgresql.db_superuser`).
    pub user: String,
    /// Its password (veil `postgresql/db_superuser_password`), if any.
    pub password: Option<String>,
    /// PostgreSQL is external to Chef Server: the superuser is then granted the push role
    /// (ops.md §4.2 step 1).
    pub external: bool,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .field("external", &self.external)
            .finish()
    }
}

/// What to create.
#[derive(Clone)]
pub struct Target {
    /// Database name (`postgresql['database_name']`, `opscode_pushy`).
    pub database: String,
    /// Read-write role (`sql_user`) and its password (`push-jobs-server.sql_password`).
    pub user: (String, String),
    /// Read-only role (`sql_ro_user`) and its password (`push-jobs-server.sql_ro_password`).
    pub ro_user: (String, String),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("database", &self.database)
            .field("user", &self.user.0)
            .field("ro_user", &self.ro_user.0)
            .finish()
    }
}

/// Why the database step failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A password the step needs is not in the secrets file (the secrets bootstrap runs first,
    /// so this means the file was changed under us).
    #[error("secret {0} is missing from the secrets file")]
    MissingSecret(String),
    /// Could not connect or log in.
    #[error(
        "cannot connect to PostgreSQL at {host}:{port} as {user} (database {database}): {source}"
    )]
    Connect {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// User.
        user: String,
        /// The database asked for.
        database: String,
        /// Cause.
        #[source]
        source: sqlx::Error,
    },
    /// A statement failed.
    #[error("PostgreSQL at {host}:{port}: {what}: {source}")]
    Statement {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// What was being done.
        what: String,
        /// Cause.
        #[source]
        source: sqlx::Error,
    },
    /// Applying the schema failed.
    #[error("PostgreSQL at {host}:{port}: migrating the schema of database {database}: {source}")]
    Migrate {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// The database.
        database: String,
        /// Cause.
        #[source]
        source: pushy_store::Error,
    },
}

/// What the step changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Roles created.
    pub created_roles: Vec<String>,
    /// Roles that had SUPERUSER (1.x) and were demoted.
    pub demoted_roles: Vec<String>,
    /// Whether the database was created.
    pub created_database: bool,
    /// Schema migrations applied by this run (0 when the schema was up to date).
    pub migrations_applied: u64,
}

impl Report {
    /// Whether anything in the database changed (passwords and grants are re-asserted every
    /// run and do not count).
    pub fn changed(&self) -> bool {
        !self.created_roles.is_empty()
            || !self.demoted_roles.is_empty()
            || self.created_database
            || self.migrations_applied > 0
    }
}

/// The superuser connection and the target, from the settings and the secrets file.
///
/// # Errors
/// [`Error::MissingSecret`] when `sql_password` or `sql_ro_password` is absent.
pub fn plan(settings: &Settings, secrets: &SecretsFile) -> Result<(Admin, Target), Error> {
    let pg = &settings.postgresql;
    let password = |name: &str| {
        secrets
            .get(GROUP, name)
            .map(str::to_owned)
            .ok_or_else(|| Error::MissingSecret(format!("{GROUP}.{name}")))
    };
    let admin = Admin {
        host: pg.vip.clone(),
        port: pg.port,
        user: pg.db_superuser.clone(),
        password: secrets
            .get("postgresql", "db_superuser_password")
            .map(str::to_owned),
        external: pg.external,
    };
    let target = Target {
        database: pg.database_name.clone(),
        user: (pg.sql_user.clone(), password("sql_password")?),
        ro_user: (pg.sql_ro_user.clone(), password("sql_ro_password")?),
    };
    Ok((admin, target))
}

/// `"name"`, doubled quotes inside.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `'text'`, doubled quotes inside (standard_conforming_strings is on since PostgreSQL 9.1).
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Admin {
    /// How to reach `database` as the superuser.
    fn options(&self, database: &str) -> PgConnectOptions {
        let options = PgConnectOptions::new()
            .host(&self.host)
            .port(self.port)
            .username(&self.user)
            .database(database)
            .application_name("push-jobs-server-ctl");
        match &self.password {
            Some(p) => options.password(p),
            None => options,
        }
    }

    fn connect_error(&self, database: &str, source: sqlx::Error) -> Error {
        Error::Connect {
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            database: database.to_owned(),
            source,
        }
    }

    /// Connects to `database` as the superuser.
    ///
    /// # Errors
    /// [`Error::Connect`], naming host, port and user.
    pub async fn connect(&self, database: &str) -> Result<PgConnection, Error> {
        let options = self.options(database);
        let attempt = PgConnection::connect_with(&options);
        match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            Ok(result) => result.map_err(|e| self.connect_error(database, e)),
            Err(_) => Err(self.connect_error(
                database,
                sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer in {} s", CONNECT_TIMEOUT.as_secs()),
                )),
            )),
        }
    }

    fn statement_error(&self, what: &str) -> impl FnOnce(sqlx::Error) -> Error + '_ {
        let what = what.to_owned();
        move |source| Error::Statement {
            host: self.host.clone(),
            port: self.port,
            what,
            source,
        }
    }

    async fn exec(&self, conn: &mut PgConnection, what: &str, sql: String) -> Result<(), Error> {
        sqlx::query(AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await
            .map(|_| ())
            .map_err(self.statement_error(what))
    }

    async fn applied_migrations(&self, conn: &mut PgConnection) -> Result<u64, Error> {
        let present: bool =
            sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations') IS NOT NULL")
                .fetch_one(&mut *conn)
                .await
                .map_err(self.statement_error("looking for the migrations table"))?;
        if !present {
            return Ok(0);
        }
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut *conn)
            .await
            .map_err(self.statement_error("counting applied migrations"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// Runs the whole step (ops.md §4.2 steps 1–5); safe to re-run.
///
/// # Errors
/// The first failure, naming the server and what was being done.
pub async fn provision(admin: &Admin, target: &Target) -> Result<Report, Error> {
    let mut report = Report::default();
    let mut conn = admin.connect("template1").await?;

    // 1–2. The roles.
    for (role, password) in [&target.user, &target.ro_user] {
        let row = sqlx::query("SELECT rolsuper FROM pg_roles WHERE rolname = $1")
            .bind(role)
            .fetch_optional(&mut conn)
            .await
            .map_err(admin.statement_error(&format!("looking up role {role}")))?;
        match row {
            None => {
                tracing::info!(role = %role, "creating the role");
                admin
                    .exec(
                        &mut conn,
                        &format!("creating role {role}"),
                        format!(
                            "CREATE ROLE {} LOGIN NOSUPERUSER ENCRYPTED PASSWORD {}",
                            quote_ident(role),
                            quote_literal(password)
                        ),
                    )
                    .await?;
                report.created_roles.push(role.clone());
            }
            Some(row) => {
                let superuser: bool = row.try_get(0).unwrap_or(false);
                if superuser {
                    tracing::info!(role = %role, "demoting the 1.x SUPERUSER role");
                    report.demoted_roles.push(role.clone());
                }
                // The password always comes from the secrets file (it may have been rotated).
                admin
                    .exec(
                        &mut conn,
                        &format!("updating role {role}"),
                        format!(
                            "ALTER ROLE {} LOGIN NOSUPERUSER ENCRYPTED PASSWORD {}",
                            quote_ident(role),
                            quote_literal(password)
                        ),
                    )
                    .await?;
            }
        }
    }
    if admin.external {
        admin
            .exec(
                &mut conn,
                &format!("granting role {} to {}", target.user.0, admin.user),
                format!(
                    "GRANT {} TO {}",
                    quote_ident(&target.user.0),
                    quote_ident(&admin.user)
                ),
            )
            .await?;
    }

    // 3. The database.
    let exists = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&target.database)
        .fetch_optional(&mut conn)
        .await
        .map_err(admin.statement_error(&format!("looking up database {}", target.database)))?
        .is_some();
    if !exists {
        tracing::info!(database = %target.database, "creating the database");
        admin
            .exec(
                &mut conn,
                &format!("creating database {}", target.database),
                format!(
                    "CREATE DATABASE {} WITH OWNER {} TEMPLATE template0 ENCODING 'UTF-8'",
                    quote_ident(&target.database),
                    quote_ident(&target.user.0)
                ),
            )
            .await?;
        report.created_database = true;
    }
    let _ = conn.close().await;

    // 4. Grants, as the superuser, in the database. Default privileges cover what the
    // superuser creates later (the migrations below).
    let mut conn = admin.connect(&target.database).await?;
    let (rw, ro, db) = (
        quote_ident(&target.user.0),
        quote_ident(&target.ro_user.0),
        quote_ident(&target.database),
    );
    let grants = [
        format!("GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {rw}"),
        format!("GRANT CONNECT ON DATABASE {db} TO {ro}"),
        // The daemon's store checks its migrations table at start-up (CREATE TABLE IF NOT
        // EXISTS), which needs CREATE on the schema even when the table exists; PostgreSQL 15
        // no longer grants it to PUBLIC, and a 1.x database is owned by the superuser.
        format!("GRANT USAGE, CREATE ON SCHEMA public TO {rw}"),
        format!("GRANT USAGE ON SCHEMA public TO {ro}"),
        format!("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO {rw}, {ro}"),
        format!(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT EXECUTE ON FUNCTIONS TO {rw}, {ro}"
        ),
        format!("GRANT SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {rw}"),
        format!("GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {ro}"),
        format!(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, UPDATE ON SEQUENCES TO {rw}"
        ),
        format!("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON SEQUENCES TO {ro}"),
        format!("GRANT INSERT, SELECT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {rw}"),
        format!("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {ro}"),
        format!(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT INSERT, SELECT, UPDATE, DELETE ON TABLES TO {rw}"
        ),
        format!("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {ro}"),
    ];
    for grant in grants {
        admin.exec(&mut conn, "granting privileges", grant).await?;
    }
    let before = admin.applied_migrations(&mut conn).await?;

    // 5. The schema, as the superuser (it owns the tables the original's sqitch made).
    let store = pushy_store::PostgresStore::connect(admin.options(&target.database), 1)
        .await
        .map_err(|source| Error::Migrate {
            host: admin.host.clone(),
            port: admin.port,
            database: target.database.clone(),
            source,
        })?;
    store.pool().close().await;
    let after = admin.applied_migrations(&mut conn).await?;
    let _ = conn.close().await;
    report.migrations_applied = after.saturating_sub(before);
    if report.migrations_applied > 0 {
        tracing::info!(
            database = %target.database,
            applied = report.migrations_applied,
            "schema migrations applied"
        );
    }
    Ok(report)
}
