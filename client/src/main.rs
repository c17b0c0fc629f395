//! `push-jobs-client`: flags, config, logging and signals; the library does the work.

use std::path::PathBuf;

use clap::Parser;
use pushy_client::agent::Agent;
use pushy_client::config::{ClientConfig, Overrides};
use tokio_util::sync::CancellationToken;

/// The Push Jobs node agent.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (the original's Ruby form, or TOML by its `.toml` extension).
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
    /// Log level: debug, info, warn, error.
    #[arg(short = 'l', long = "log_level")]
    log_level: Option<String>,
    /// Node name (default: the config's `node_name`, else the host name).
    #[arg(short = 'N', long = "node-name")]
    node_name: Option<String>,
    /// Chef Server URL, `https://HOST/organizations/ORG`.
    #[arg(short = 'S', long = "server")]
    server: Option<String>,
    /// The node's private key.
    #[arg(short = 'k', long = "client-key")]
    client_key: Option<PathBuf>,
    /// Where job files are written.
    #[arg(short = 'd', long = "file_dir")]
    file_dir: Option<PathBuf>,
    /// Largest message sent to the server, bytes.
    #[arg(short = 'M', long = "max-body-size")]
    max_body_size: Option<usize>,
    /// Allow a 1.x server (no CURVE encryption).
    #[arg(long = "allow_unencrypted")]
    allow_unencrypted: bool,
}

fn load(cli: &Cli) -> anyhow::Result<ClientConfig> {
    let path = cli.config.clone().or_else(ClientConfig::find_config_file);
    let mut cfg = match &path {
        Some(p) => ClientConfig::from_file(p)?,
        None => ClientConfig::default(),
    };
    cfg.apply_overrides(Overrides {
        node_name: cli.node_name.clone(),
        chef_server_url: cli.server.clone(),
        client_key: cli.client_key.clone(),
        file_dir: cli.file_dir.clone(),
        max_body_size: cli.max_body_size,
        allow_unencrypted: cli.allow_unencrypted.then_some(true),
    });
    Ok(cfg)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = load(&cli)?;
    let level = cli
        .log_level
        .clone()
        .or(cfg.log_level.clone())
        .unwrap_or_else(|| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "warn,pushy_client={level},push_jobs_client={level}"
        ))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: logs redirected to a file stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    tracing::info!(node = %cfg.node_name, server = %cfg.chef_server_url, "starting");
    let agent = Agent::new(cfg)?;
    let stop = CancellationToken::new();
    let (reconfigure_tx, reconfigure_rx) = tokio::sync::mpsc::channel(1);
    {
        use tokio::signal::unix::{SignalKind, signal};
        let stop = stop.clone();
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut quit = signal(SignalKind::quit())?;
        let mut usr1 = signal(SignalKind::user_defined1())?;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    _ = quit.recv() => break,
                    _ = usr1.recv() => {
                        // A reconfigure is already pending when the slot is full.
                        let _ = reconfigure_tx.try_send(());
                    }
                }
            }
            stop.cancel();
        });
    }
    agent.run(stop, reconfigure_rx).await
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "push-jobs-client: {}",
                pushy_protocol::report::one_line(e.as_ref())
            );
            std::process::ExitCode::FAILURE
        }
    }
}
