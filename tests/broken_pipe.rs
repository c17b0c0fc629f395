//! A reader that stops early (`push-jobs job list | head -1`) ends each of our printing
//! binaries quietly, as it does any Unix tool: no "failed printing to stdout: Broken pipe"
//! panic, no exit 101. Each binary runs for real with its stdout a pipe whose read end is
//! already closed, so every write fails with EPIPE.

use std::io::{BufRead as _, BufReader};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn server() -> Command {
    Command::new(env!("CARGO_BIN_EXE_opscode-pushy-server"))
}

/// A binary of this workspace built next to the server (`cargo build --workspace --bins`).
fn workspace_binary(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_opscode-pushy-server")).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// The write end of a pipe nobody reads any more.
fn closed_pipe() -> Stdio {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer.into()
}

/// Runs `cmd` with its stdout a closed pipe: it must end as `yes | head` does, by SIGPIPE
/// (or succeed), and never panic.
fn assert_ends_quietly(what: &str, cmd: &mut Command) {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(closed_pipe())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    assert_ne!(out.status.code(), Some(101), "{what}: {stderr}");
    assert!(
        out.status.success() || out.status.signal() == Some(13),
        "{what}: {:?} {stderr}",
        out.status
    );
}

#[test]
fn the_servers_one_shot_commands_end_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    assert_ends_quietly("print-default-config", server().arg("print-default-config"));
    assert_ends_quietly("check-config", server().arg("check-config"));
    assert_ends_quietly(
        "local org-create",
        server()
            .arg("--data-dir")
            .arg(&data)
            .args(["local", "org-create", "acme"]),
    );
    let key = data.join("alice.pem");
    server()
        .arg("--data-dir")
        .arg(&data)
        .args(["local", "user-create", "acme", "alice", "--key-out"])
        .arg(&key)
        .output()
        .unwrap();
    assert_ends_quietly(
        "request --curl",
        server()
            .args([
                "request",
                "GET",
                "http://127.0.0.1:1/x",
                "-u",
                "alice",
                "-k",
            ])
            .arg(&key)
            .arg("--curl"),
    );
}

#[test]
fn the_ctl_ends_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [&["help"][..], &["service-list"][..]] {
        assert_ends_quietly(
            &format!("push-jobs-server-ctl {args:?}"),
            Command::new(workspace_binary("push-jobs-server-ctl"))
                .args(args)
                .env("PUSHY_CTL_ROOT", tmp.path()),
        );
    }
}

/// A real server on port 0 with org `acme` and admin `alice`; returns it, its URL and
/// alice's key.
fn start_server(dir: &Path) -> (Child, String, PathBuf) {
    let data = dir.join("data");
    let key = dir.join("alice.pem");
    let local = |args: &[&str]| {
        let out = server()
            .arg("--data-dir")
            .arg(&data)
            .arg("local")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    local(&["org-create", "acme"]);
    local(&[
        "user-create",
        "acme",
        "alice",
        "--admin",
        "--key-out",
        key.to_str().unwrap(),
    ]);
    let config = dir.join("server.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\n[pushy]\nzeromq_listen_address = \"tcp://127.0.0.1\"\nserver_heartbeat_port = 0\ncommand_port = 0\n"
        ),
    )
    .unwrap();
    let mut child = server()
        .arg("--config")
        .arg(&config)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned();
    (child, url, key)
}

#[test]
fn the_cli_ends_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut server, url, key) = start_server(tmp.path());
    for args in [&["job", "list", "-F", "json"][..], &["node", "status"][..]] {
        assert_ends_quietly(
            &format!("push-jobs {args:?}"),
            Command::new(workspace_binary("push-jobs"))
                .args(args)
                .arg("--server-url")
                .arg(format!("{url}/organizations/acme"))
                .args(["-u", "alice", "-k"])
                .arg(&key)
                .env("HOME", tmp.path())
                .current_dir(tmp.path())
                .env_remove("CHEF_CONFIG")
                .env_remove("CHEF_PROFILE")
                .env_remove("KNIFE_HOME"),
        );
    }
    server.kill().unwrap();
    server.wait().unwrap();
}
