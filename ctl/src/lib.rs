//! `push-jobs-server-ctl`: configures and controls the Push Jobs server beside Chef Server
//! (ops.md §1–§6). The binaries are thin; this library is what they and the tests call.
//!
//! Layout, in the order reconfigure uses the pieces:
//! - [`paths`]: every path the ctl touches, under a root prefix (`--root`, `PUSHY_CTL_ROOT`).
//! - [`chef_server`]: Chef Server's `chef-server-running.json` as read.
//! - [`user_config`]: the operator's `opscode-push-jobs-server.rb` (or `.toml`), typed into
//!   [`user_config::Attributes`] with the cookbook's defaults.
//! - [`settings`]: [`settings::load`] runs the original's load order into [`settings::Settings`],
//!   and [`settings::compute`] is the original's `generate_config` (topology, vip, PostgreSQL
//!   placement).
//! - [`veil`]: Chef Server's consolidated secrets file (legacy, v1, v2), derivation, atomic saves.
//! - [`secrets`]: the secrets bootstrap of every reconfigure (migration, passwords, key pair) and
//!   the list of secrets handed to the daemon.
//! - [`atomic_file`]: replace-by-rename for every file the ctl writes.
//! - [`converge`]: files, directories and links brought to a wanted state, recording changes.
//! - [`templates`]: the minijinja templates of every rendered file (`ctl/templates/`).
//! - [`database`]: roles, database, grants, schema (and the 1.x upgrade).
//! - [`nginx`]: Chef Server's nginx add-on files.
//! - [`service`]: the daemon's service (systemd or Chef Server's runit) and its commands.
//! - [`instances`]: `opscode_pushy_server['instances']`: several daemons as one cluster.
//! - [`daemon`]: the daemon's config, directories and service definition.
//! - [`launch`]: the hidden `launch` command the service runs (secrets hand-off).
//! - [`reconfigure`]: the steps in order, and their [`reconfigure::Report`].
//! - [`cleanse`]: `cleanse` and `uninstall`.
//! - [`smoke`]: `test`, a smoke test of the running server.
//! - [`purge`]: `purge-jobs`, deleting old finished jobs now (issue 15 §5).
//! - [`cli`]: omnibus-ctl's command table, messages and exit codes; dispatch.

pub mod atomic_file;
pub mod chef_server;
pub mod cleanse;
pub mod cli;
pub mod converge;
pub mod daemon;
pub mod database;
pub mod instances;
pub mod launch;
pub mod nginx;
pub mod paths;
pub mod purge;
pub mod reconfigure;
pub mod secrets;
pub mod service;
pub mod settings;
pub mod smoke;
pub mod templates;
pub mod user_config;
pub mod veil;
