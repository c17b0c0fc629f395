//! Tests of the reader: every literal form, the statement forms the three tools' files use,
//! the idioms of real files, recovery after a bad statement, and evaluation.

use std::path::Path;

use super::*;

/// `(setting, literal value)` for each `name value` statement.
fn settings(src: &str) -> Vec<(String, Value)> {
    parse(src)
        .into_iter()
        .filter_map(|st| match st.kind {
            StmtKind::Call { name, args, .. } if args.len() == 1 => {
                Some((name, args[0].literal().expect("a literal")))
            }
            StmtKind::Unparsed(p) => panic!("line {}: {:?}", p.line, p.kind),
            _ => None,
        })
        .collect()
}

fn only(src: &str) -> Stmt {
    let mut st = parse(src);
    assert_eq!(st.len(), 1, "{st:?}");
    st.remove(0)
}

fn syntax_problem(src: &str) -> (usize, String) {
    for st in parse(src) {
        if let StmtKind::Unparsed(Problem {
            line,
            kind: ProblemKind::Syntax(m),
            ..
        }) = st.kind
        {
            return (line, m);
        }
    }
    panic!("no problem in {src:?}")
}

fn s(v: &str) -> Value {
    Value::Str(v.into())
}

#[test]
fn lexes_ruby_literals() {
    let st = settings(concat!(
        "a \"tab\\tq\\\"\\\\ \\#{x} \\u00e9\\u{41 42} \\x41\\101\\s\"\n",
        "b 'it\\'s \\\\ \\n'\n",
        "c 0644; d 0x1F; e -12; f 1_000; g 2.5; h nil; i :sym; j :\"q s\"\n",
        "k %w[x y\n z]\n",
        "l /a\\/b\\d/mix\n",
        "m Foo::BAR\n",
        "r %r{^a{2}/b$}x\n",
        "n \"multi\nline\"\n",
        "o [1,\n 2,\n]\n",
        "=begin\nanything ${at} all\n=end\n",
        "q \\\n  'continued'\n",
        "__END__\nthis is ignored(\n"
    ));
    let want = [
        ("a", s("tab\tq\"\\ #{x} éAB AA ")),
        ("b", s("it's \\ \\n")),
        ("c", Value::Int(0o644)),
        ("d", Value::Int(31)),
        ("e", Value::Int(-12)),
        ("f", Value::Int(1000)),
        ("g", Value::Float(2.5)),
        ("h", Value::Nil),
        ("i", Value::Sym("sym".into())),
        ("j", Value::Sym("q s".into())),
        ("k", Value::Array(vec![s("x"), s("y"), s("z")])),
        (
            "l",
            Value::Regex {
                source: "a/b\\d".into(),
                flags: "mix".into(),
            },
        ),
        ("m", Value::Const("Foo::BAR".into())),
        (
            "r",
            Value::Regex {
                source: "^a{2}/b$".into(),
                flags: "x".into(),
            },
        ),
        ("n", s("multi\nline")),
        ("o", Value::Array(vec![Value::Int(1), Value::Int(2)])),
        ("q", s("continued")),
    ];
    assert_eq!(st.len(), want.len());
    for ((k, v), (wk, wv)) in st.iter().zip(want) {
        assert_eq!((k.as_str(), v), (wk, &wv));
    }
}

#[test]
fn numbers_in_ruby_notations() {
    let st = settings("a 0x1F\nb 0b101\nc 010\nd 1.5e3\ne 0\nf -2.5\ng 1e-2\n");
    let values: Vec<Value> = st.into_iter().map(|(_, v)| v).collect();
    assert_eq!(
        values,
        [
            Value::Int(31),
            Value::Int(5),
            Value::Int(8),
            Value::Float(1500.0),
            Value::Int(0),
            Value::Float(-2.5),
            Value::Float(0.01)
        ]
    );
    assert_eq!(
        syntax_problem("a 09").1,
        "`09` is not a number (invalid number literal)"
    );
}

