//! Tests for the `.rb` reader: every value form, comments, nesting, `node` lookups, and errors
//! that name `file:line` and quote what was not understood.

use serde_json::json;

use super::*;

fn parse_ok(text: &str) -> Tree {
    parse(Path::new("/etc/x.rb"), text, None).unwrap_or_else(|e| panic!("{e}"))
}

fn value(tree: &Tree, path: &[&str]) -> Value {
    tree.get(path)
        .unwrap_or_else(|| panic!("{path:?} not set"))
        .value
        .clone()
}

fn error(text: &str) -> String {
    parse(Path::new("/etc/x.rb"), text, None)
        .map(|t| panic!("parsed: {t:?}"))
        .unwrap_err()
        .to_string()
}

#[test]
fn every_value_form_of_the_original_files() {
    let text = r#"
# Push Jobs settings
opscode_pushy_server['heartbeat_interval'] = 5000
opscode_pushy_server["vip"] = "push.example.com"   # trailing comment
opscode_pushy_server['down_threshold'] = 0.4
opscode_pushy_server['enable_graphite'] = true
opscode_pushy_server['validate_client_node_name'] = false
opscode_pushy_server['server_name_advertised'] = nil
opscode_pushy_server[:zeromq_listen_address] = :'tcp://*'
opscode_pushy_server['chef_api_version'] = :v12
opscode_pushy_server['log_rotation']['num_to_keep'] = 10
opscode_pushy_server['max_body_size'] = 1_048_576
opscode_pushy_server['things'] = ['a', 2, 3.5, nil, [true]]
opscode_pushy_server['words'] = %w[x y z]
postgresql['sql_user'] = 'pushy' ; bootstrap['enable'] = false
oc_chef_pedant['log_http_requests'] = -1
"#;
    let t = parse_ok(text);
    assert_eq!(
        value(&t, &["opscode_pushy_server", "heartbeat_interval"]),
        Value::Int(5000)
    );
    assert_eq!(
        value(&t, &["opscode_pushy_server", "vip"]),
        Value::Str("push.example.com".into())
    );
    assert_eq!(
        value(&t, &["opscode_pushy_server", "down_threshold"]),
        Value::Float(0.4)
    );
    assert_eq!(
        value(&t, &["opscode_pushy_server", "enable_graphite"]),
        Value::Bool(true)
    );
    assert_eq!(
        value(&t, &["opscode_pushy_server", "validate_client_node_name"]),
        Value::Bool(false)
    );
    assert_eq!(
        value(&t, &["opscode_pushy_server", "server_name_advertised"]),
        Value::Nil
    );
    assert_eq!(
        value(&t, &["opscode_pushy_server", "zeromq_listen_address"]),
        Value::Str("tcp://*".into())
    );
    assert_eq!(
        value(&t, &["opscode_pushy_server", "chef_api_version"]),
        Value::Str("v12".into())
    );
    assert_eq!(
        value(&t, &["opscode_pushy_server", "log_rotation", "num_to_keep"]),
        Value::Int(10)
    );
    assert_eq!(
        value(&t, &["opscode_pushy_server", "max_body_size"]),
        Value::Int(1_048_576)
    );
    assert_eq!(
        value(&t, &["opscode_pushy_server", "things"]),
        Value::Array(vec![
            Value::Str("a".into()),
            Value::Int(2),
            Value::Float(3.5),
            Value::Nil,
            Value::Array(vec![Value::Bool(true)])
        ])
    );
    assert_eq!(
        value(&t, &["opscode_pushy_server", "words"]),
        Value::Array(vec![
            Value::Str("x".into()),
            Value::Str("y".into()),
            Value::Str("z".into())
        ])
    );
    assert_eq!(
        value(&t, &["postgresql", "sql_user"]),
        Value::Str("pushy".into())
    );
    assert_eq!(value(&t, &["bootstrap", "enable"]), Value::Bool(false));
    assert_eq!(
        value(&t, &["oc_chef_pedant", "log_http_requests"]),
        Value::Int(-1)
    );
    assert_eq!(
        t.get(&["opscode_pushy_server", "heartbeat_interval"])
            .unwrap()
            .line,
        Some(3)
    );
    assert_eq!(t.get(&["bootstrap", "enable"]).unwrap().line, Some(15));
}

#[test]
fn strings_escape_as_in_ruby() {
    let t = parse_ok(
        r#"opscode_pushy_server['a'] = "x\ty\n\"q\" \u00e9 \u{1F600}"
opscode_pushy_server['b'] = 'it\'s \n \\ raw'
"#,
    );
    assert_eq!(
        value(&t, &["opscode_pushy_server", "a"]),
        Value::Str("x\ty\n\"q\" é 😀".into())
    );
    assert_eq!(
        value(&t, &["opscode_pushy_server", "b"]),
        Value::Str("it's \\n \\ raw".into())
    );
}

#[test]
fn numbers_in_ruby_notations() {
    let t = parse_ok(
        "postgresql['a'] = 0x1F\npostgresql['b'] = 0b101\npostgresql['c'] = 010\npostgresql['d'] = 1.5e3\npostgresql['e'] = 0\npostgresql['f'] = -2.5\n",
    );
    let n = |k| value(&t, &["postgresql", k]);
    assert_eq!(
        [n("a"), n("b"), n("c"), n("d"), n("e"), n("f")],
        [
            Value::Int(31),
            Value::Int(5),
            Value::Int(8),
            Value::Float(1500.0),
            Value::Int(0),
            Value::Float(-2.5)
        ]
    );
}

