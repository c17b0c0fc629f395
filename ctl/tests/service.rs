//! The service commands and the hidden `launch` the service definition runs, through the
//! binary under a temporary root (nothing there touches the real system: commands are
//! printed as what would run).

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

use pushy_ctl::paths::Paths;

const CTL: &str = env!("CARGO_BIN_EXE_push-jobs-server-ctl");

fn ctl(root: &Path, args: &[&str]) -> Output {
    Command::new(CTL)
        .args(args)
        .env("PUSHY_CTL_ROOT", root)
        .env("PUSHY_CTL_FQDN", "push1.example.com")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

#[test]
fn service_commands_act_on_the_real_service_or_say_what_would_run() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // Not set up yet: omnibus-ctl's "disabled".
    let out = ctl(root, &["status"]);
    assert_eq!(
        (out.status.code(), stdout(&out)),
        (Some(0), "opscode-pushy-server disabled\n".into())
    );
    let out = ctl(root, &["start"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&ctl(root, &["service-list"])), "");

    // With the unit reconfigure writes.
    write(
        &root.join("etc/systemd/system/opscode-pushy-server.service"),
        "[Unit]\n",
    );
    let cases: &[(&str, &str)] = &[
        ("status", "systemctl status --no-pager opscode-pushy-server"),
        ("start", "systemctl start opscode-pushy-server"),
        ("stop", "systemctl stop opscode-pushy-server"),
        ("restart", "systemctl restart opscode-pushy-server"),
        ("hup", "systemctl kill --signal=SIGHUP opscode-pushy-server"),
        (
            "usr2",
            "systemctl kill --signal=SIGUSR2 opscode-pushy-server",
        ),
    ];
    for (command, line) in cases {
        let out = ctl(root, &[command, "opscode-pushy-server"]);
        assert_eq!(out.status.code(), Some(0), "{command}");
        assert_eq!(
            stdout(&out),
            format!("would run `{line}` (root is {}, not /)\n", root.display())
        );
    }
    assert_eq!(
        stdout(&ctl(root, &["service-list"])),
        "opscode-pushy-server*\n"
    );
    // Another service name is not ours.
    let out = ctl(root, &["stop", "nginx"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("unknown service nginx"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn tail_follows_the_daemons_real_log_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let logs = root.join("var/log/opscode/opscode-pushy-server");
    write(&logs.join("current"), "");
    write(&logs.join("@400000005f.s"), "");
    write(&logs.join("lock"), "");
    write(&logs.join("sasl/x"), "");
    write(&logs.join("jobs.log"), "");
    let out = ctl(root, &["tail"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        format!(
            "would run `tail --follow=name --retry {l}/current {l}/jobs.log` (root is {r}, not /)\n",
            l = logs.display(),
            r = root.display()
        )
    );
}

/// A stand-in daemon that records what it was given: arguments, its environment as
/// `/proc/PID/environ` shows it, the secrets read from the inherited descriptor (and what a
/// second read finds there), its uid and working directory.
const STAND_IN_DAEMON: &str = r#"#!/bin/sh
printf '%s\n' "$@" > "$HOME/args"
tr '\0' '\n' < /proc/$$/environ > "$HOME/environ"
cat <&"$CHEF_SECRETS_FD" > "$HOME/secrets"
cat <&"$CHEF_SECRETS_FD" > "$HOME/secrets-again"
id -u > "$HOME/uid"
pwd > "$HOME/cwd"
"#;

/// ops.md §3.4: the secrets reach the daemon through a pipe named by `CHEF_SECRETS_FD`, not
/// through `CHEF_SECRETS_DATA`, which `/proc/PID/environ` would show for the daemon's life.
#[test]
fn launch_hands_the_secrets_over_in_a_pipe_not_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let paths = Paths::new(root);
    // A secrets file as reconfigure leaves it, with the pivotal key.
    let pivotal = openssl::rsa::Rsa::generate(2048)
        .unwrap()
        .private_key_to_pem()
        .unwrap();
    write(&paths.pivotal_pem(), std::str::from_utf8(&pivotal).unwrap());
    pushy_ctl::secrets::bootstrap(&paths).unwrap();
    // A stand-in daemon that records what it was given.
    let daemon = root.join("opt/opscode-push-jobs-server/bin/opscode-pushy-server");
    write(&daemon, STAND_IN_DAEMON);
    fs::set_permissions(&daemon, fs::Permissions::from_mode(0o755)).unwrap();
    let home = root.join("var/opt/pushy");
    fs::create_dir_all(&home).unwrap();

    let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .unwrap()
        .unwrap();
    let out = Command::new(CTL)
        .args([
            "launch",
            "--config",
            "/var/opt/pushy/server.toml",
            "--user",
            &me.name,
        ])
        .env("PUSHY_CTL_ROOT", root)
        .env_remove("RUST_LOG")
        // A variable left in the launcher's own environment is not passed on.
        .env("CHEF_SECRETS_DATA", "{\"stale\":{}}")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read_to_string(home.join("args")).unwrap(),
        format!("--config\n{}\nserve\n", home.join("server.toml").display())
    );
    assert_eq!(
        fs::read_to_string(home.join("uid")).unwrap().trim(),
        me.uid.to_string()
    );
    assert_eq!(
        fs::read_to_string(home.join("cwd")).unwrap().trim(),
        home.display().to_string()
    );
    let data = fs::read_to_string(home.join("secrets")).unwrap();
    assert!(data.ends_with("}\n"), "the packed JSON and a newline");
    let secrets = pushy_server::secrets::Secrets::parse(&data, "test").unwrap();
    let store = pushy_ctl::veil::SecretsFile::load(&paths.chef_secrets_file()).unwrap();
    let environ = fs::read_to_string(home.join("environ")).unwrap();
    assert!(
        environ.lines().any(|l| l.starts_with("CHEF_SECRETS_FD=")),
        "{environ}"
    );
    assert!(!environ.contains("CHEF_SECRETS_DATA"), "{environ}");
    for (group, name) in [
        ("push-jobs-server", "pushy_priv_key"),
        ("push-jobs-server", "pushy_pub_key"),
        ("push-jobs-server", "sql_password"),
        ("chef-server", "superuser_key"),
    ] {
        let value = store.get(group, name).unwrap();
        assert_eq!(secrets.get(group, name), Some(value), "{group}.{name}");
        let secret_line = value
            .lines()
            .find(|l| !l.starts_with("-----"))
            .unwrap_or(value);
        assert!(
            !environ.contains(secret_line),
            "{group}.{name} is in the daemon's /proc/PID/environ"
        );
    }
    assert_eq!(
        fs::read_to_string(home.join("secrets-again")).unwrap(),
        "",
        "the pipe holds the secrets once"
    );
    assert_eq!(
        secrets.get("push-jobs-server", "sql_ro_password"),
        None,
        "only what the daemon needs"
    );

    // A user that does not exist (as root) or a missing secret stops the launch.
    if nix::unistd::geteuid().is_root() {
        let out = ctl(
            root,
            &[
                "launch",
                "--config",
                "/var/opt/pushy/server.toml",
                "--user",
                "no-such-user-pjctl",
            ],
        );
        assert_eq!(out.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("user no-such-user-pjctl does not exist")
        );
    }
    fs::remove_file(paths.chef_secrets_file()).unwrap();
    let out = ctl(root, &["launch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("private-chef-secrets.json does not exist")
    );
}

/// As root, the launcher becomes the service user before the exec; the pipe it made as root
/// is still readable through the inherited descriptor.
#[test]
fn launch_as_root_hands_the_pipe_to_the_service_user() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root to switch users");
        return;
    }
    let Some(nobody) = nix::unistd::User::from_name("nobody").unwrap() else {
        eprintln!("SKIPPED: no user nobody");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
    let paths = Paths::new(root);
    let pivotal = openssl::rsa::Rsa::generate(2048)
        .unwrap()
        .private_key_to_pem()
        .unwrap();
    write(&paths.pivotal_pem(), std::str::from_utf8(&pivotal).unwrap());
    pushy_ctl::secrets::bootstrap(&paths).unwrap();
    let daemon = root.join("opt/opscode-push-jobs-server/bin/opscode-pushy-server");
    write(&daemon, STAND_IN_DAEMON);
    fs::set_permissions(&daemon, fs::Permissions::from_mode(0o755)).unwrap();
    let home = root.join("var/opt/pushy");
    fs::create_dir_all(&home).unwrap();
    fs::set_permissions(&home, fs::Permissions::from_mode(0o777)).unwrap();

    let out = ctl(
        root,
        &[
            "launch",
            "--config",
            "/var/opt/pushy/server.toml",
            "--user",
            "nobody",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read_to_string(home.join("uid")).unwrap().trim(),
        nobody.uid.to_string()
    );
    let data = fs::read_to_string(home.join("secrets")).unwrap();
    let secrets = pushy_server::secrets::Secrets::parse(&data, "test").unwrap();
    let store = pushy_ctl::veil::SecretsFile::load(&paths.chef_secrets_file()).unwrap();
    assert_eq!(
        secrets.get("chef-server", "superuser_key"),
        store.get("chef-server", "superuser_key")
    );
}

/// Under systemd the daemon's output is appended to `current`; the logrotate file reconfigure
/// writes keeps it to `log_rotation`'s size and count, as svlogd does under runit. Run with
/// the real logrotate (skipped where it is not installed).
#[test]
fn under_systemd_logrotate_applies_log_rotation() {
    let Ok(version) = Command::new("logrotate").arg("--version").output() else {
        eprintln!("SKIPPED: logrotate is not installed");
        return;
    };
    assert!(version.status.success());
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("log dir");
    fs::create_dir(&logs).unwrap();
    let rotation = pushy_ctl::user_config::LogRotation {
        file_maxbytes: 1000,
        num_to_keep: 2,
    };
    let conf = dir.path().join("opscode-pushy-server");
    write(
        &conf,
        &pushy_ctl::daemon::render_logrotate(&logs, &rotation).unwrap(),
    );
    let current = logs.join("current");
    let state = dir.path().join("state");
    let logrotate = || {
        let out = Command::new("logrotate")
            .arg("--state")
            .arg(&state)
            .arg(&conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let names = |logs: &Path| {
        let mut n: Vec<String> = fs::read_dir(logs)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    };

    // Under the size: left alone.
    fs::write(&current, "x".repeat(900)).unwrap();
    logrotate();
    assert_eq!(names(&logs), ["current"]);
    assert_eq!(fs::metadata(&current).unwrap().len(), 900);

    // Over it: copied aside and truncated in place (the daemon's descriptor stays valid).
    let mut file = fs::OpenOptions::new().append(true).open(&current).unwrap();
    std::io::Write::write_all(&mut file, &[b'y'; 300]).unwrap();
    let inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&current).unwrap());
    logrotate();
    assert_eq!(names(&logs), ["current", "current.1"]);
    assert_eq!(fs::metadata(&current).unwrap().len(), 0);
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&fs::metadata(&current).unwrap()),
        inode
    );
    assert_eq!(fs::metadata(logs.join("current.1")).unwrap().len(), 1200);
    std::io::Write::write_all(&mut file, b"after\n").unwrap();
    assert_eq!(fs::read_to_string(&current).unwrap(), "after\n");

    // num_to_keep old files at most.
    for round in 0..3 {
        std::io::Write::write_all(&mut file, &[b'0' + round; 1500]).unwrap();
        logrotate();
    }
    assert_eq!(names(&logs), ["current", "current.1", "current.2"]);
}

#[test]
fn launch_is_not_listed_in_help() {
    let dir = tempfile::tempdir().unwrap();
    let out = ctl(dir.path(), &["help"]);
    assert!(!stdout(&out).contains("launch"));
}

#[test]
fn uninstall_stops_and_removes_the_service_but_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let unit = root.join("etc/systemd/system/opscode-pushy-server.service");
    write(&unit, "[Unit]\n");
    let rb = root.join("etc/opscode-push-jobs-server/opscode-push-jobs-server.rb");
    write(&rb, "opscode_pushy_server['heartbeat_interval'] = 5000\n");
    let data = root.join("var/opt/opscode-push-jobs-server/bootstrapped");
    write(&data, "x");
    write(&root.join("tmp/opt/x"), "x");
    let out = ctl(root, &["uninstall"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    for line in [
        "would run `systemctl stop opscode-pushy-server`",
        "would run `systemctl disable opscode-pushy-server`",
        "would run `systemctl daemon-reload`",
        "Your config files have been backed up to /root/opscode-push-jobs-server-cleanse-",
    ] {
        assert!(text.contains(line), "{line} missing from {text}");
    }
    assert!(!text.contains("60 seconds"), "uninstall does not wait");
    assert!(!unit.exists() && !root.join("tmp/opt").exists());
    assert!(rb.is_file() && data.is_file(), "data is preserved");
    let backups: Vec<_> = fs::read_dir(root.join("root")).unwrap().collect();
    assert_eq!(backups.len(), 1);
    // Nothing left to stop: the service is now "disabled".
    assert_eq!(
        stdout(&ctl(root, &["status"])),
        "opscode-pushy-server disabled\n"
    );
}
