//! The scratch world of one run: a work directory, fixed loopback ports (the same after
//! every restart, so agents find the server again), the server's TOML config, the org,
//! its admin user and node clients (written by the server's own `local` subcommands), the
//! agents' configs with the marker command in their whitelist, and for PostgreSQL a
//! throwaway database.
//!
//! ```text
//! WORK/server.toml       the server's config
//! WORK/data/             data_dir: pushy.sqlite, chef/ (local key directory), *.pem
//! WORK/agents/NODE/      push-jobs-client.rb, files/
//! WORK/markers/          what fault.sh did, one file per (job, node)
//! WORK/fault.sh          the marker command
//! WORK/logs/             server.N.log (one per start), agent-NODE.log
//! WORK/faults.log        every fault injected, with its trigger
//! WORK/report.md         the summary and every finding with its log lines
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

use crate::Config;

/// The organization every run uses.
pub const ORG: &str = "faults";
/// Its admin user, who starts the jobs.
pub const ADMIN: &str = "alice";

/// Where a run's pieces are.
pub struct Scratch {
    pub data: PathBuf,
    pub logs: PathBuf,
    pub markers: PathBuf,
    pub server_config: PathBuf,
    pub api_port: u16,
    pub nodes: Vec<String>,
    /// (node, its agent config file).
    pub agent_configs: Vec<(String, PathBuf)>,
}

impl Scratch {
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }
}

/// Three free loopback ports (API, heartbeat, command), chosen by the kernel and released
/// for the server to bind.
fn free_ports() -> anyhow::Result<[u16; 3]> {
    let socks = [
        std::net::TcpListener::bind("127.0.0.1:0")?,
        std::net::TcpListener::bind("127.0.0.1:0")?,
        std::net::TcpListener::bind("127.0.0.1:0")?,
    ];
    Ok([
        socks[0].local_addr()?.port(),
        socks[1].local_addr()?.port(),
        socks[2].local_addr()?.port(),
    ])
}

/// Where the store is: SQLite in the data directory, or a PostgreSQL database reached at
/// `host:port` (directly, or through the outage proxy).
pub enum StoreAt {
    Sqlite,
    Postgres {
        host: String,
        port: u16,
        user: String,
        name: String,
    },
}

/// Lays out `work`, writes every config and creates org, admin and clients.
pub fn prepare(cfg: &Config, work: &Path, store: &StoreAt) -> anyhow::Result<Scratch> {
    let data = work.join("data");
    let logs = work.join("logs");
    let markers = work.join("markers");
    for d in [&logs, &markers, &work.join("agents")] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let [api_port, heartbeat_port, command_port] = free_ports()?;
    let database = match store {
        StoreAt::Sqlite => "engine = \"sqlite\"\n".to_owned(),
        StoreAt::Postgres {
            host,
            port,
            user,
            name,
        } => format!(
            "engine = \"postgresql\"\nhost = \"{host}\"\nport = {port}\nuser = \"{user}\"\n\
             password = \"\"\nname = \"{name}\"\npool_size = 10\n"
        ),
    };
    let server_config = work.join("server.toml");
    std::fs::write(
        &server_config,
        format!(
            "# pushy-faults: loopback only, fast heartbeats, short windows.\n\
             data_dir = \"{data}\"\n\n[pushy]\napi_address = \"127.0.0.1\"\napi_port = {api_port}\n\
             server_name = \"127.0.0.1\"\nzeromq_listen_address = \"tcp://127.0.0.1\"\n\
             server_heartbeat_port = {heartbeat_port}\ncommand_port = {command_port}\n\
             heartbeat_interval = {hb}\nvoting_timeout = {vt}\ndefault_running_timeout = {rt}\n\
             wait_complete_time = 1\n\n[database]\n{database}",
            data = data.display(),
            hb = cfg.heartbeat_ms,
            vt = cfg.voting_timeout,
            rt = cfg.run_timeout,
        ),
    )?;
    let server = |args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new(&cfg.server_bin)
            .arg("-c")
            .arg(&server_config)
            .args(args)
            .output()
            .with_context(|| format!("running {}", cfg.server_bin.display()))?;
        anyhow::ensure!(
            out.status.success(),
            "{} {}: {}",
            cfg.server_bin.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    server(&["check-config"])?;
    server(&["local", "org-create", ORG])?;
    server(&["local", "user-create", ORG, ADMIN, "--admin"])?;
    let nodes: Vec<String> = (1..=cfg.nodes).map(|i| format!("node{i}")).collect();
    let script = work.join("fault.sh");
    crate::markers::write_script(&script)?;
    let mut agent_configs = Vec::new();
    for node in &nodes {
        server(&["local", "client-create", ORG, node])?;
        let dir = work.join("agents").join(node);
        std::fs::create_dir_all(dir.join("files"))?;
        let config = dir.join("push-jobs-client.rb");
        // The original's Ruby form, as scripts/quickstart writes it. `\\1` in the file is a
        // Ruby string's `\1`: the regex's first group.
        std::fs::write(
            &config,
            format!(
                "chef_server_url \"http://127.0.0.1:{api_port}/organizations/{ORG}\"\n\
                 node_name       \"{node}\"\nclient_key      \"{key}\"\n\
                 file_dir        \"{files}\"\nwhitelist({{\n  \
                 /^fault (\\d+) (\\d+)$/ => \"bash {script} {markers} \\\\1 \\\\2\",\n}})\n",
                key = data.join(format!("{node}.pem")).display(),
                files = dir.join("files").display(),
                script = script.display(),
                markers = markers.display(),
            ),
        )?;
        agent_configs.push((node.clone(), config));
    }
    Ok(Scratch {
        data,
        logs,
        markers,
        server_config,
        api_port,
        nodes,
        agent_configs,
    })
}

/// A throwaway PostgreSQL database, dropped by [`PgDb::drop_now`].
pub struct PgDb {
    admin_url: String,
    pub name: String,
    pub user: String,
    /// `host:port` of the server.
    pub host_port: String,
}

impl PgDb {
    /// Creates `pushy_faults_<random>` through `admin_url`
    /// (`postgres://USER@HOST:PORT/DB`, trust auth).
    pub async fn create(admin_url: &str) -> anyhow::Result<PgDb> {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(admin_url)
            .await
            .with_context(|| format!("connecting to {admin_url}"))?;
        let mut r = [0u8; 6];
        openssl::rand::rand_bytes(&mut r)?;
        let name = format!(
            "pushy_faults_{}",
            r.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await?;
        let rest = admin_url.split_once("://").map_or(admin_url, |(_, r)| r);
        let authority = rest.split(['/', '?']).next().unwrap_or(rest);
        let (user, host) = authority
            .rsplit_once('@')
            .map_or(("postgres", authority), |(u, h)| (u, h));
        let user = user.split(':').next().unwrap_or(user).to_owned();
        let host_port = if host.contains(':') {
            host.to_owned()
        } else {
            format!("{host}:5432")
        };
        Ok(PgDb {
            admin_url: admin_url.to_owned(),
            name,
            user,
            host_port,
        })
    }

    pub fn host(&self) -> &str {
        self.host_port
            .rsplit_once(':')
            .map_or(self.host_port.as_str(), |(h, _)| h)
    }

    pub fn port(&self) -> u16 {
        self.host_port
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(5432)
    }

    pub async fn drop_now(&self) {
        use sqlx::Connection as _;
        if let Ok(mut c) = sqlx::PgConnection::connect(&self.admin_url).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&mut c)
            .await;
        }
    }
}
