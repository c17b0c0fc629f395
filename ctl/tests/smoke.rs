//! `test`: the smoke test against a real server (ours, in-process, with its embedded local
//! Chef directory): `_status`, and a config fetch signed as a real client.

use std::path::{Path, PathBuf};
use std::process::Command;

use pushy_ctl::smoke::{self, Client, SmokeArgs};
use pushy_server::chef::local_admin;
use pushy_server::config::Config;
use tokio_util::sync::CancellationToken;

const CTL: &str = env!("CARGO_BIN_EXE_push-jobs-server-ctl");

async fn ctl(root: &Path, args: Vec<String>) -> (Option<i32>, String) {
    let root = root.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(CTL)
            .arg("test")
            .args(args)
            .arg("--root")
            .arg(&root)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_checks_status_and_a_signed_config_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.pushy.zeromq_listen_address = "tcp://127.0.0.1".into();
    config.pushy.server_heartbeat_port = 0;
    config.pushy.command_port = 0;
    let chef = config.local_chef_dir();
    local_admin::create_org(&chef, "acme").unwrap();
    let key: PathBuf = dir.path().join("node1.pem");
    local_admin::create_client(&chef, "acme", "node1", false, &key).unwrap();
    let other_key = dir.path().join("node2.pem");
    local_admin::create_client(&chef, "acme", "node2", false, &other_key).unwrap();

    let token = CancellationToken::new();
    let state = pushy_server::build_state(config, token.clone())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(pushy_server::run(state, listener));

    let client = Client {
        org: "acme".into(),
        name: "node1".into(),
        key: key.clone(),
    };
    let args = SmokeArgs {
        url: Some(base.clone()),
        client: Some(client.clone()),
    };
    let checks = smoke::run(&base, &args).await;
    assert_eq!(checks.len(), 2);
    for check in &checks {
        assert!(check.outcome.is_ok(), "{check:?}");
    }
    assert!(
        checks[0]
            .outcome
            .as_ref()
            .unwrap()
            .starts_with("it's alive")
    );

    // Signed with another client's key: refused, and reported as a failure.
    let wrong = SmokeArgs {
        url: None,
        client: Some(Client {
            key: other_key,
            ..client
        }),
    };
    let checks = smoke::run(&base, &wrong).await;
    assert!(checks[0].outcome.is_ok());
    let why = checks[1].outcome.as_ref().unwrap_err();
    assert!(why.contains("401"), "{why}");

    // The command: exit 0 when every check passed, 1 otherwise.
    let root = tempfile::tempdir().unwrap();
    let words = |w: &[&str]| w.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let key_arg = key.display().to_string();
    let (code, out) = ctl(
        root.path(),
        words(&[
            "--url", &base, "--org", "acme", "--client", "node1", "--key", &key_arg,
        ]),
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.ends_with("2 passed, 0 failed\n"), "{out}");
    token.cancel();
    server.await.unwrap().unwrap();
    let (code, out) = ctl(root.path(), words(&["--url", &base])).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("FAIL  GET /pushy/_status"), "{out}");
}
