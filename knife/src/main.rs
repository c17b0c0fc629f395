//! `push-jobs`: parses the command line, runs the subcommand, prints the error (if any)
//! the way knife does (`ERROR: …` on stderr) and exits with the documented code.

use std::process::ExitCode;

use clap::Parser as _;
use pushy_cli::cmd::Cli;
use pushy_cli::exit::Exit;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    default_sigpipe();
    // clap exits 2 on a usage error and 0 for --help/--version, before anything else.
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colours only on a terminal: logs redirected to a file stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let exit = match pushy_cli::cmd::run(cli).await {
        Ok(exit) => exit,
        Err(e) => {
            eprintln!("ERROR: {}", error_text(&e));
            Exit::for_error(&e)
        }
    };
    ExitCode::from(exit.code())
}

/// Restores the default action of SIGPIPE, which Rust's start-up code sets to "ignore": a
/// reader that stops early (`push-jobs job list | head -1`) ends the command quietly, as it
/// does any Unix tool, instead of a panic on EPIPE.
fn default_sigpipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: SIG_DFL installs no handler code; nothing else here manages SIGPIPE.
    if let Err(e) = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) } {
        eprintln!("push-jobs: could not restore SIGPIPE: {e}");
    }
}

/// The error and its causes on one line, each once: many of our errors quote their cause
/// in their own message and also return it as `source()`, which `{:#}` would print again.
fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
