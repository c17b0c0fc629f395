//! The binaries as an operator runs them: omnibus-ctl's messages and exit codes, `show-config`
//! under a temporary root, and the `opscode-` alias behaving the same.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

const CTL: &str = env!("CARGO_BIN_EXE_push-jobs-server-ctl");
const ALIAS: &str = env!("CARGO_BIN_EXE_opscode-push-jobs-server-ctl");

fn run(exe: &str, args: &[&str], root: &Path) -> Output {
    Command::new(exe)
        .args(args)
        .env("PUSHY_CTL_ROOT", root)
        .env("PUSHY_CTL_FQDN", "push1.example.com")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn chef_server_tree(root: &Path, rb: Option<&str>) {
    let running = root.join("etc/opscode/chef-server-running.json");
    fs::create_dir_all(running.parent().unwrap()).unwrap();
    fs::write(
        &running,
        r#"{"private_chef": {"lb": {"api_fqdn": "chef.example.com"},
            "postgresql": {"vip": "10.1.1.1", "port": 5432, "db_superuser": "opscode-pgsql"}}}"#,
    )
    .unwrap();
    if let Some(rb) = rb {
        let etc = root.join("etc/opscode-push-jobs-server");
        fs::create_dir_all(&etc).unwrap();
        fs::write(etc.join("opscode-push-jobs-server.rb"), rb).unwrap();
    }
}

#[test]
fn help_lists_the_commands_and_exits_0() {
    let root = tempfile::tempdir().unwrap();
    for (exe, name) in [
        (CTL, "push-jobs-server-ctl"),
        (ALIAS, "opscode-push-jobs-server-ctl"),
    ] {
        for args in [&["help"][..], &["--help"][..]] {
            let out = run(exe, args, root.path());
            assert_eq!(out.status.code(), Some(0));
            let stdout = text(&out.stdout);
            assert!(
                stdout.starts_with(&format!("{name}: command (subcommand)\n")),
                "{stdout}"
            );
            assert!(stdout.contains("Service Management Commands:\n"));
        }
    }
}

#[test]
fn unknown_commands_and_extra_arguments_answer_like_omnibus_ctl() {
    let root = tempfile::tempdir().unwrap();
    let out = run(CTL, &["opscode-pushy-server", "status"], root.path());
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("I don't know that command.\nDid you mean: push-jobs-server-ctl status opscode-pushy-server?\npush-jobs-server-ctl: command (subcommand)\n"),
        "{stdout}"
    );
    let out = run(CTL, &[], root.path());
    assert_eq!(out.status.code(), Some(1));
    let out = run(CTL, &["show-config", "now"], root.path());
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stdout),
        "The command show-config does not accept any arguments\n"
    );
}

#[test]
fn show_config_prints_the_computed_settings() {
    let root = tempfile::tempdir().unwrap();
    chef_server_tree(
        root.path(),
        Some("opscode_pushy_server['heartbeat_interval'] = 5000\n"),
    );
    for exe in [CTL, ALIAS] {
        let out = run(exe, &["show-config"], root.path());
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let server = &json["pushy"]["opscode-pushy-server"];
        assert_eq!(server["vip"], "chef.example.com");
        assert_eq!(server["heartbeat_interval"], 5000);
        assert_eq!(json["pushy"]["postgresql"]["vip"], "10.1.1.1");
    }
    // --root on the command line wins over the environment.
    let out = Command::new(CTL)
        .args(["show-config", "--root"])
        .arg(root.path())
        .env("PUSHY_CTL_ROOT", "/nonexistent")
        .args(["--fqdn", "h"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn show_config_failures_name_the_file_and_exit_1() {
    let root = tempfile::tempdir().unwrap();
    let out = run(CTL, &["show-config"], root.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("etc/opscode/chef-server-running.json does not exist: run chef-server-ctl reconfigure first"), "{stderr}");

    chef_server_tree(
        root.path(),
        Some("opscode_pushy_server['api_port'] = 'ten'\n"),
    );
    let out = run(CTL, &["show-config"], root.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("opscode-push-jobs-server.rb:1: opscode_pushy_server['api_port'] must be an integer from 0 to 65535, not \"ten\""),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}
