//! `opscode-pushy-server`: flags, config, logging and signals; the library does the work.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use pushy_server::chef::{Group, local_admin};
use pushy_server::config::{Config, DEFAULT_CONFIG};
use tokio_util::sync::CancellationToken;

/// The Push Jobs server.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML). Without one, the embedded defaults apply.
    #[arg(short, long, env = "PUSHY_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Overrides `data_dir` of the config.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve {
        /// Listen here instead of `api_address:api_port` (port 0 picks a free port).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Print the default configuration file.
    PrintDefaultConfig,
    /// Check the configuration file and exit.
    CheckConfig,
    /// Manage the local key directory (orgs, users, clients, groups).
    #[command(subcommand)]
    Local(Local),
    /// Send one signed request and print the response body (like `knife raw`).
    Request(pushy_server_cli::RequestArgs),
}

#[derive(Subcommand)]
enum Local {
    /// Create an organization (with an empty `admins` group).
    OrgCreate {
        /// Organization name.
        org: String,
    },
    /// Create a user, associate it with an org, and write its private key.
    UserCreate {
        /// Organization.
        org: String,
        /// User name.
        name: String,
        /// Also add it to the org's `admins` group (may start jobs).
        #[arg(long)]
        admin: bool,
        /// Where to write the private key (default `<data_dir>/NAME.pem`).
        #[arg(long)]
        key_out: Option<PathBuf>,
    },
    /// Create a client (a node) of an org and write its private key.
    ClientCreate {
        /// Organization.
        org: String,
        /// Client (node) name.
        name: String,
        /// Also add it to the org's `admins` group.
        #[arg(long)]
        admin: bool,
        /// Where to write the private key (default `<data_dir>/NAME.pem`).
        #[arg(long)]
        key_out: Option<PathBuf>,
    },
    /// Replace a group's members (e.g. `pushy_job_readers`, `pushy_job_writers`).
    GroupSet {
        /// Organization.
        org: String,
        /// Group name.
        group: String,
        /// Member users.
        #[arg(long = "user")]
        users: Vec<String>,
        /// Member clients.
        #[arg(long = "client")]
        clients: Vec<String>,
        /// Nested groups.
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    /// Delete a group.
    GroupDelete {
        /// Organization.
        org: String,
        /// Group name.
        group: String,
    },
}

mod pushy_server_cli {
    //! The `request` subcommand: a signed HTTP request from the command line.

    use std::path::PathBuf;

    use anyhow::Context as _;
    use pushy_protocol::chef_auth::ProtocolVersion;

    /// Arguments of `request`.
    #[derive(clap::Args)]
    pub struct RequestArgs {
        /// HTTP method.
        pub method: String,
        /// Full URL, e.g. http://127.0.0.1:10003/organizations/acme/pushy/jobs
        pub url: String,
        /// Request body (JSON).
        #[arg(long, short)]
        pub data: Option<String>,
        /// User or client name to sign as.
        #[arg(long, short)]
        pub user: String,
        /// Its private key.
        #[arg(long, short)]
        pub key: PathBuf,
        /// Signing protocol version: 1.0, 1.1 or 1.3.
        #[arg(long, default_value = "1.3")]
        pub sign_version: String,
        /// Print the signed headers as curl `-H` arguments instead of sending.
        #[arg(long)]
        pub curl: bool,
    }