/// knife.rb as `knife configure` and users write it.
const KNIFE_RB: &str = r##"# See https://docs.chef.io/workstation/config_rb/
current_dir = File.dirname(__FILE__)
log_level                :info
log_location             STDOUT
node_name                ENV['USER'] || "alice"
client_key               "#{current_dir}/#{node_name}.pem"
chef_server_url          "https://chef.example.com/organizations/acme"   # the org
cookbook_path            ["#{current_dir}/../cookbooks", File.join(current_dir, "vendor")]
validation_key           File.expand_path("../keys/validator.pem", current_dir)
knife[:editor] = "vim"
"##;

#[test]
fn knife_rb_idioms_parse_into_statements() {
    let st = parse(KNIFE_RB);
    assert_eq!(st.len(), 9);
    let lines: Vec<usize> = st.iter().map(|s| s.line).collect();
    assert_eq!(lines, [2, 3, 4, 5, 6, 7, 8, 9, 10]);
    let StmtKind::Assign { target, value } = &st[0].kind else {
        panic!("{:?}", st[0])
    };
    assert_eq!(target.kind, ExprKind::Var("current_dir".into()));
    assert_eq!(value.name(), "File.dirname");
    let StmtKind::Call { name, args, .. } = &st[3].kind else {
        panic!("{:?}", st[3])
    };
    assert_eq!(name, "node_name");
    assert!(matches!(args[0].kind, ExprKind::Or(..)));
    let StmtKind::Assign { target, .. } = &st[8].kind else {
        panic!("{:?}", st[8])
    };
    assert_eq!(target.describe(), "`knife[...]`");
}

/// Evaluates knife.rb the way the CLI does: settings are bound so later lines can read them.
fn eval_knife(env: &dyn Fn(&str) -> Option<String>) -> Vec<(String, Value)> {
    let file = Path::new("/home/al/.chef/config.rb");
    let mut scope = Scope::new(file, Some(Path::new("/home/al")), env);
    let mut out = Vec::new();
    for st in parse(KNIFE_RB) {
        match st.kind {
            StmtKind::Assign { target, value } => {
                if let ExprKind::Var(name) = target.kind {
                    let v = scope.eval(&value).unwrap();
                    scope.set(&name, v);
                }
            }
            StmtKind::Call { name, args, .. } => {
                let v = scope.eval(&args[0]).unwrap();
                scope.set(&name, v.clone());
                out.push((name, v));
            }
            other => panic!("{other:?}"),
        }
    }
    out
}

#[test]
fn knife_rb_idioms_evaluate() {
    let user = |k: &str| (k == "USER").then(|| "bob".to_owned());
    let got = eval_knife(&user);
    let get = |n: &str| got.iter().find(|(k, _)| k == n).unwrap().1.clone();
    assert_eq!(get("node_name"), s("bob"));
    assert_eq!(get("client_key"), s("/home/al/.chef/bob.pem"));
    assert_eq!(
        get("cookbook_path"),
        Value::Array(vec![
            s("/home/al/.chef/../cookbooks"),
            s("/home/al/.chef/vendor")
        ])
    );
    assert_eq!(get("validation_key"), s("/home/al/keys/validator.pem"));
    assert_eq!(get("log_location"), Value::Const("STDOUT".into()));
    // `||` falls back when the variable is unset.
    let got = eval_knife(&|_| None);
    assert!(got.contains(&("node_name".into(), s("alice"))));
    assert!(got.contains(&("client_key".into(), s("/home/al/.chef/alice.pem"))));
}

