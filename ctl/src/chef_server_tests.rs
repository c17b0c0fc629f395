//! Tests for reading Chef Server's running JSON and for `compute`: one test per topology rule of
//! ops.md §1.3, and `settings::load` end to end under a temporary root.

use std::fs;

use serde_json::json;

use super::*;
use crate::paths::Paths;
use crate::settings::{self, Role, compute};
use crate::user_config::{Attributes, parse_rb};

fn running(topology: &str) -> Value {
    json!({
        "private_chef": {
            "topology": topology,
            "api_fqdn": "chef.example.com",
            "lb": {"api_fqdn": "lb.chef.example.com"},
            "backend_vips": {"ipaddress": "10.0.0.10", "device": "eth0"},
            "servers": {
                "be1.example.com": {"ipaddress": "10.0.0.11", "role": "backend", "bootstrap": true},
                "fe1.example.com": {"ipaddress": "10.0.0.21", "role": "frontend"},
                "odd.example.com": {"ipaddress": "10.0.0.31", "role": "monitor"},
                "bare.example.com": {"ipaddress": "10.0.0.41"}
            },
            "postgresql": {"vip": "10.0.0.50", "port": 5433, "db_superuser": "chef_pgsql", "external": true},
            "user": {"username": "chefsvc", "shell": "/bin/sh"},
            "install_path": "/opt/opscode",
            "nginx": {"dir": "/var/opt/opscode/nginx", "url": "https://chef.example.com", "ssl_protocols": "TLSv1.2 TLSv1.3"},
            "default_orgname": "acme"
        },
        "runit": {"sv_dir": "/opt/opscode/sv"},
        "run_list": ["recipe[private-chef::default]"]
    })
}

fn chef(topology: &str) -> ChefServer {
    ChefServer::from_json(
        Path::new("/etc/opscode/chef-server-running.json"),
        &running(topology),
    )
    .unwrap()
}

fn attrs(rb: &str) -> Attributes {
    let tree = parse_rb(Path::new("/etc/p.rb"), rb, None).unwrap();
    Attributes::from_tree(&tree).unwrap().0
}

fn host(fqdn: &str) -> Host {
    Host {
        fqdn: fqdn.into(),
        bootstrapped: false,
    }
}

#[test]
fn the_running_json_gives_what_the_add_on_needs() {
    let c = chef("tier");
    assert_eq!(c.topology, "tier");
    assert_eq!(c.role_of("be1.example.com"), Some(Some("backend")));
    assert_eq!(c.role_of("bare.example.com"), Some(None));
    assert_eq!(c.role_of("nowhere"), None);
    assert_eq!(c.backend_vip.as_deref(), Some("10.0.0.10"));
    assert_eq!(c.api_fqdn.as_deref(), Some("chef.example.com"));
    assert_eq!(c.lb_api_fqdn.as_deref(), Some("lb.chef.example.com"));
    assert_eq!(
        c.postgresql,
        ChefPostgresql {
            vip: "10.0.0.50".into(),
            port: 5433,
            db_superuser: "chef_pgsql".into(),
            external: true
        }
    );
    assert_eq!(c.user, "chefsvc");
    assert_eq!(c.install_path, Path::new("/opt/opscode"));
    assert_eq!(c.nginx.dir, Path::new("/var/opt/opscode/nginx"));
    assert_eq!(c.nginx.ssl_protocols.as_deref(), Some("TLSv1.2 TLSv1.3"));
    assert_eq!(c.default_orgname.as_deref(), Some("acme"));
}

#[test]
fn absent_keys_take_chef_servers_defaults() {
    let c = ChefServer::from_json(Path::new("r.json"), &json!({"private_chef": {}})).unwrap();
    assert_eq!(c.topology, "standalone");
    assert_eq!(
        c.postgresql,
        ChefPostgresql {
            vip: "127.0.0.1".into(),
            port: 5432,
            db_superuser: "opscode-pgsql".into(),
            external: false
        }
    );
    assert_eq!(c.user, "opscode");
    assert_eq!(c.install_path, Path::new("/opt/opscode"));
    assert_eq!(c.nginx.dir, Path::new("/var/opt/opscode/nginx"));
    assert!(c.servers.is_empty());
}

#[test]
fn a_missing_running_json_says_to_reconfigure_chef_server_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chef-server-running.json");
    let err = ChefServer::load(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} does not exist: run chef-server-ctl reconfigure first",
            path.display()
        )
    );
}

#[test]
fn a_broken_running_json_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chef-server-running.json");
    for (content, needle) in [
        ("{not json", "not JSON"),
        ("{\"runit\": {}}", "no private_chef object"),
        (
            "{\"private_chef\": {\"postgresql\": {\"port\": \"high\"}}}",
            "private_chef['postgresql']['port'] must be a port number",
        ),
        (
            "{\"private_chef\": {\"lb\": {\"api_fqdn\": 5}}}",
            "private_chef['lb']['api_fqdn'] must be a string",
        ),
        (
            "{\"private_chef\": {\"servers\": []}}",
            "private_chef['servers'] must be an object",
        ),
    ] {
        fs::write(&path, content).unwrap();
        let err = ChefServer::load(&path).unwrap_err().to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains(needle),
            "{content}: {err}"
        );
    }
}

