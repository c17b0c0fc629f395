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

/// Starts `serve` on port 0 with `config` (ZeroMQ on loopback, port 0 too) and waits for its
/// "listening on" line: by then the store is open.
fn serve_until_listening(config: &std::path::Path, cmd: &mut Command) -> std::process::Child {
    use std::io::{BufRead as _, BufReader};
    let mut child = cmd
        .args([
            "--config",
            config.to_str().unwrap(),
            "serve",
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening on "), "{line}");
    child
}

fn write_config(dir: &std::path::Path, data_dir: &std::path::Path) -> std::path::PathBuf {
    let config = dir.join("server.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {data_dir:?}\n[pushy]\nzeromq_listen_address = \"tcp://127.0.0.1\"\nserver_heartbeat_port = 0\ncommand_port = 0\n"
        ),
    )
    .unwrap();
    config
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The embedded default keeps commands, environments, files and output in SQLite under
/// its data directory: none of it is readable by other local users.
#[test]
fn fixes_a_fresh_data_directory_and_its_database_are_private() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("fresh/data");
    let config = write_config(tmp.path(), &data);
    let mut child = serve_until_listening(&config, &mut server());
    // The store is open (WAL mode): the -wal and -shm files exist while it runs.
    assert_eq!(mode(&data), 0o700, "data directory");
    for name in [
        "pushy.sqlite",
        "pushy.sqlite-wal",
        "pushy.sqlite-shm",
        "pushy_priv.pem",
    ] {
        assert_eq!(mode(&data.join(name)), 0o600, "{name}");
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Files an earlier version made 0644 are tightened at start; a data directory others can
/// enter is left as it is (it may be shared) with a warning.
#[test]
fn too_open_database_files_are_tightened_and_an_open_directory_is_reported() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = write_config(tmp.path(), &data);
    // A database as an earlier version left it, with a stale -shm file beside it.
    let mut first = serve_until_listening(&config, &mut server());
    first.kill().unwrap();
    first.wait().unwrap();
    for name in ["pushy.sqlite", "pushy.sqlite-wal", "pushy.sqlite-shm"] {
        let path = data.join(name);
        if !path.exists() {
            std::fs::write(&path, "").unwrap();
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let mut child = serve_until_listening(&config, &mut server());
    for name in ["pushy.sqlite", "pushy.sqlite-wal", "pushy.sqlite-shm"] {
        assert_eq!(mode(&data.join(name)), 0o600, "{name}");
    }
    assert_eq!(mode(&data), 0o755, "an existing directory is not changed");
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the data directory is open to other users"),
        "{stderr}"
    );
}

/// ops.md §3.4 (`--use-file`): the secrets come in a pipe named by `CHEF_SECRETS_FD`, which
/// leaves nothing in `/proc/PID/environ`. Here the pipe is the daemon's stdin.
#[test]
fn secrets_from_a_descriptor_replace_key_files() {
    use std::io::Write as _;
    let tmp = tempfile::tempdir().unwrap();
    let pem = String::from_utf8(
        openssl::rsa::Rsa::generate(2048)
            .unwrap()
            .private_key_to_pem()
            .unwrap(),
    )
    .unwrap();
    let data = serde_json::json!({"push-jobs-server": {"pushy_priv_key": pem}});
    let config = write_config(tmp.path(), tmp.path());
    let (reader, mut writer) = std::io::pipe().unwrap();
    writeln!(writer, "{data}").unwrap();
    drop(writer);
    let mut child =
        serve_until_listening(&config, server().env("CHEF_SECRETS_FD", "0").stdin(reader));
    assert!(
        !tmp.path().join("pushy_priv.pem").exists(),
        "no key file is written when the key is handed over"
    );
    let environ = std::fs::read(format!("/proc/{}/environ", child.id())).unwrap();
    assert!(!String::from_utf8_lossy(&environ).contains("PRIVATE KEY"));
    child.kill().unwrap();
    child.wait().unwrap();

    // Malformed secrets, or a descriptor that is not open, stop the daemon naming it.
    let check = |fd: &str, text: &str| {
        let (reader, mut writer) = std::io::pipe().unwrap();
        writer.write_all(text.as_bytes()).unwrap();
        drop(writer);
        let out = server()
            .arg("check-config")
            .env("CHEF_SECRETS_FD", fd)
            .stdin(reader)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = check("0", "[1,2]");
    assert!(!ok && err.contains("CHEF_SECRETS_FD"), "{err}");
    let (ok, err) = check("57", "{}");
    assert!(!ok && err.contains("CHEF_SECRETS_FD=57"), "{err}");
    assert!(check("0", "{}").0);
}

/// The ctl makes the pipe as root and the daemon runs as Chef Server's user: the daemon
/// reads the descriptor it inherited, which that user may do, rather than reopening the
/// root-owned pipe through `/proc/self/fd`, which it may not. Needs root to switch users.
#[test]
fn secrets_from_a_root_owned_pipe_reach_a_daemon_running_as_another_user() {
    use std::io::Write as _;
    use std::os::unix::process::CommandExt as _;
    let id = |args: &[&str]| -> Option<u32> {
        let out = Command::new("id").args(args).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    if id(&["-u"]) != Some(0) {
        eprintln!("SKIPPED: needs root to switch users");
        return;
    }
    let (Some(uid), Some(gid)) = (id(&["-u", "nobody"]), id(&["-g", "nobody"])) else {
        eprintln!("SKIPPED: no user nobody");
        return;
    };
    let run = |text: &str| {
        let (reader, mut writer) = std::io::pipe().unwrap();
        writer.write_all(text.as_bytes()).unwrap();
        drop(writer);
        let out = server()
            .arg("check-config")
            .env("CHEF_SECRETS_FD", "0")
            .stdin(reader)
            .current_dir("/")
            .uid(uid)
            .gid(gid)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = run("{\"push-jobs-server\": {\"sql_password\": \"pw\"}}\n");
    assert!(ok, "{err}");
    // It really read the pipe: what it holds decides.
    let (ok, err) = run("[1,2]\n");
    assert!(
        !ok && err.contains("CHEF_SECRETS_FD is not a JSON object"),
        "{err}"
    );
}

/// A database that cannot be reached is named, host and port, and the password is not.
#[test]
fn fixes_a_database_error_names_host_and_port_but_not_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (ok, err) = run_with(
        &format!(
            "[pushy]\nzeromq_listen_address = \"tcp://127.0.0.1\"\nserver_heartbeat_port = 0\ncommand_port = 0\n\
             [database]\nengine = \"postgresql\"\nhost = \"127.0.0.1\"\nport = {port}\n\
             user = \"pushy_rw\"\npassword = \"s3cret-Pa55\"\nname = \"pushy_db\"\n"
        ),
        &["serve", "--listen", "127.0.0.1:0"],
    );
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "PostgreSQL database pushy_db on 127.0.0.1:{port} as user pushy_rw"
        )),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
}