#[test]
fn evaluation_errors_name_the_construct() {
    let file = Path::new("/x/config.rb");
    let none = |_: &str| None;
    let scope = Scope::new(file, None, &none);
    let value = |src: &str| match only(src).kind {
        StmtKind::Call { args, .. } => scope.eval(&args[0]),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        value("a ENV['NOPE']").unwrap_err().to_string(),
        "ENV['NOPE'] is not set"
    );
    assert_eq!(
        value("a some_method('x')").unwrap_err().to_string(),
        "method call `some_method` is not supported"
    );
    assert_eq!(
        value("a nope").unwrap_err().to_string(),
        "nope is not a variable this reader understood"
    );
    assert_eq!(value("a ENV.fetch('NOPE', 'd')").unwrap(), s("d"));
    assert_eq!(
        value("a File.basename('/a/b.pem', '.pem')").unwrap(),
        s("b")
    );
    assert_eq!(value("a __dir__ + '/k'").unwrap(), s("/x/k"));
    assert_eq!(
        value("a 'x#{y}'").unwrap(),
        s("x#{y}"),
        "single quotes do not interpolate"
    );
    assert_eq!(value("a \"x\\\"#{'y'}\"").unwrap(), s("x\"y"));
    // Quotes and braces inside `#{}` belong to the code.
    assert_eq!(
        value(r##"a "#{File.join("/a", 'b')}/c""##).unwrap(),
        s("/a/b/c")
    );
}

/// push-jobs-client.rb as Chef Automate's installer writes it.
const AUTOMATE_CLIENT_RB: &str = r#"LC_ALL='en_US.UTF-8'
chef_server_url  "https://automate.example.com/organizations/delivery"
node_name        "build-node-1"
client_key       "/etc/chef/client.pem"
allow_unencrypted true
whitelist({"chef-client"=>{:command_line=>"chef-client", :lock=>true},
           /^delivery-cmd (.+)$/=>"/var/opt/delivery/workspace/bin/delivery-cmd '\\1'"})
Mixlib::Log::Formatter.show_time = false
"#;

#[test]
fn automate_client_rb_reads_as_literals() {
    let st = parse(AUTOMATE_CLIENT_RB);
    assert_eq!(st.len(), 7);
    assert!(matches!(
        &st[0].kind,
        StmtKind::Assign { target, .. } if target.kind == ExprKind::Const("LC_ALL".into())
    ));
    let StmtKind::Call { name, args, parens } = &st[5].kind else {
        panic!("{:?}", st[5])
    };
    assert_eq!((name.as_str(), *parens), ("whitelist", true));
    let Value::Hash(items) = args[0].literal().unwrap() else {
        panic!()
    };
    assert_eq!(items.len(), 2);
    assert_eq!(
        items[1],
        (
            Value::Regex {
                source: "^delivery-cmd (.+)$".into(),
                flags: String::new()
            },
            s("/var/opt/delivery/workspace/bin/delivery-cmd '\\1'"),
            7
        )
    );
    let Value::Hash(entry) = &items[0].1 else {
        panic!()
    };
    assert_eq!(entry[0].0, Value::Sym("command_line".into()));
    assert_eq!(entry[1], (Value::Sym("lock".into()), Value::Bool(true), 6));
    let StmtKind::Assign { target, value } = &st[6].kind else {
        panic!("{:?}", st[6])
    };
    assert_eq!(target.name(), "Mixlib::Log::Formatter.show_time");
    assert_eq!(value.literal().unwrap(), Value::Bool(false));
    assert_eq!(st[4].line, 5);
}

#[test]
fn server_rb_index_assignments_arrays_and_hashes() {
    let st = parse(concat!(
        "opscode_pushy_server['heartbeat_interval'] = 5000\n",
        "opscode_pushy_server[:log_rotation]['num_to_keep'] = 10\n",
        "opscode_pushy_server['things'] = ['a', 2, 3.5, nil, [true]]\n",
        "opscode_pushy_server['log_rotation'] = {\n  'file_maxbytes' => 1000,\n  num_to_keep: 3,\n}\n",
        "opscode_pushy_server['vip'] = node['private_chef']['lb']['api_fqdn']\n",
    ));
    assert_eq!(st.len(), 5);
    let StmtKind::Assign { target, value } = &st[1].kind else {
        panic!()
    };
    let ExprKind::Index(inner, key) = &target.kind else {
        panic!()
    };
    assert_eq!(key.literal().unwrap(), s("num_to_keep"));
    assert!(matches!(&inner.kind, ExprKind::Index(root, k)
        if root.kind == ExprKind::Var("opscode_pushy_server".into())
        && k.kind == ExprKind::Sym("log_rotation".into())));
    assert_eq!(value.literal().unwrap(), Value::Int(10));
    let StmtKind::Assign { value, .. } = &st[3].kind else {
        panic!()
    };
    assert_eq!(
        value.literal().unwrap(),
        Value::Hash(vec![
            (s("file_maxbytes"), Value::Int(1000), 5),
            (Value::Sym("num_to_keep".into()), Value::Int(3), 6)
        ])
    );
    assert_eq!(st[4].line, 8);
    let StmtKind::Assign { value, .. } = &st[4].kind else {
        panic!()
    };
    assert_eq!(value.literal().unwrap_err().name(), "node[...][...][...]");
}

#[test]
fn blocks_keep_their_body() {
    let st = parse("if ENV['CI']\n  node_name 'ci'\nelse\n  node_name 'x'\nend\nlog_level :info\n");
    assert_eq!(st.len(), 2);
    let StmtKind::Block { keyword, body } = &st[0].kind else {
        panic!("{:?}", st[0])
    };
    assert_eq!(keyword, "if");
    assert_eq!(body.iter().map(|s| s.line).collect::<Vec<_>>(), [2, 4]);
    let st = parse("foo do |x|\n  node_name x\nend\ndef f; end\nnode_name 'a'\n");
    assert_eq!(st.len(), 3, "{st:?}");
    assert!(matches!(&st[0].kind, StmtKind::Block { keyword, .. } if keyword == "do"));
    assert!(matches!(&st[1].kind, StmtKind::Block { keyword, .. } if keyword == "def"));
}

#[test]
fn a_bad_statement_is_skipped_and_the_rest_is_read() {
    let st = parse("node_name 'a' if x\nx = [1,\n @y,\n 2]\nclient_key `k`\nlog_level :info\n");
    let problems: Vec<(usize, Option<String>)> = st
        .iter()
        .filter_map(|s| match &s.kind {
            StmtKind::Unparsed(p) => Some((p.line, p.head.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        problems,
        [
            (1, Some("node_name".into())),
            (3, Some("x".into())),
            (5, Some("client_key".into()))
        ]
    );
    assert!(matches!(&st.last().unwrap().kind, StmtKind::Call { name, .. } if name == "log_level"));
    let StmtKind::Unparsed(Problem {
        kind: ProblemKind::Trailing { found, .. },
        ..
    }) = &st[0].kind
    else {
        panic!()
    };
    assert_eq!(found, &Found::Modifier("if".into()));
}

#[test]
fn syntax_problems_say_what_and_where() {
    let cases = [
        ("a 'open", 1, "unterminated string"),
        ("a 1\n=begin\nno end", 2, "`=begin` without `=end`"),
        ("a({'a' => 'b'", 1, "expected `,` or `}` (opened on line 1)"),
        ("a [1, 2\n", 2, "expected `,` or `]` in the array"),
        ("a({'a' 'b'})", 1, "expected `=>` after a hash key"),
        ("a /x/q", 1, "unknown regexp flag `q`"),
        ("a %q(x)", 1, "only the %w[...] and %r{...}"),
        ("a \"#@x\"", 1, "interpolation"),
        ("a { |w| w }", 1, "blocks"),
        ("a <<~EOS\nx\nEOS", 1, "heredocs"),
        ("a \"#{b c}\"", 1, "inside `#{...}`"),
    ];
    for (src, line, want) in cases {
        let (at, message) = syntax_problem(src);
        assert!(
            message.contains(want),
            "{src:?}: {message:?} lacks {want:?}"
        );
        assert_eq!(at, line, "{src:?}");
    }
}
