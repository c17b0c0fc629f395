//! The reader for `config.rb` / `knife.rb` (ops.md §7.1: knife's own configuration). The
//! file is *not* run: `pushy_rbconf` parses it and this module evaluates the lines setting
//! `node_name` (or `client_name`), `client_key`, `chef_server_url`, `local_chef_dir` and
//! `authentication_protocol_version`, in the forms knife's generated and hand-written files
//! use:
//!
//! ```ruby
//! current_dir = File.dirname(__FILE__)
//! node_name       ENV['USER'] || "alice"
//! client_key      "#{current_dir}/#{node_name}.pem"
//! chef_server_url 'https://chef.example.com/organizations/acme'
//! client_key      File.join(current_dir, "alice.pem")
//! ```
//!
//! String literals (`#{}` interpolation), local variables, settings read back by name,
//! `File.dirname(__FILE__)`, `__dir__`, `File.join`, `File.expand_path`, `ENV['NAME']`, `+`
//! and `||` ([`pushy_rbconf::Scope`]). A setting we need whose value is anything else, or that
//! sits inside a block or conditional, is an error naming the file and line rather than a
//! silently different configuration. Every other line (`log_level :info`,
//! `cookbook_path [...]`, `knife[:editor] = "vim"`, …) is knife's business and is skipped;
//! one the reader cannot even parse is skipped with a warning.

use std::path::Path;

use pushy_rbconf::{Expr, ExprKind, Problem, ProblemKind, Scope, Stmt, StmtKind};

use super::{Error, KeySource, Settings};

/// Reads `src`, the contents of `path`. `env` answers `ENV['NAME']`; `home` expands `~`.
///
/// # Errors
/// [`Error::Ruby`] for a setting this CLI reads whose value cannot be evaluated.
pub fn parse(
    src: &str,
    path: &Path,
    home: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, Error> {
    let mut scope = Scope::new(path, home, env);
    let mut settings = Settings::default();
    for st in pushy_rbconf::parse(src) {
        statement(&mut scope, &mut settings, st)?;
    }
    Ok(settings)
}

fn statement(scope: &mut Scope<'_>, settings: &mut Settings, st: Stmt) -> Result<(), Error> {
    let bad = |line: usize, message: String| Error::Ruby {
        path: scope.file.to_path_buf(),
        line,
        message,
    };
    let (name, value) = match st.kind {
        StmtKind::Call { name, mut args, .. } if args.len() == 1 => (name, args.remove(0)),
        StmtKind::Assign {
            target:
                Expr {
                    kind: ExprKind::Var(name),
                    ..
                },
            value,
        } => (name, value),
        StmtKind::Call { name, .. } if Setting::from_name(&name).is_some() => {
            return Err(bad(
                st.line,
                format!("cannot read the value of {name}: expected one value"),
            ));
        }
        StmtKind::Block { body, .. } => return refuse_settings_in(&body, &bad),
        StmtKind::Unparsed(p) => return unparsed(p, scope.file, &bad),
        // knife's business: `knife[:editor] = "vim"`, `Chef::Config.x`, …
        _ => return Ok(()),
    };
    match Setting::from_name(&name) {
        Some(setting) => {
            let text = scope
                .string(&value)
                .map_err(|e| bad(st.line, format!("cannot read the value of {name}: {e}")))?;
            apply(scope, settings, setting, text.clone());
            scope.set(&name, pushy_rbconf::Value::Str(text));
        }
        // A local variable or another setting; one we cannot evaluate is only an error if a
        // setting we need uses it.
        None => match scope.eval(&value) {
            Ok(v) => scope.set(&name, v),
            Err(_) => scope.unset(&name),
        },
    }
    Ok(())
}

/// Settings inside a block or conditional: this reader does not run Ruby, so it cannot
/// know whether they apply.
fn refuse_settings_in(body: &[Stmt], bad: &dyn Fn(usize, String) -> Error) -> Result<(), Error> {
    for st in body {
        let name = match &st.kind {
            StmtKind::Call { name, .. } => Some(name.as_str()),
            StmtKind::Assign {
                target:
                    Expr {
                        kind: ExprKind::Var(name),
                        ..
                    },
                ..
            } => Some(name.as_str()),
            StmtKind::Unparsed(p) => p.head.as_deref(),
            StmtKind::Block { body, .. } => {
                refuse_settings_in(body, bad)?;
                None
            }
            _ => None,
        };
        if let Some(name) = name.filter(|n| Setting::from_name(n).is_some()) {
            return Err(bad(
                st.line,
                format!(
                    "{name} is set inside a block or conditional; this reader does not run Ruby, so set it at the top level"
                ),
            ));
        }
    }
    Ok(())
}

/// A statement the reader could not parse: an error if it sets something we need, else
/// skipped with a warning (knife itself would have run it).
fn unparsed(p: Problem, file: &Path, bad: &dyn Fn(usize, String) -> Error) -> Result<(), Error> {
    let problem = match &p.kind {
        ProblemKind::Syntax(m) => m.clone(),
        ProblemKind::Trailing { found, .. } => {
            format!("unexpected {} after the value", found.describe())
        }
    };
    match p.head.as_deref() {
        Some(name) if Setting::from_name(name).is_some() => Err(bad(
            p.line,
            format!("cannot read the value of {name}: {problem}"),
        )),
        _ => {
            tracing::warn!(
                file = %file.display(),
                line = p.line,
                %problem,
                "skipped a config line this reader cannot parse"
            );
            Ok(())
        }
    }
}

/// The settings this CLI reads from a Ruby file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setting {
    NodeName,
    ClientKey,
    ChefServerUrl,
    LocalChefDir,
    SignVersion,
}