#[test]
fn standalone_vip_is_the_lb_api_fqdn_and_postgres_comes_from_chef_server() {
    let user = attrs(
        "postgresql['vip'] = '1.2.3.4'\npostgresql['port'] = 1\npostgresql['db_superuser'] = 'me'\n",
    );
    let s = compute(&user, &chef("standalone"), &host("anything")).unwrap();
    assert_eq!(s.role, Role::Standalone);
    assert!(s.data_master);
    assert_eq!(s.server.vip, "lb.chef.example.com");
    assert_eq!(s.server.server_name_advertised, "lb.chef.example.com");
    assert!(s.server.enable && !s.server.ha && s.bootstrap.enable);
    assert_eq!(
        (
            s.postgresql.vip.as_str(),
            s.postgresql.port,
            s.postgresql.db_superuser.as_str(),
            s.postgresql.external
        ),
        ("10.0.0.50", 5433, "chef_pgsql", true)
    );
    assert_eq!(s.chef_base_path, Path::new("/opt/opscode"));
    assert_eq!(s.install_path, Path::new("/opt/opscode-push-jobs-server"));
}

#[test]
fn standalone_falls_back_to_api_fqdn_then_fails_clearly() {
    let mut doc = running("standalone");
    doc["private_chef"].as_object_mut().unwrap().remove("lb");
    let c = ChefServer::from_json(Path::new("r.json"), &doc).unwrap();
    assert_eq!(
        compute(&attrs(""), &c, &host("h")).unwrap().server.vip,
        "chef.example.com"
    );
    doc["private_chef"]
        .as_object_mut()
        .unwrap()
        .remove("api_fqdn");
    let c = ChefServer::from_json(Path::new("r.json"), &doc).unwrap();
    let err = compute(&attrs(""), &c, &host("h")).unwrap_err();
    assert!(matches!(err, Error::NoApiFqdn { .. }), "{err}");
    // A user vip needs neither.
    assert_eq!(
        compute(
            &attrs("opscode_pushy_server['vip'] = 'p'\n"),
            &c,
            &host("h")
        )
        .unwrap()
        .server
        .vip,
        "p"
    );
}

#[test]
fn a_user_vip_and_advertised_name_win() {
    let user = attrs(
        "opscode_pushy_server['vip'] = 'push.example.com'\nopscode_pushy_server['server_name_advertised'] = 'public.example.com'\n",
    );
    for (topology, fqdn) in [
        ("standalone", "x"),
        ("tier", "be1.example.com"),
        ("ha", "fe1.example.com"),
    ] {
        let s = compute(&user, &chef(topology), &host(fqdn)).unwrap();
        assert_eq!(s.server.vip, "push.example.com", "{topology}");
        assert_eq!(
            s.server.server_name_advertised, "public.example.com",
            "{topology}"
        );
    }
}

#[test]
fn tier_backend_uses_the_backend_vip_and_runs_everything() {
    let user = attrs("opscode_pushy_server['ha'] = true\n");
    let s = compute(&user, &chef("tier"), &host("be1.example.com")).unwrap();
    assert_eq!(s.role, Role::Backend);
    assert_eq!(s.server.vip, "10.0.0.10");
    assert!(!s.server.ha, "tier forces ha to false");
    assert!(s.server.enable && s.bootstrap.enable && s.data_master);
}

#[test]
fn ha_backend_is_marked_ha_and_is_not_a_data_master() {
    let s = compute(&attrs(""), &chef("ha"), &host("be1.example.com")).unwrap();
    assert!(s.server.ha);
    assert_eq!(s.server.vip, "10.0.0.10");
    assert!(s.server.enable && !s.data_master);
}

#[test]
fn a_frontend_disables_the_daemon_and_bootstrap_unless_the_user_set_them() {
    for topology in ["tier", "ha"] {
        let s = compute(&attrs(""), &chef(topology), &host("fe1.example.com")).unwrap();
        assert_eq!(s.role, Role::Frontend);
        assert!(
            !s.server.enable && !s.bootstrap.enable && !s.data_master,
            "{topology}"
        );
        assert_eq!(s.server.vip, "10.0.0.10");
    }
    // The original's `||= false` keeps an explicit user value.
    let user = attrs("opscode_pushy_server['enable'] = true\nbootstrap['enable'] = true\n");
    let s = compute(&user, &chef("tier"), &host("fe1.example.com")).unwrap();
    assert!(s.server.enable && s.bootstrap.enable);
}

#[test]
fn an_unknown_role_is_the_originals_error() {
    for fqdn in ["odd.example.com", "bare.example.com"] {
        let err = compute(&attrs(""), &chef("tier"), &host(fqdn)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "I don't have a role for you!  Use 'backend' or 'frontend'."
        );
    }
    let err = compute(&attrs(""), &chef("ha"), &host("stranger.example.com")).unwrap_err();
    assert!(matches!(err, Error::NotInServers { .. }), "{err}");
    assert!(err.to_string().contains("stranger.example.com"), "{err}");
}

