//! The command line (clap derive, one file per subcommand; field doc comments are the
//! `--help` text) and [`run`], which loads the configuration and dispatches.

mod completion;
mod dashboard;
mod job_abort;
mod job_list;
mod job_output;
mod job_start;
mod job_status;
mod job_tail;
mod node_status;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::Value;

use crate::api::Client;
use crate::config::{self, Config, KeySource, Settings, Sources};
use crate::exit::{self, Exit};

/// Run commands on nodes with Push Jobs and follow them: `knife job` and `knife node
/// status` from knife-push 2.0.1, with live progress and honest exit codes.
#[derive(Debug, Parser)]
#[command(name = "push-jobs", version, after_help = exit::TABLE)]
pub struct Cli {
    /// Settings every subcommand takes.
    #[command(flatten)]
    pub global: Global,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the configuration comes from and how to print.
#[derive(Debug, Args)]
pub struct Global {
    /// knife config file (Ruby assignment form) [default: config.rb or knife.rb in
    /// $KNIFE_HOME, ./.chef (or a parent's) or ~/.chef]
    #[arg(
        short = 'c',
        long,
        env = "CHEF_CONFIG",
        global = true,
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
    /// Profile of ~/.chef/credentials [default: ~/.chef/context, else "default"]
    #[arg(long, env = "CHEF_PROFILE", global = true, value_name = "NAME")]
    pub profile: Option<String>,
    /// Server URL, ending in /organizations/ORG (overrides chef_server_url)
    #[arg(long, env = "CHEF_SERVER_URL", global = true, value_name = "URL")]
    pub server_url: Option<String>,
    /// User or client to sign requests as (overrides node_name / client_name)
    #[arg(
        short = 'u',
        long,
        env = "CHEF_NODE_NAME",
        global = true,
        value_name = "NAME"
    )]
    pub user: Option<String>,
    /// Private key to sign with (overrides client_key)
    #[arg(
        short = 'k',
        long,
        env = "CHEF_CLIENT_KEY",
        global = true,
        value_name = "FILE"
    )]
    pub key: Option<PathBuf>,
    /// Chef request-signing protocol version [default: 1.3, or authentication_protocol_version]
    #[arg(long, global = true, value_name = "VERSION", value_parser = ["1.3", "1.1", "1.0"])]
    pub sign_version: Option<String>,
    /// The push server's local key directory (its data/chef), for --search and node
    /// queries without a Chef Server; overrides local_chef_dir
    #[arg(long, env = "PUSH_JOBS_LOCAL_DIR", global = true, value_name = "DIR")]
    pub local_dir: Option<PathBuf>,
    /// Output format: knife's text, or JSON or YAML for scripts
    #[arg(short = 'F', long, global = true, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// `-F/--format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// knife's text (also accepted as `summary`).
    #[value(alias = "summary")]
    Text,
    /// JSON on stdout; progress and messages go to stderr.
    Json,
    /// YAML on stdout (knife's `-F yaml`); progress and messages go to stderr.
    Yaml,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start, list, inspect and abort jobs.
    #[command(subcommand)]
    Job(JobCommand),
    /// Node availability.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Print the shell completion script for bash, zsh or fish.
    Completion(completion::Args),
    /// Print a one-time login link to the server's web dashboard.
    Dashboard(dashboard::Args),
}

/// `job …`.
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Run a command on nodes and wait for the result.
    #[command(after_help = exit::TABLE)]
    Start(Box<job_start::Args>),
    /// List the organization's jobs.
    List(job_list::Args),
    /// Show one job (or, with no id, list them all as knife does).
    Status(job_status::Args),
    /// Print the captured output of a job on some nodes.
    Output(job_output::Args),
    /// Follow a running job and print its nodes' output as it arrives (`web01 | …`).
    #[command(after_help = exit::TABLE)]
    Tail(job_tail::Args),
    /// Stop a job that has not finished.
    Abort(job_abort::Args),
}

/// `node …`.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Show whether nodes are available for jobs.
    Status(node_status::Args),
}

/// What every subcommand works with.
pub struct Context {
    /// The settled configuration.
    pub config: Config,
    /// The signing client.
    pub client: Client,
    /// The output format.
    pub format: Format,
}

impl Context {
    /// Whether output is a document for a program (JSON or YAML): stdout then holds
    /// nothing else.
    pub fn structured(&self) -> bool {
        self.format != Format::Text
    }

