//! Tests for typing the user config: the defaults of ops.md §1.3, every attribute settable, type
//! errors naming file:line, and warnings for unknown and ignored settings.

use std::path::Path;

use super::*;
use crate::user_config::parse_rb;

fn typed(text: &str) -> Result<(Attributes, Vec<Warning>), Error> {
    let tree = parse_rb(Path::new("/etc/p.rb"), text, None).unwrap_or_else(|e| panic!("{e}"));
    Attributes::from_tree(&tree)
}

#[test]
fn the_defaults_are_the_cookbooks() {
    let (a, warnings) = typed("").unwrap();
    assert!(warnings.is_empty());
    assert_eq!(a, Attributes::default());
    let s = &a.opscode_pushy_server;
    assert_eq!(
        (
            s.enable,
            s.ha,
            s.vip.as_deref(),
            s.server_name_advertised.as_deref()
        ),
        (None, false, None, None)
    );
    let d = &s.daemon;
    assert_eq!(
        d.dir,
        Path::new("/var/opt/opscode-push-jobs-server/opscode-pushy-server")
    );
    assert_eq!(
        d.log_directory,
        Path::new("/var/log/opscode/opscode-pushy-server")
    );
    assert_eq!(
        (d.log_rotation.file_maxbytes, d.log_rotation.num_to_keep),
        (104_857_600, 10)
    );
    assert_eq!(d.listen, "127.0.0.1");
    assert_eq!(
        (
            d.db_pool_size,
            d.ibrowse_max_sessions,
            d.ibrowse_max_pipeline_size
        ),
        (20, 256, 1)
    );
    assert_eq!((d.max_body_size, d.heartbeat_interval), (65536, 10_000));
    assert_eq!(
        (d.zeromq_listen_address.as_str(), d.zmq_io_processes),
        ("tcp://*", 2)
    );
    assert_eq!(
        (d.server_heartbeat_port, d.command_port, d.api_port),
        (10000, 10002, 10003)
    );
    assert_eq!(
        (
            d.down_threshold,
            d.decay_window,
            d.detect_offline_nodes_interval
        ),
        (0.6, 4, 4)
    );
    assert!(d.validate_client_node_name);
    assert_eq!(
        (d.enable_graphite, d.graphite_host.as_str(), d.graphite_port),
        (false, "localhost", 2003)
    );
    assert_eq!(d.chef_api_version, "11.1.0");
    assert_eq!(d.keyring_dir, Path::new("/etc/opscode-push-jobs-server"));
    let pg = &a.postgresql;
    assert_eq!(
        (
            pg.database_name.as_str(),
            pg.username.as_str(),
            pg.sql_user.as_str(),
            pg.sql_ro_user.as_str()
        ),
        (
            "opscode_pushy",
            "opscode-pgsql",
            "opscode_pushy",
            "opscode_pushy_ro"
        )
    );
    assert_eq!(
        (pg.vip.as_str(), pg.port, pg.db_superuser.as_deref()),
        ("127.0.0.1", 5432, None)
    );
    assert_eq!(a.bootstrap.enable, None);
    assert_eq!(
        a.oc_chef_pedant.dir,
        Path::new("/var/opt/opscode/oc-chef-pedant")
    );
    assert_eq!(
        a.oc_chef_pedant.log_directory,
        Path::new("/var/log/opscode/oc-chef-pedant")
    );
    assert!(a.oc_chef_pedant.log_http_requests);
}

