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

/// ops.md §3.4: the ctl hands secrets over in `CHEF_SECRETS_DATA`; the daemon then uses
/// that key instead of making (and writing) one of its own.
#[test]
fn secrets_from_chef_secrets_data_replace_key_files() {
    use std::io::{BufRead as _, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let pem = String::from_utf8(
        openssl::rsa::Rsa::generate(2048)
            .unwrap()
            .private_key_to_pem()
            .unwrap(),
    )
    .unwrap();
    let data = serde_json::json!({"push-jobs-server": {"pushy_priv_key": pem, "sql_password": "unused-with-sqlite"}});
    let config = tmp.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[pushy]\nzeromq_listen_address = \"tcp://127.0.0.1\"\nserver_heartbeat_port = 0\ncommand_port = 0\n",
            tmp.path()
        ),
    )
    .unwrap();
    let mut child = server()
        .args([
            "--config",
            config.to_str().unwrap(),
            "serve",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("CHEF_SECRETS_DATA", data.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening on "), "{line}");
    assert!(
        !tmp.path().join("pushy_priv.pem").exists(),
        "no key file is written when the key is handed over"
    );
    child.kill().unwrap();
    child.wait().unwrap();

    // Malformed secrets stop the daemon with a message naming the variable.
    let out = server()
        .args(["--config", config.to_str().unwrap(), "check-config"])
        .env("CHEF_SECRETS_DATA", "[1,2]")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("CHEF_SECRETS_DATA"));
}