#[test]
fn multi_line_arrays_and_hashes() {
    let t = parse_ok(
        "opscode_pushy_server['log_rotation'] = {\n  'file_maxbytes' => 1000,\n  num_to_keep: 3,\n}\nopscode_pushy_server['list'] = [\n  1,\n  2,\n]\n",
    );
    assert_eq!(
        value(
            &t,
            &["opscode_pushy_server", "log_rotation", "file_maxbytes"]
        ),
        Value::Int(1000)
    );
    assert_eq!(
        value(&t, &["opscode_pushy_server", "log_rotation", "num_to_keep"]),
        Value::Int(3)
    );
    assert_eq!(
        value(&t, &["opscode_pushy_server", "list"]),
        Value::Array(vec![Value::Int(1), Value::Int(2)])
    );
}

#[test]
fn comments_blank_lines_block_comments_and_end_marker() {
    let t = parse_ok(
        "\n\n# a comment\n   # indented comment\n=begin\nanything = at all\n=end\nbootstrap['enable'] = true # ok\n__END__\nthis is not ruby\n",
    );
    assert_eq!(t.settings.len(), 1);
    assert_eq!(t.get(&["bootstrap", "enable"]).unwrap().line, Some(8));
    assert_eq!(parse_ok("").settings, vec![]);
}

#[test]
fn a_later_assignment_wins() {
    let t = parse_ok("postgresql['port'] = 1\npostgresql['port'] = 2\n");
    assert_eq!(value(&t, &["postgresql", "port"]), Value::Int(2));
    assert_eq!(t.settings.len(), 1);
}

#[test]
fn node_lookups_read_chef_server_attributes() {
    let node = json!({"private_chef": {"lb": {"api_fqdn": "chef.example.com"}, "postgresql": {"port": 5432}}, "fqdn": "host1"});
    let text = "opscode_pushy_server['vip'] = node['private_chef']['lb']['api_fqdn']\n\
                opscode_pushy_server['server_name_advertised'] = node['fqdn']\n\
                opscode_pushy_server['missing'] = node['private_chef']['nope']\n\
                opscode_pushy_server['lb'] = node['private_chef']['lb']\n";
    let t = parse(Path::new("x.rb"), text, Some(&node)).unwrap();
    assert_eq!(
        value(&t, &["opscode_pushy_server", "vip"]),
        Value::Str("chef.example.com".into())
    );
    assert_eq!(
        value(&t, &["opscode_pushy_server", "server_name_advertised"]),
        Value::Str("host1".into())
    );
    assert_eq!(value(&t, &["opscode_pushy_server", "missing"]), Value::Nil);
    assert_eq!(
        value(&t, &["opscode_pushy_server", "lb", "api_fqdn"]),
        Value::Str("chef.example.com".into())
    );

    let err = parse(
        Path::new("x.rb"),
        "postgresql['a'] = node['nope']['deeper']\n",
        Some(&node),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("x.rb:1: node['nope'] is not set"), "{err}");
    let err = error("postgresql['a'] = node['fqdn']\n");
    assert!(err.contains("node attributes are not available"), "{err}");
}

#[test]
fn errors_name_file_line_and_quote_the_text() {
    let cases = [
        (
            "bootstrap['enable'] = true\nopscode_pushy_server['heartbeat_interval'] = 5000 * 2\n",
            "/etc/x.rb:2: unexpected `*` after the value: `opscode_pushy_server['heartbeat_interval'] = 5000 * 2`",
        ),
        (
            "\nnginx['enable'] = false\n",
            "/etc/x.rb:2: `nginx` is not a setting namespace (expected one of opscode_pushy_server, postgresql, bootstrap, oc_chef_pedant): `nginx['enable'] = false`",
        ),
        (
            "opscode_pushy_server.heartbeat_interval = 5\n",
            "/etc/x.rb:1: expected `[` after opscode_pushy_server, found `.`",
        ),
        (
            "opscode_pushy_server['a'] 5\n",
            "/etc/x.rb:1: expected `=` after opscode_pushy_server['a'], found number 5",
        ),
        (
            "opscode_pushy_server['a'] = \"#{x}\"\n",
            "string interpolation",
        ),
        (
            "opscode_pushy_server['a'] = 'open\n",
            "/etc/x.rb:1: unterminated string",
        ),
        (
            "opscode_pushy_server['a'] = ENV['X']\n",
            "`ENV` is not a value this reader understands",
        ),
        (
            "opscode_pushy_server['a'] = [1, 2\n",
            "expected `,` or `]` in the array",
        ),
        ("require 'foo'\n", "`require` is not a setting namespace"),
        ("if true\n", "`if` is not a setting namespace"),
        (
            "opscode_pushy_server[a] = 1\n",
            "expected a quoted key or a :symbol, found `a`",
        ),
        ("=begin\nno end\n", "/etc/x.rb:1: `=begin` without `=end`"),
        (
            "postgresql['x'] = 1\npostgresql['x']['y'] = 2\n",
            "/etc/x.rb:2: postgresql['x'] holds 1, not a hash: `postgresql['x']['y'] = 2`",
        ),
        (
            "postgresql['port'] == 5\n",
            "expected `=` after postgresql['port'], found `==`",
        ),
        ("postgresql['a'] = 09\n", "`09` is not a number"),
    ];
    for (text, want) in cases {
        let got = error(text);
        assert!(
            got.contains(want),
            "for {text:?}\n got: {got}\nwant: {want}"
        );
    }
}