    pub async fn run(a: RequestArgs) -> anyhow::Result<()> {
        let pem = std::fs::read_to_string(&a.key)
            .with_context(|| format!("reading {}", a.key.display()))?;
        let key = pushy_protocol::keys::private_key_from_pem(&pem)
            .with_context(|| format!("reading {}", a.key.display()))?;
        let version = ProtocolVersion::from_sign_header(&format!("version={}", a.sign_version))
            .with_context(|| format!("unsupported signing version {}", a.sign_version))?;
        let url = reqwest::Url::parse(&a.url).context("parsing the URL")?;
        let body = a.data.unwrap_or_default();
        let method: reqwest::Method = a.method.to_ascii_uppercase().parse()?;
        let client = pushy_chef_http::Client::builder(url.clone(), a.user, key, version)
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        if a.curl {
            for (k, v) in client.signed_headers(&method, &url, body.as_bytes())? {
                println!("-H '{k}: {v}'");
            }
            return Ok(());
        }
        let mut request = client.request(method, url);
        if !body.is_empty() {
            request = request.json(body);
        }
        let resp = request.send().await.context("sending the request")?;
        let status = resp.status();
        let text = resp.text().await?;
        eprintln!("{status}");
        println!("{text}");
        if !status.is_success() {
            std::process::exit(1);
        }
        Ok(())
    }
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = match &cli.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(dir) = &cli.data_dir {
        config.data_dir = dir.clone();
    }
    Ok(config)
}

fn key_path(config: &Config, given: Option<PathBuf>, name: &str) -> PathBuf {
    given.unwrap_or_else(|| config.data_dir.join(format!("{name}.pem")))
}

fn local(config: &Config, cmd: Local) -> anyhow::Result<()> {
    // The keys written here (and the store, later) live under the data directory: make it
    // private before anything is written into it.
    pushy_server::create_private_dir(&config.data_dir)?;
    let dir = config.local_chef_dir();
    let dir: &Path = &dir;
    match cmd {
        Local::OrgCreate { org } => {
            let guid = local_admin::create_org(dir, &org)?;
            println!("organization {org} (guid {guid})");
        }
        Local::UserCreate {
            org,
            name,
            admin,
            key_out,
        } => {
            let out = key_path(config, key_out, &name);
            local_admin::create_user(dir, &org, &name, admin, &out)?;
            println!(
                "user {name} in {org}{}; private key: {}",
                if admin { " (admin)" } else { "" },
                out.display()
            );
        }
        Local::ClientCreate {
            org,
            name,
            admin,
            key_out,
        } => {
            let out = key_path(config, key_out, &name);
            local_admin::create_client(dir, &org, &name, admin, &out)?;
            println!(
                "client {name} in {org}{}; private key: {}",
                if admin { " (admin)" } else { "" },
                out.display()
            );
        }
        Local::GroupSet {
            org,
            group,
            users,
            clients,
            groups,
        } => {
            local_admin::set_group(
                dir,
                &org,
                &group,
                &Group {
                    users,
                    clients,
                    groups,
                },
            )?;
            println!("group {group} of {org} set");
        }
        Local::GroupDelete { org, group } => {
            local_admin::delete_group(dir, &org, &group)?;
            println!("group {group} of {org} deleted");
        }
    }
    Ok(())
}

async fn serve(config: Config, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let addr = listen.unwrap_or(SocketAddr::new(
        config.pushy.api_address,
        config.pushy.api_port,
    ));
    match pushy_server::limits::raise_nofile() {
        Ok(n) if n.soft < 4096 => tracing::warn!(
            soft = n.soft,
            hard = n.hard,
            "descriptor limit is low: each connected node needs one or two; raise the hard \
             RLIMIT_NOFILE (LimitNOFILE= in the systemd unit)"
        ),
        Ok(n) => tracing::debug!(was = n.was, now = n.soft, "descriptor limit raised"),
        Err(e) => tracing::warn!(error = %e, "could not raise the descriptor limit"),
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let token = CancellationToken::new();
    let state = pushy_server::build_state(config, token.clone())
        .await
        .context("starting the server")?;
    // Deleting old finished jobs, when `[retention]` asks for it (issue 15 §5).
    pushy_server::retention::spawn(
        &state.config.retention,
        state.store.clone(),
        state.metrics.clone(),
        state.shutdown.clone(),
        &state.tracker,
    );
    // Tests and scripts read the bound address from this line.
    println!("listening on http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        token.cancel();
    });
    pushy_server::run(state, listener).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing SIGTERM handler");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Restores the default action of SIGPIPE (end the process), which Rust's start-up code
/// replaces with "ignore".
fn default_sigpipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: SIG_DFL installs no handler code; nothing else here manages SIGPIPE.
    if let Err(e) = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) } {
        tracing::debug!(error = %e, "could not restore SIGPIPE");
    }
}

/// Prints the error and its causes once each (a cause already quoted by the message
/// above it is not repeated), without a backtrace, and exits 1.
fn report(err: &anyhow::Error) -> std::process::ExitCode {
    for (i, text) in pushy_protocol::report::causes(err.as_ref())
        .iter()
        .enumerate()
    {
        if i == 0 {
            eprintln!("error: {text}");
        } else {
            eprintln!("  caused by: {text}");
        }
    }
    std::process::ExitCode::FAILURE
}

fn main() -> std::process::ExitCode {
    // Read (and unset) CHEF_SECRETS_DATA before any other thread exists.
    let secrets = match pushy_server::secrets::Secrets::from_environment() {
        Ok(s) => s,
        Err(e) => return report(&anyhow::Error::from(e)),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return report(&anyhow::Error::from(e).context("starting the async runtime")),
    };
    match runtime.block_on(run(secrets)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => report(&e),
    }
}

async fn run(secrets: Option<pushy_server::secrets::Secrets>) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,pushy_server=info,opscode_pushy_server=info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: logs redirected to a file stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    if !matches!(cli.command, None | Some(Command::Serve { .. })) {
        // One-shot commands print and end: a reader that stops early (`| head`) ends them
        // quietly, as it does any Unix tool, instead of a panic on EPIPE. The daemon keeps
        // Rust's default (SIGPIPE ignored), so a peer closing a socket never kills it.
        default_sigpipe();
    }
    let mut config = load_config(&cli)?;
    if let Some(secrets) = secrets {
        tracing::info!("using secrets from the environment");
        config.apply_secrets(secrets);
    }
    match cli.command {
        None => serve(config, None).await,
        Some(Command::Serve { listen }) => serve(config, listen).await,
        Some(Command::PrintDefaultConfig) => {
            print!("{DEFAULT_CONFIG}");
            Ok(())
        }
        Some(Command::CheckConfig) => {
            println!("configuration OK");
            Ok(())
        }
        Some(Command::Local(cmd)) => local(&config, cmd),
        Some(Command::Request(args)) => pushy_server_cli::run(args).await,
    }
}
