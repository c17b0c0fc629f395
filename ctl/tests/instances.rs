//! `opscode_pushy_server['instances']`: what reconfigure's daemon and nginx steps write for one
//! instance (the default) stays byte for byte what it wrote before the setting existed
//! (`testdata/single-instance/`), and several instances get a config, ports and a service each
//! and one nginx upstream listing them all. No database is needed: only the file steps run.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use pushy_ctl::chef_server::{ChefServer, Host};
use pushy_ctl::converge::Converge;
use pushy_ctl::paths::Paths;
use pushy_ctl::settings::{self, Settings};
use pushy_ctl::user_config::{Attributes, parse_rb};
use pushy_ctl::{daemon, nginx};

fn chef() -> ChefServer {
    let running = serde_json::json!({
        "private_chef": {
            "topology": "standalone",
            "api_fqdn": "chef.example.com",
            "lb": {"api_fqdn": "chef.example.com"},
            "postgresql": {"vip": "127.0.0.1", "port": 5432, "db_superuser": "opscode-pgsql"},
            "user": {"username": "opscode"},
            "install_path": "/opt/opscode",
            "nginx": {"dir": "/var/opt/opscode/nginx"}
        }
    });
    ChefServer::from_json(Path::new("/etc/opscode/chef-server-running.json"), &running).unwrap()
}

fn settings(rb: &str) -> Settings {
    let tree = parse_rb(Path::new("/etc/p.rb"), rb, None).unwrap();
    let attrs: Attributes = Attributes::from_tree(&tree).unwrap().0;
    let host = Host {
        fqdn: "push1.example.com".into(),
        bootstrapped: false,
    };
    settings::compute(&attrs, &chef(), &host).unwrap()
}

/// Runs the nginx and daemon steps under a fresh root (with Chef Server's runit when `runit`)
/// and returns every file written, by its path under the root.
fn files_written(rb: &str, runit: bool) -> BTreeMap<PathBuf, String> {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::new(dir.path());
    if runit {
        let sv = dir.path().join("opt/opscode/embedded/bin/sv");
        fs::create_dir_all(sv.parent().unwrap()).unwrap();
        fs::write(&sv, "").unwrap();
        fs::create_dir_all(dir.path().join("opt/opscode/sv")).unwrap();
    }
    let settings = settings(rb);
    let chef = chef();
    let mut converge = Converge::new(None);
    let nginx = nginx::configure(&paths, &settings, &chef, &mut converge).unwrap();
    let daemon = daemon::configure(&paths, &settings, &chef, &mut converge).unwrap();
    let mut out = BTreeMap::new();
    for path in converge.changed {
        let text = if path.is_symlink() {
            format!("-> {}\n", fs::read_link(&path).unwrap().display())
        } else if path.is_file() {
            fs::read_to_string(&path).unwrap()
        } else {
            continue;
        };
        out.insert(path.strip_prefix(dir.path()).unwrap().to_path_buf(), text);
    }
    let actions: Vec<String> = nginx
        .restart
        .iter()
        .chain(&daemon.actions)
        .map(|a| format!("{}\n", a.command_line()))
        .collect();
    out.insert(PathBuf::from("(commands)"), actions.concat());
    out
}

fn dump(files: &BTreeMap<PathBuf, String>) -> String {
    let mut out = String::new();
    for (path, text) in files {
        out.push_str(&format!("==> /{} <==\n{text}", path.display()));
    }
    out
}

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/single-instance")
        .join(name)
}

#[test]
fn one_instance_renders_exactly_what_it_always_did() {
    for (name, runit) in [("systemd.txt", false), ("runit.txt", true)] {
        let got = dump(&files_written("", runit));
        if std::env::var_os("PUSHY_CTL_BLESS").is_some() {
            fs::write(golden(name), &got).unwrap();
        }
        let want = fs::read_to_string(golden(name)).unwrap();
        assert_eq!(got, want, "{name}");
        // Saying so explicitly is the same.
        let explicit = dump(&files_written(
            "opscode_pushy_server['instances'] = 1\n",
            runit,
        ));
        assert_eq!(explicit, want, "{name}, instances = 1");
    }
}

