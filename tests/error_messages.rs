//! Each binary prints an error's cause once. Many of our errors quote their cause in their
//! own message and also return it as `source()`; printing the chain with `{:#}` said
//! "… (os error 2): No such file or directory (os error 2)". Every binary runs for real,
//! pointed at a file that is not there.

use std::path::PathBuf;
use std::process::Command;

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

/// Runs `cmd`, expects a failure, and returns its stderr after checking that the OS's
/// reason appears exactly once.
fn fails_with_the_cause_once(what: &str, cmd: &mut Command) -> String {
    let out = cmd.env_remove("RUST_LOG").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{what}: {stderr}");
    assert_eq!(stderr.matches("(os error").count(), 1, "{what}: {stderr}");
    stderr
}

#[test]
fn fixes_a_missing_file_is_reported_with_its_cause_once() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.rb");
    let name = missing.display().to_string();

    let err = fails_with_the_cause_once(
        "push-jobs",
        Command::new(workspace_binary("push-jobs"))
            .arg("--config")
            .arg(&missing)
            .args(["job", "list"])
            .env("HOME", tmp.path()),
    );
    assert!(
        err.contains(&format!(
            "ERROR: reading the configuration: reading {name}: No such file or directory (os error 2)"
        )),
        "{err}"
    );

    let err = fails_with_the_cause_once(
        "push-jobs-client",
        Command::new(workspace_binary("push-jobs-client"))
            .arg("-c")
            .arg(&missing),
    );
    assert!(
        err.contains(&format!(
            "push-jobs-client: reading {name}: No such file or directory (os error 2)"
        )),
        "{err}"
    );

    let err = fails_with_the_cause_once(
        "opscode-pushy-server",
        Command::new(env!("CARGO_BIN_EXE_opscode-pushy-server"))
            .arg("--config")
            .arg(&missing)
            .arg("check-config"),
    );
    assert!(err.contains(&name), "{err}");

    // The ctl, with a secrets file it cannot read (a directory).
    let secrets = tmp.path().join("etc/opscode/private-chef-secrets.json");
    std::fs::create_dir_all(&secrets).unwrap();
    let err = fails_with_the_cause_once(
        "push-jobs-server-ctl",
        Command::new(workspace_binary("push-jobs-server-ctl"))
            .arg("launch")
            .env("PUSHY_CTL_ROOT", tmp.path()),
    );
    assert!(
        err.contains(&format!(
            "cannot read secrets file {}: Is a directory (os error 21)",
            secrets.display()
        )),
        "{err}"
    );
}
