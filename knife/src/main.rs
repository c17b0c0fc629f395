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
            eprintln!("ERROR: {}", pushy_protocol::report::one_line(e.as_ref()));
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