    /// A status line for a person: stdout with text output (knife prints it there and
    /// scripts grep it), stderr with JSON or YAML output.
    pub fn say(&self, line: &str) {
        if self.structured() {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }

    /// A document on stdout, in the chosen format.
    pub fn print(&self, value: &Value) {
        print!("{}", self.format.render(value));
    }
}

impl Format {
    /// `value` as this format prints it, ending in a newline.
    pub fn render(self, value: &Value) -> String {
        match self {
            Format::Text => crate::format::text(value),
            Format::Json => crate::format::json(value),
            Format::Yaml => crate::format::yaml(value),
        }
    }
}

/// Loads the configuration from the process's environment and `global`.
///
/// # Errors
/// See [`config::load`].
pub fn load_config(global: &Global) -> Result<Config, config::Error> {
    let var = |name: &str| std::env::var_os(name).map(PathBuf::from);
    let sources = Sources {
        home: var("HOME").filter(|h| !h.as_os_str().is_empty()),
        knife_home: var("KNIFE_HOME"),
        cwd: std::env::current_dir().ok(),
        config_file: global.config.clone(),
        profile: global.profile.clone(),
        flags: Settings {
            node_name: global.user.clone(),
            client_key: global.key.clone().map(KeySource::Path),
            chef_server_url: global.server_url.clone(),
            local_chef_dir: global.local_dir.clone(),
            sign_version: global.sign_version.clone(),
        },
    };
    config::load(&sources, &|name| std::env::var(name).ok())
}

/// Runs the subcommand.
///
/// # Errors
/// Whatever the subcommand reports; [`Exit::for_error`] turns it into an exit code.
pub async fn run(cli: Cli) -> anyhow::Result<Exit> {
    // Completion needs no configuration: it must work before knife is set up.
    if let Command::Completion(a) = &cli.command {
        return completion::run(a);
    }
    let config = load_config(&cli.global).context("reading the configuration")?;
    tracing::debug!(
        files = ?config.files,
        user = %config.node_name,
        url = %config.server_url,
        "configuration read"
    );
    let client = Client::new(&config, &|name| std::env::var(name).ok())
        .context("reading the configuration")?;
    let ctx = Context {
        config,
        client,
        format: cli.global.format,
    };
    match cli.command {
        Command::Job(JobCommand::Start(a)) => job_start::run(&ctx, *a).await,
        Command::Job(JobCommand::List(a)) => job_list::run(&ctx, a).await,
        Command::Job(JobCommand::Status(a)) => job_status::run(&ctx, a).await,
        Command::Job(JobCommand::Output(a)) => job_output::run(&ctx, a).await,
        Command::Job(JobCommand::Tail(a)) => job_tail::run(&ctx, a).await,
        Command::Job(JobCommand::Abort(a)) => job_abort::run(&ctx, a).await,
        Command::Node(NodeCommand::Status(a)) => node_status::run(&ctx, a).await,
        Command::Completion(a) => completion::run(&a),
        Command::Dashboard(a) => dashboard::run(&ctx, a).await,
    }
}

/// The job id in `s` (an id or a job URL), or a usage error.
fn job_id(s: &str) -> anyhow::Result<pushy_protocol::job::JobId> {
    crate::job::parse_job_ref(s).ok_or_else(|| {
        crate::UsageError(format!(
            "{s:?} is not a job id (32 lowercase hex characters, as `job start` prints)"
        ))
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn knife_push_flags_parse() {
        let cli = Cli::try_parse_from([
            "push-jobs",
            "job",
            "start",
            "chef-client",
            "-s",
            "name:web*",
            "-q",
            "50%",
            "-t",
            "60",
            "-b",
            "--with-env",
            r#"{"A":"1"}"#,
            "--in-dir",
            "/tmp",
            "--as-user",
            "bob",
            "--file",
            "f.txt",
            "--capture",
            "-F",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.global.format, Format::Json);
        let Command::Job(JobCommand::Start(a)) = cli.command else {
            panic!("job start");
        };
        assert_eq!(a.search.as_deref(), Some("name:web*"));
        assert_eq!(a.quorum, crate::job::Quorum::Percent(50));
        assert!(a.nowait && a.capture);
    }

    #[test]
    fn every_format_parses_short_and_long_anywhere() {
        for (args, want) in [
            (vec!["-F", "yaml", "job", "list"], Format::Yaml),
            (vec!["job", "list", "--format", "yaml"], Format::Yaml),
            (vec!["job", "status", "-F", "json"], Format::Json),
            (vec!["node", "status", "-F", "summary"], Format::Text),
            (vec!["job", "list"], Format::Text),
        ] {
            let cli = Cli::try_parse_from(std::iter::once("push-jobs").chain(args.clone()))
                .unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(cli.global.format, want, "{args:?}");
        }
    }

    #[test]
    fn usage_errors_are_clap_errors_with_code_2() {
        for args in [
            vec!["push-jobs", "job", "start"],
            vec!["push-jobs", "job", "start", "x", "n", "-q", "abc"],
            vec!["push-jobs", "job", "start", "x", "n", "--with-env", "A=1"],
            vec!["push-jobs", "job", "start", "x", "n", "-s", "*:*"],
            vec!["push-jobs", "job", "output", "id", "n", "--channel", "both"],
            vec!["push-jobs", "--sign-version", "1.2", "job", "list"],
            vec!["push-jobs", "-F", "xml", "job", "list"],
            vec!["push-jobs", "completion"],
        ] {
            let e = Cli::try_parse_from(&args).unwrap_err();
            assert_eq!(e.exit_code(), i32::from(Exit::Usage.code()), "{args:?}");
        }
    }

    #[test]
    fn help_documents_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Exit codes:"), "{help}");
        assert!(help.contains("quorum failed"), "{help}");
    }
}