#[test]
fn tier_without_a_backend_vip_needs_a_user_vip() {
    let mut doc = running("tier");
    doc["private_chef"]
        .as_object_mut()
        .unwrap()
        .remove("backend_vips");
    let c = ChefServer::from_json(Path::new("r.json"), &doc).unwrap();
    let err = compute(&attrs(""), &c, &host("be1.example.com")).unwrap_err();
    assert!(matches!(err, Error::NoBackendVip { .. }), "{err}");
    let s = compute(
        &attrs("opscode_pushy_server['vip'] = 'v'\n"),
        &c,
        &host("be1.example.com"),
    )
    .unwrap();
    assert_eq!(s.server.vip, "v");
}

#[test]
fn the_bootstrapped_sentinel_turns_bootstrap_off_unless_the_user_set_it() {
    let bootstrapped = Host {
        fqdn: "h".into(),
        bootstrapped: true,
    };
    assert!(
        !compute(&attrs(""), &chef("standalone"), &bootstrapped)
            .unwrap()
            .bootstrap
            .enable
    );
    let user = attrs("bootstrap['enable'] = true\n");
    assert!(
        compute(&user, &chef("standalone"), &bootstrapped)
            .unwrap()
            .bootstrap
            .enable
    );
    let user = attrs("bootstrap['enable'] = false\n");
    assert!(
        !compute(&user, &chef("standalone"), &host("h"))
            .unwrap()
            .bootstrap
            .enable
    );
}

#[test]
fn node_view_is_chef_servers_tree_plus_this_host() {
    let view = chef("standalone").node_view("push1.example.com");
    assert_eq!(
        view["private_chef"]["lb"]["api_fqdn"],
        "lb.chef.example.com"
    );
    assert_eq!(view["runit"]["sv_dir"], "/opt/opscode/sv");
    assert_eq!(view["fqdn"], "push1.example.com");
    assert_eq!(view["hostname"], "push1");
}

#[test]
fn settings_load_applies_the_load_order_under_a_root() {
    let root = tempfile::tempdir().unwrap();
    let paths = Paths::new(root.path());
    // Without Chef Server's running JSON nothing else is read.
    fs::create_dir_all(paths.etc_dir()).unwrap();
    fs::write(paths.user_config_rb(), "this is not ruby we know\n").unwrap();
    let err = settings::load(&paths, "h").unwrap_err();
    assert!(
        err.to_string()
            .contains("run chef-server-ctl reconfigure first"),
        "{err}"
    );

    fs::create_dir_all(paths.chef_server_running_json().parent().unwrap()).unwrap();
    fs::write(
        paths.chef_server_running_json(),
        running("standalone").to_string(),
    )
    .unwrap();
    let err = settings::load(&paths, "h").unwrap_err().to_string();
    assert!(err.contains("opscode-push-jobs-server.rb:1:"), "{err}");

    fs::write(
        paths.user_config_rb(),
        "opscode_pushy_server['heartbeat_interval'] = 5000\n\
         opscode_pushy_server['server_name_advertised'] = node['private_chef']['api_fqdn']\n\
         opscode_pushy_server['log_rotation']['num_to_keep'] = 3\n\
         postgresql['port'] = 1\n",
    )
    .unwrap();
    fs::create_dir_all(paths.data_dir()).unwrap();
    fs::write(paths.bootstrapped(), "bootstrapped").unwrap();
    let loaded = settings::load(&paths, "h").unwrap();
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert_eq!(
        loaded.user_config.as_deref(),
        Some(paths.user_config_rb().as_path())
    );
    assert!(loaded.host.bootstrapped);
    let json = loaded.settings.to_pushy_json();
    let pushy = &json["pushy"];
    assert_eq!(pushy["install_path"], "/opt/opscode-push-jobs-server");
    assert_eq!(pushy["chef_base_path"], "/opt/opscode");
    assert_eq!(pushy["bootstrap"], json!({"enable": false}));
    let server = &pushy["opscode-pushy-server"];
    assert_eq!(server["vip"], "lb.chef.example.com");
    assert_eq!(server["server_name_advertised"], "chef.example.com");
    assert_eq!(server["heartbeat_interval"], 5000);
    assert_eq!(
        server["log_rotation"],
        json!({"file_maxbytes": 104857600, "num_to_keep": 3})
    );
    assert_eq!(server["enable"], true);
    assert_eq!(
        server["dir"],
        "/var/opt/opscode-push-jobs-server/opscode-pushy-server"
    );
    assert_eq!(pushy["postgresql"]["port"], 5433);
    assert_eq!(pushy["postgresql"]["db_superuser"], "chef_pgsql");
    assert_eq!(pushy["oc-chef-pedant"]["log_http_requests"], true);
    let keys: Vec<&str> = pushy
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "install_path",
            "chef_base_path",
            "bootstrap",
            "opscode-pushy-server",
            "postgresql",
            "oc-chef-pedant"
        ]
    );
}