#[test]
fn three_instances_get_a_config_ports_and_a_service_each_and_one_upstream() {
    let rb = "opscode_pushy_server['instances'] = 3\nopscode_pushy_server['cluster_advertise_host'] = 'push.example.com'\n";
    let files = files_written(rb, false);
    let text = |p: &str| {
        files
            .get(Path::new(p))
            .unwrap_or_else(|| panic!("{p} not written: {:?}", files.keys()))
            .clone()
    };
    let mut seen_ports = Vec::new();
    for (n, suffix) in [(0u16, ""), (1, "-1"), (2, "-2")] {
        let dir = format!("var/opt/opscode-push-jobs-server/opscode-pushy-server{suffix}");
        let config_text = text(&format!("{dir}/opscode-pushy-server.toml"));
        let config =
            pushy_server::config::Config::from_toml(&config_text, "instance config").unwrap();
        assert!(config.cluster.enabled, "{config_text}");
        assert_eq!(
            config.cluster.advertise_host.as_deref(),
            Some("push.example.com")
        );
        assert_eq!(
            config.database.engine,
            pushy_server::config::DatabaseEngine::Postgresql
        );
        assert_eq!(config.data_dir, Path::new("/").join(&dir));
        let ports = [
            config.pushy.api_port,
            config.pushy.server_heartbeat_port,
            config.pushy.command_port,
        ];
        assert_eq!(ports, [10003 + 100 * n, 10000 + 100 * n, 10002 + 100 * n]);
        seen_ports.extend(ports);

        let service = format!("opscode-pushy-server{suffix}");
        let unit = text(&format!("etc/systemd/system/{service}.service"));
        assert!(
            unit.contains(&format!(
                "launch --config /{dir}/opscode-pushy-server.toml --user opscode\n"
            )),
            "{unit}"
        );
        assert!(unit.contains(&format!("Description=Chef Push Jobs server ({service})\n")));
        let log = format!("/var/log/opscode/opscode-pushy-server{suffix}");
        assert!(unit.contains(&format!("StandardOutput=append:{log}/current\n")));
        assert!(
            text(&format!("etc/logrotate.d/{service}")).contains(&format!("\"{log}/current\""))
        );
    }
    seen_ports.sort_unstable();
    seen_ports.dedup();
    assert_eq!(seen_ports.len(), 9, "every port distinct");

    assert_eq!(
        text("var/opt/opscode/nginx/etc/addon.d/10-push_jobs_upstreams.conf"),
        "# Push Jobs server, written by `push-jobs-server-ctl reconfigure`; changes are overwritten.\n\
         upstream opscode_pushy {\n  server chef.example.com:10003;\n  server chef.example.com:10103;\n  server chef.example.com:10203;\n}\n"
    );
    assert_eq!(
        text("(commands)"),
        "/opt/opscode/bin/chef-server-ctl restart nginx\n\
         systemctl daemon-reload\nsystemctl enable opscode-pushy-server\nsystemctl restart opscode-pushy-server\n\
         systemctl daemon-reload\nsystemctl enable opscode-pushy-server-1\nsystemctl restart opscode-pushy-server-1\n\
         systemctl daemon-reload\nsystemctl enable opscode-pushy-server-2\nsystemctl restart opscode-pushy-server-2\n"
    );
}

#[test]
fn under_runit_each_instance_is_its_own_runit_service() {
    let files = files_written("opscode_pushy_server['instances'] = 2\n", true);
    let run = &files[Path::new("opt/opscode/sv/opscode-pushy-server-1/run")];
    assert!(
        run.contains("launch --config /var/opt/opscode-push-jobs-server/opscode-pushy-server-1/opscode-pushy-server.toml --user opscode\n"),
        "{run}"
    );
    assert_eq!(
        files[Path::new("opt/opscode/sv/opscode-pushy-server-1/log/run")],
        "#!/bin/sh\nexec /opt/opscode/embedded/bin/svlogd -tt /var/log/opscode/opscode-pushy-server-1\n"
    );
    assert_eq!(
        files[Path::new("opt/opscode/service/opscode-pushy-server-1")],
        "-> /opt/opscode/sv/opscode-pushy-server-1\n"
    );
    // No advertise_host unless set: the daemon uses its server_name.
    let config = &files[Path::new(
        "var/opt/opscode-push-jobs-server/opscode-pushy-server/opscode-pushy-server.toml",
    )];
    assert!(config.ends_with("[cluster]\nenabled = true\n"), "{config}");
}

#[test]
fn several_instances_need_postgresql() {
    let file = Path::new(
        "/var/opt/opscode-push-jobs-server/opscode-pushy-server/opscode-pushy-server.toml",
    );
    let sqlite = "data_dir = \"/x\"\n[database]\nengine = \"sqlite\"\n";
    let err = pushy_ctl::instances::require_postgresql(3, file, sqlite).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "opscode_pushy_server['instances'] = 3 needs the PostgreSQL store: the instances of a cluster share its rows, but {} uses database engine \"sqlite\"; set instances to 1 or use PostgreSQL",
            file.display()
        )
    );
    // No [database] section at all is the daemon's default, SQLite.
    assert!(pushy_ctl::instances::require_postgresql(2, file, "data_dir = \"/x\"\n").is_err());
    // One instance does not care; PostgreSQL is fine with any number.
    assert!(pushy_ctl::instances::require_postgresql(1, file, sqlite).is_ok());
    let pg = "[database]\nengine = \"postgresql\"\n";
    assert!(pushy_ctl::instances::require_postgresql(3, file, pg).is_ok());
}

#[test]
fn ports_that_collide_overflow_or_are_zero_are_refused_by_name() {
    let plan = |rb: &str| pushy_ctl::instances::plan(&settings(rb)).map(|p| p.len());
    assert_eq!(plan("opscode_pushy_server['instances'] = 4\n").unwrap(), 4);
    let err =
        plan("opscode_pushy_server['instances'] = 2\nopscode_pushy_server['api_port'] = 10100\n")
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("instance 1's server_heartbeat_port and instance 0's api_port are both 10100"),
        "{err}"
    );
    let err =
        plan("opscode_pushy_server['instances'] = 3\nopscode_pushy_server['api_port'] = 65500\n")
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("instance 1's api_port would be beyond 65535"),
        "{err}"
    );
    let err =
        plan("opscode_pushy_server['instances'] = 2\nopscode_pushy_server['command_port'] = 0\n")
            .unwrap_err()
            .to_string();
    assert_eq!(
        err,
        "opscode_pushy_server['instances'] = 2 needs fixed ports, but opscode_pushy_server['command_port'] is 0"
    );
    // One instance keeps today's rules (0 binds a free port).
    assert_eq!(
        plan("opscode_pushy_server['command_port'] = 0\n").unwrap(),
        1
    );
    // 0 instances is not a number of daemons.
    let tree = parse_rb(
        Path::new("/etc/p.rb"),
        "opscode_pushy_server['instances'] = 0\n",
        None,
    )
    .unwrap();
    let err = Attributes::from_tree(&tree).unwrap_err().to_string();
    assert_eq!(
        err,
        "/etc/p.rb:1: opscode_pushy_server['instances'] must be an integer of at least 1, not 0"
    );
}