impl Setting {
    fn from_name(name: &str) -> Option<Setting> {
        Some(match name {
            "node_name" | "client_name" => Setting::NodeName,
            "client_key" => Setting::ClientKey,
            "chef_server_url" => Setting::ChefServerUrl,
            "local_chef_dir" => Setting::LocalChefDir,
            "authentication_protocol_version" => Setting::SignVersion,
            _ => return None,
        })
    }
}

fn apply(scope: &Scope<'_>, settings: &mut Settings, setting: Setting, text: String) {
    let dir = scope.dir();
    match setting {
        Setting::NodeName => settings.node_name = Some(text),
        Setting::ClientKey => {
            settings.client_key = Some(KeySource::from_setting(&text, dir, scope.home))
        }
        Setting::ChefServerUrl => settings.chef_server_url = Some(text),
        Setting::LocalChefDir => {
            settings.local_chef_dir = Some(super::resolve_path(&text, dir, scope.home))
        }
        Setting::SignVersion => settings.sign_version = Some(text),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn read(src: &str) -> Result<Settings, Error> {
        let env = |k: &str| (k == "USER").then(|| "envuser".to_owned());
        parse(
            src,
            Path::new("/home/al/.chef/config.rb"),
            Some(Path::new("/home/al")),
            &env,
        )
    }

    #[test]
    fn reads_the_generated_knife_rb() {
        let s = read(
            r##"
# See https://docs.chef.io/workstation/config_rb/ for more information
current_dir = File.dirname(__FILE__)
log_level                :info
log_location             STDOUT
node_name                "alice"
client_key               "#{current_dir}/alice.pem"
chef_server_url          "https://chef.example.com/organizations/acme"   # the org
cookbook_path            ["#{current_dir}/../cookbooks"]
knife[:editor] = "vim"
"##,
        )
        .unwrap();
        assert_eq!(s.node_name.as_deref(), Some("alice"));
        assert_eq!(
            s.client_key,
            Some(KeySource::Path("/home/al/.chef/alice.pem".into()))
        );
        assert_eq!(
            s.chef_server_url.as_deref(),
            Some("https://chef.example.com/organizations/acme")
        );
    }

    #[test]
    fn reads_other_value_forms() {
        let s = read(
            "node_name(ENV['USER'])\nclient_key File.join(__dir__, 'keys', \"me.pem\")\nchef_server_url = 'http://x/organizations/o'\nlocal_chef_dir File.expand_path('../data/chef', __dir__)\nauthentication_protocol_version '1.1'\n",
        )
        .unwrap();
        assert_eq!(s.node_name.as_deref(), Some("envuser"));
        assert_eq!(
            s.client_key,
            Some(KeySource::Path("/home/al/.chef/keys/me.pem".into()))
        );
        assert_eq!(
            s.chef_server_url.as_deref(),
            Some("http://x/organizations/o")
        );
        assert_eq!(s.local_chef_dir, Some(PathBuf::from("/home/al/data/chef")));
        assert_eq!(s.sign_version.as_deref(), Some("1.1"));
    }

    #[test]
    fn relative_and_home_paths() {
        let s = read("client_key 'alice.pem'\n").unwrap();
        assert_eq!(
            s.client_key,
            Some(KeySource::Path("/home/al/.chef/alice.pem".into()))
        );
        let s = read("client_key \"~/keys/a.pem\"\n").unwrap();
        assert_eq!(
            s.client_key,
            Some(KeySource::Path("/home/al/keys/a.pem".into()))
        );
        let s = read("base = \"/k\"\nclient_key base + '/a.pem'\n").unwrap();
        assert_eq!(s.client_key, Some(KeySource::Path("/k/a.pem".into())));
    }

    #[test]
    fn a_value_it_cannot_read_names_file_and_line() {
        let e = read("node_name 'a'\n\nclient_key some_method('x')\n").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("/home/al/.chef/config.rb:3"), "{text}");
        assert!(text.contains("client_key"), "{text}");
        let e = read("node_name ENV['NOPE']\n").unwrap_err();
        assert!(e.to_string().contains("ENV['NOPE'] is not set"), "{e}");
        let e = read("node_name \"unterminated\n").unwrap_err();
        assert!(e.to_string().contains(":1"), "{e}");
    }

    #[test]
    fn a_setting_inside_a_conditional_is_refused() {
        let e = read("if ENV['CI']\n  node_name 'ci'\nend\n").unwrap_err();
        assert!(e.to_string().contains(":2"), "{e}");
        // Blocks that set nothing we read are fine.
        let s = read("if true\n  log_level :debug\nend\nnode_name 'x'\n").unwrap();
        assert_eq!(s.node_name.as_deref(), Some("x"));
    }

    #[test]
    fn comments_and_hashes_in_strings() {
        let s = read("node_name 'a#b' # comment\nchef_server_url \"x\\\"#{'y'}\"\n").unwrap();
        assert_eq!(s.node_name.as_deref(), Some("a#b"));
        assert_eq!(s.chef_server_url.as_deref(), Some("x\"y"));
    }

    #[test]
    fn reads_the_idioms_of_hand_written_knife_rbs() {
        let src = r##"
# comments, then a local variable from __FILE__
current_dir = File.dirname(__FILE__)
node_name                ENV['USER'] || "alice"   # the workstation user
client_key               "#{current_dir}/#{node_name}.pem"
chef_server_url          File.join("https://chef.example.com", "organizations", "acme")
local_chef_dir           File.expand_path("../local", current_dir)
cookbook_path            ["#{current_dir}/../cookbooks"]
knife[:editor] = "vim"
knife[:ssh_user] = ENV['NOPE']
"##;
        let s = read(src).unwrap();
        assert_eq!(s.node_name.as_deref(), Some("envuser"));
        assert_eq!(
            s.client_key,
            Some(KeySource::Path("/home/al/.chef/envuser.pem".into()))
        );
        assert_eq!(
            s.chef_server_url.as_deref(),
            Some("https://chef.example.com/organizations/acme")
        );
        assert_eq!(s.local_chef_dir, Some(PathBuf::from("/home/al/local")));
        // Without USER, `||` falls back.
        let none = |_: &str| None;
        let s = parse(src, Path::new("/home/al/.chef/config.rb"), None, &none).unwrap();
        assert_eq!(s.node_name.as_deref(), Some("alice"));
        assert_eq!(
            s.client_key,
            Some(KeySource::Path("/home/al/.chef/alice.pem".into()))
        );
    }

    #[test]
    fn a_line_it_cannot_parse_is_skipped_unless_it_sets_what_we_read() {
        let s = read("log_level :info if x\nknife[:a] = `x`\nnode_name 'n'\n").unwrap();
        assert_eq!(s.node_name.as_deref(), Some("n"));
        let e = read("node_name 'n' if x\n").unwrap_err().to_string();
        assert!(e.contains("config.rb:1") && e.contains("node_name"), "{e}");
    }
}