#[test]
fn every_attribute_can_be_set() {
    let text = "
opscode_pushy_server['enable'] = false
opscode_pushy_server['ha'] = true
opscode_pushy_server['vip'] = 'push.example.com'
opscode_pushy_server['server_name_advertised'] = 'push-public.example.com'
opscode_pushy_server['dir'] = '/srv/pushy'
opscode_pushy_server['log_directory'] = '/srv/log'
opscode_pushy_server['log_rotation']['file_maxbytes'] = 1000
opscode_pushy_server['log_rotation']['num_to_keep'] = 3
opscode_pushy_server['listen'] = '0.0.0.0'
opscode_pushy_server['db_pool_size'] = '40'
opscode_pushy_server['ibrowse_max_sessions'] = 10
opscode_pushy_server['ibrowse_max_pipeline_size'] = 2
opscode_pushy_server['max_body_size'] = 131072
opscode_pushy_server['heartbeat_interval'] = 5000
opscode_pushy_server['zeromq_listen_address'] = 'tcp://10.0.0.1'
opscode_pushy_server['zmq_io_processes'] = 2
opscode_pushy_server['server_heartbeat_port'] = 20000
opscode_pushy_server['command_port'] = '20002'
opscode_pushy_server['api_port'] = 20003
opscode_pushy_server['down_threshold'] = '0.5'
opscode_pushy_server['decay_window'] = 8
opscode_pushy_server['detect_offline_nodes_interval'] = 6
opscode_pushy_server['validate_client_node_name'] = 'false'
opscode_pushy_server['enable_graphite'] = true
opscode_pushy_server['graphite_host'] = 'graphite'
opscode_pushy_server['graphite_port'] = 2004
opscode_pushy_server['chef_api_version'] = '12.0.0'
postgresql['database_name'] = 'pushy'
postgresql['username'] = 'pg'
postgresql['sql_user'] = 'rw'
postgresql['sql_ro_user'] = 'ro'
bootstrap['enable'] = false
oc_chef_pedant['dir'] = '/srv/pedant'
oc_chef_pedant['log_directory'] = '/srv/pedant/log'
oc_chef_pedant['log_http_requests'] = false
";
    let (a, warnings) = typed(text).unwrap();
    // Typed (a wrong type is still an error), but they change nothing: a warning each.
    let ignored: Vec<String> = warnings.iter().map(|w| w.message.clone()).collect();
    let ignored: Vec<&str> = ignored
        .iter()
        .map(|m| m.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        ignored,
        [
            "opscode_pushy_server['ha']",
            "opscode_pushy_server['listen']",
            "opscode_pushy_server['ibrowse_max_sessions']",
            "opscode_pushy_server['ibrowse_max_pipeline_size']",
            "opscode_pushy_server['enable_graphite']",
            "opscode_pushy_server['graphite_host']",
            "opscode_pushy_server['graphite_port']",
        ]
    );
    let s = &a.opscode_pushy_server;
    assert_eq!(s.enable, Some(false));
    assert!(s.ha);
    assert_eq!(s.vip.as_deref(), Some("push.example.com"));
    assert_eq!(
        s.server_name_advertised.as_deref(),
        Some("push-public.example.com")
    );
    let d = &s.daemon;
    let want = Daemon {
        dir: "/srv/pushy".into(),
        log_directory: "/srv/log".into(),
        log_rotation: LogRotation {
            file_maxbytes: 1000,
            num_to_keep: 3,
        },
        listen: "0.0.0.0".into(),
        db_pool_size: 40,
        ibrowse_max_sessions: 10,
        ibrowse_max_pipeline_size: 2,
        max_body_size: 131_072,
        heartbeat_interval: 5000,
        zeromq_listen_address: "tcp://10.0.0.1".into(),
        zmq_io_processes: 2,
        server_heartbeat_port: 20000,
        command_port: 20002,
        api_port: 20003,
        down_threshold: 0.5,
        decay_window: 8,
        detect_offline_nodes_interval: 6,
        validate_client_node_name: false,
        enable_graphite: true,
        graphite_host: "graphite".into(),
        graphite_port: 2004,
        chef_api_version: "12.0.0".into(),
        keyring_dir: "/etc/opscode-push-jobs-server".into(),
    };
    assert_eq!(*d, want);
    assert_eq!(
        (
            a.postgresql.database_name.as_str(),
            a.postgresql.username.as_str()
        ),
        ("pushy", "pg")
    );
    assert_eq!(
        (
            a.postgresql.sql_user.as_str(),
            a.postgresql.sql_ro_user.as_str()
        ),
        ("rw", "ro")
    );
    assert_eq!(a.bootstrap.enable, Some(false));
    assert_eq!(
        a.oc_chef_pedant,
        OcChefPedant {
            dir: "/srv/pedant".into(),
            log_directory: "/srv/pedant/log".into(),
            log_http_requests: false
        }
    );
}

