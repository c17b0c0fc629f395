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

#[test]
fn launch_hands_the_secrets_over_in_the_environment() {
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
    write(
        &daemon,
        "#!/bin/sh\nprintf '%s\\n' \"$@\" > \"$HOME/args\"\nprintf '%s' \"$CHEF_SECRETS_DATA\" > \"$HOME/secrets\"\nid -u > \"$HOME/uid\"\npwd > \"$HOME/cwd\"\n",
    );
    fs::set_permissions(&daemon, fs::Permissions::from_mode(0o755)).unwrap();
    let home = root.join("var/opt/pushy");
    fs::create_dir_all(&home).unwrap();

    let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .unwrap()
        .unwrap();
    let out = ctl(
        root,
        &[
            "launch",
            "--config",
            "/var/opt/pushy/server.toml",
            "--user",
            &me.name,
        ],
    );
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
    let secrets = pushy_server::secrets::Secrets::parse(&data, "test").unwrap();
    let store = pushy_ctl::veil::SecretsFile::load(&paths.chef_secrets_file()).unwrap();
    for (group, name) in [
        ("push-jobs-server", "pushy_priv_key"),
        ("push-jobs-server", "pushy_pub_key"),
        ("push-jobs-server", "sql_password"),
        ("chef-server", "superuser_key"),
    ] {
        assert_eq!(
            secrets.get(group, name),
            store.get(group, name),
            "{group}.{name}"
        );
    }
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
