//! `push-jobs`: parses the command line, runs the subcommand, prints the error (if any)
//! the way knife does (`ERROR: …` on stderr) and exits with the documented code.

use std::process::ExitCode;

use clap::Parser as _;
use pushy_cli::cmd::Cli;
use pushy_cli::exit::Exit;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
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
            eprintln!("ERROR: {e:#}");
            Exit::for_error(&e)
        }
    };
    ExitCode::from(exit.code())
}