#[test]
fn nil_means_the_default() {
    let (a, _) = typed(
        "opscode_pushy_server['heartbeat_interval'] = nil\nopscode_pushy_server['vip'] = nil\n",
    )
    .unwrap();
    assert_eq!(a.opscode_pushy_server.daemon.heartbeat_interval, 10_000);
    assert_eq!(a.opscode_pushy_server.vip, None);
}

#[test]
fn a_wrong_kind_of_value_names_the_key_file_and_line() {
    let cases = [
        (
            "\nopscode_pushy_server['api_port'] = 70000\n",
            "/etc/p.rb:2: opscode_pushy_server['api_port'] must be an integer from 0 to 65535, not 70000",
        ),
        (
            "opscode_pushy_server['heartbeat_interval'] = 'often'\n",
            "/etc/p.rb:1: opscode_pushy_server['heartbeat_interval'] must be a non-negative integer, not \"often\"",
        ),
        (
            "opscode_pushy_server['db_pool_size'] = -1\n",
            "must be an integer from 0 to 4294967295, not -1",
        ),
        (
            "opscode_pushy_server['enable'] = 'yes'\n",
            "opscode_pushy_server['enable'] must be true or false, not \"yes\"",
        ),
        (
            "opscode_pushy_server['down_threshold'] = [1]\n",
            "must be a number, not an array",
        ),
        (
            "opscode_pushy_server['dir'] = 'relative/dir'\n",
            "must be an absolute path",
        ),
        (
            "opscode_pushy_server['vip'] = true\n",
            "opscode_pushy_server['vip'] must be a string, not true",
        ),
        (
            "opscode_pushy_server['log_rotation'] = 5\n",
            "opscode_pushy_server['log_rotation'] must be a hash, not 5",
        ),
    ];
    for (text, want) in cases {
        let err = typed(text).unwrap_err().to_string();
        assert!(
            err.contains(want),
            "for {text:?}\n got: {err}\nwant: {want}"
        );
    }
}

#[test]
fn unknown_and_ignored_settings_are_warnings() {
    let text = "opscode_pushy_server['heartbeat_intervall'] = 5\n\
                postgresql['vip'] = '10.0.0.9'\n\
                postgresql['port'] = 6543\n\
                postgresql['db_superuser'] = 'me'\n\
                postgresql['sql_password'] = 'snakepliskin'\n\
                opscode_pushy_server['keyring_dir'] = '/etc/keys'\n\
                bootstrap['enable'] = true\n\
                opscode_pushy_server['listen'] = '10.0.0.1'\n\
                opscode_pushy_server['enable_graphite'] = true\n\
                opscode_pushy_server['ha'] = false\n";
    let (a, warnings) = typed(text).unwrap();
    let messages: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        [
            "/etc/p.rb:1: unknown setting opscode_pushy_server['heartbeat_intervall'] (ignored)",
            "/etc/p.rb:2: postgresql['vip'] is always taken from Chef Server's postgresql['vip']; this setting is ignored",
            "/etc/p.rb:3: postgresql['port'] is always taken from Chef Server's postgresql['port']; this setting is ignored",
            "/etc/p.rb:4: postgresql['db_superuser'] is always taken from Chef Server's postgresql['db_superuser']; this setting is ignored",
            "/etc/p.rb:5: postgresql['sql_password'] is not used: the password is kept in /etc/opscode/private-chef-secrets.json; this setting is ignored",
            "/etc/p.rb:6: opscode_pushy_server['keyring_dir'] is not used: the keys are kept in /etc/opscode/private-chef-secrets.json; this setting is ignored",
            "/etc/p.rb:8: opscode_pushy_server['listen'] is not used: the API listens on 0.0.0.0:api_port, as the original's did; this setting is ignored",
            "/etc/p.rb:9: opscode_pushy_server['enable_graphite'] is not used: there is no Graphite reporter; scrape GET /metrics on api_port instead; this setting is ignored",
            "/etc/p.rb:10: opscode_pushy_server['ha'] is not used: a legacy DRBD-HA marker the original ignored too; this setting is ignored",
        ]
    );
    // Still typed and available (compute overrides the Chef Server ones).
    assert_eq!(a.postgresql.port, 6543);
    assert_eq!(a.bootstrap.enable, Some(true));
}
