//! The daemon refuses a bad configuration with a clear message and a non-zero exit, and
//! prints its default configuration.

use std::process::Command;

fn server() -> Command {
    Command::new(env!("CARGO_BIN_EXE_opscode-pushy-server"))
}

fn run_with(config: &str, args: &[&str]) -> (bool, String) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("server.toml");
    std::fs::write(&path, config).unwrap();
    let out = server()
        .arg("--config")
        .arg(&path)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unknown_key_stops_the_daemon_naming_the_key() {
    let (ok, err) = run_with(
        "[pushy]\napi_prot = 10003\n",
        &["serve", "--listen", "127.0.0.1:0"],
    );
    assert!(!ok);
    assert!(err.contains("api_prot"), "{err}");
}

#[test]
fn bad_value_stops_the_daemon() {
    let (ok, err) = run_with(
        "[pushy]\nheartbeat_interval = \"soon\"\n",
        &["check-config"],
    );
    assert!(!ok);
    assert!(err.contains("heartbeat_interval"), "{err}");
    let (ok, err) = run_with("[database]\nengine = \"oracle\"\n", &["check-config"]);
    assert!(!ok);
    assert!(err.contains("engine"), "{err}");
}

#[test]
fn missing_config_file_is_an_error() {
    let out = server()
        .args(["--config", "/nonexistent/pushy.toml", "check-config"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/pushy.toml"));
}

#[test]
fn default_config_round_trips() {
    let out = server().arg("print-default-config").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("api_port = 10003"));
    let (ok, err) = run_with(&text, &["check-config"]);
    assert!(ok, "{err}");
}
