//! `pushy-load`: flags, logging, dispatch; the library does the work.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use pushy_bench::provision::{self, ProvisionArgs};
use pushy_bench::run::{self, RunArgs};

/// Simulated Push Jobs nodes for benchmarking the server.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Register N nodes sharing one key pair in the server's local key directory.
    Provision(ProvisionArgs),
    /// Connect the nodes and answer jobs until SIGINT/SIGTERM or --duration.
    Run(RunArgs),
}

fn main() -> anyhow::Result<()> {
    // Quiet by default: thousands of nodes would drown a terminal; RUST_LOG opens it up.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Provision(args) => {
            let started = std::time::Instant::now();
            let summary = provision::provision(&args).context("provisioning")?;
            println!(
                "{} clients in {} ({} written, {} unchanged), key {} ({}), {:.1}s",
                args.count,
                args.org,
                summary.written,
                summary.unchanged,
                args.key_out.display(),
                if summary.key_generated {
                    "new"
                } else {
                    "reused"
                },
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Run(args) => run::run(args),
    }
}
