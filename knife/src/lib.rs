//! `push-jobs`: the workstation CLI for Push Jobs, the subcommands and flags of knife-push
//! 2.0.1 (ops.md §7) with its bugs fixed, live progress and honest exit codes.
//!
//! Layout:
//! - [`cmd`]: clap definitions and one file per subcommand (the only place `anyhow` is
//!   used, besides `main`);
//! - [`config`]: `~/.chef/credentials`, `config.rb`/`knife.rb`, environment and flags;
//! - [`api`]: signed requests and error bodies; [`plain_http`]: `http://` servers without
//!   TLS set-up;
//! - [`job`]: the job request (quorum, env, file); [`format`]: `-F` text, JSON and YAML;
//! - [`feed`]: the SSE parser and the job's progress; [`wait`]: following a job's feed;
//!   [`display`]: the progress bar or plain lines;
//! - [`search`]: `--search` through Chef Server or the local key directory;
//! - [`exit`]: exit codes.

pub mod api;
pub mod cmd;
pub mod config;
pub mod display;
pub mod exit;
pub mod feed;
pub mod format;
pub mod job;
pub mod plain_http;
pub mod search;
pub mod wait;

/// A mistake on the command line that clap cannot see (a file that does not exist, no
/// nodes to run on): exit code 2, like clap's own usage errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
