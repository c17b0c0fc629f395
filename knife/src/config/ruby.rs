//! The reader for `config.rb` / `knife.rb` (ops.md §7.1: knife's own configuration). The
//! file is *not* evaluated. Lines setting `node_name` (or `client_name`), `client_key`,
//! `chef_server_url`, `local_chef_dir` and `authentication_protocol_version` are read when
//! their value is one of the forms knife's generated files use:
//!
//! ```ruby
//! current_dir = File.dirname(__FILE__)
//! node_name       "alice"
//! client_key      "#{current_dir}/alice.pem"
//! chef_server_url 'https://chef.example.com/organizations/acme'
//! client_key      File.join(current_dir, "alice.pem")
//! ```
//!
//! String literals (single or double quoted, `#{}` interpolation), local variables,
//! `File.dirname(__FILE__)`, `__dir__`, `File.join`, `File.expand_path`, `ENV['NAME']` and
//! `+`. A setting we need whose value is anything else, or that sits inside a block or
//! conditional, is an error naming the file and line rather than a silently different
//! configuration. Every other line (`log_level :info`, `cookbook_path [...]`,
//! `knife[:editor] = "vim"`, …) is knife's business and is skipped.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use super::{Error, KeySource, Settings};

/// Reads `src`, the contents of `path`. `env` answers `ENV['NAME']`; `home` expands `~`.
pub fn parse(
    src: &str,
    path: &Path,
    home: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut reader = Reader {
        file: path,
        dir,
        home,
        env,
        vars: HashMap::new(),
    };
    let mut settings = Settings::default();
    let mut depth = 0usize;
    for (i, raw) in src.lines().enumerate() {
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        let bad = |message: String| Error::Ruby {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        };
        let (ident, rest) = split_ident(line);
        if opens_block(ident, line) {
            depth += 1;
            continue;
        }
        if ident == "end" {
            depth = depth.saturating_sub(1);
            continue;
        }
        if ident.is_empty() {
            continue;
        }
        let rest = rest.trim_start();
        let assignment = rest.starts_with('=') && !rest.starts_with("==");
        let setting = Setting::from_name(ident);
        match (setting, assignment) {
            (Some(s), _) => {
                if depth > 0 {
                    return Err(bad(format!(
                        "{ident} is set inside a block or conditional; this reader does not run Ruby, so set it at the top level"
                    )));
                }
                let value = if assignment { &rest[1..] } else { rest };
                let value = strip_parens(value.trim());
                let text = reader
                    .eval(value)
                    .map_err(|m| bad(format!("cannot read the value of {ident} ({value}): {m}")))?;
                reader.apply(&mut settings, s, text);
            }
            (None, true) if depth == 0 => {
                // A local variable; one we cannot evaluate is only an error if a setting
                // we need uses it.
                if let Ok(v) = reader.eval(rest[1..].trim()) {
                    reader.vars.insert(ident.to_owned(), v);
                } else {
                    reader.vars.remove(ident);
                }
            }
            (None, _) => {}
        }
    }
    Ok(settings)
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

struct Reader<'a> {
    file: &'a Path,
    dir: &'a Path,
    home: Option<&'a Path>,
    env: &'a dyn Fn(&str) -> Option<String>,
    vars: HashMap<String, String>,
}

impl Reader<'_> {
    fn apply(&self, settings: &mut Settings, setting: Setting, text: String) {
        match setting {
            Setting::NodeName => settings.node_name = Some(text),
            Setting::ClientKey => {
                settings.client_key = Some(KeySource::from_setting(&text, self.dir, self.home))
            }
            Setting::ChefServerUrl => settings.chef_server_url = Some(text),
            Setting::LocalChefDir => {
                settings.local_chef_dir = Some(super::resolve_path(&text, self.dir, self.home))
            }
            Setting::SignVersion => settings.sign_version = Some(text),
        }
    }

    /// Evaluates a whole expression: terms joined by `+`.
    fn eval(&self, src: &str) -> Result<String, String> {
        let mut p = Parser { s: src, pos: 0 };
        let v = self.expr(&mut p)?;
        p.skip_ws();
        if p.pos != src.len() {
            return Err(format!("unexpected {:?}", &src[p.pos..]));
        }
        Ok(v)
    }

    fn expr(&self, p: &mut Parser<'_>) -> Result<String, String> {
        let mut out = self.term(p)?;
        loop {
            p.skip_ws();
            if p.eat("+") {
                out.push_str(&self.term(p)?);
            } else {
                return Ok(out);
            }
        }
    }

    fn term(&self, p: &mut Parser<'_>) -> Result<String, String> {
        p.skip_ws();
        if p.peek() == Some('"') {
            return self.double_quoted(p);
        }
        if p.peek() == Some('\'') {
            return single_quoted(p);
        }
        if p.eat("__FILE__") {
            return Ok(self.file.display().to_string());
        }
        if p.eat("__dir__") {
            return Ok(self.dir.display().to_string());
        }
        if p.eat("File.dirname(") {
            let v = self.expr(p)?;
            p.expect(")")?;
            return Ok(Path::new(&v)
                .parent()
                .map(|d| d.display().to_string())
                .unwrap_or_else(|| ".".to_owned()));
        }
        if p.eat("File.join(") {
            // Ruby's File.join: one `/` between parts, whatever they start or end with.
            let parts = self.args(p)?;
            let mut joined = String::new();
            for (i, part) in parts.iter().enumerate() {
                if i == 0 {
                    joined.push_str(part);
                } else {
                    joined = format!(
                        "{}/{}",
                        joined.trim_end_matches('/'),
                        part.trim_start_matches('/')
                    );
                }
            }
            return Ok(joined);
        }
        if p.eat("File.expand_path(") {
            let args = self.args(p)?;
            let base = match args.get(1) {
                Some(b) => PathBuf::from(b),
                None => std::env::current_dir().map_err(|e| e.to_string())?,
            };
            let first = args.first().ok_or("File.expand_path needs a path")?;
            let expanded = super::resolve_path(first, &base, self.home);
            return Ok(normalize(&expanded).display().to_string());
        }
        if p.eat("ENV[") {
            let name = self.expr(p)?;
            p.expect("]")?;
            return (self.env)(&name).ok_or(format!("ENV['{name}'] is not set"));
        }
        if p.eat("ENV.fetch(") {
            let args = self.args(p)?;
            let name = args.first().ok_or("ENV.fetch needs a name")?;
            return (self.env)(name)
                .or_else(|| args.get(1).cloned())
                .ok_or(format!("ENV['{name}'] is not set"));
        }
        let ident = p.ident();
        if ident.is_empty() {
            return Err("not a string, variable or File/ENV expression".to_owned());
        }
        self.vars
            .get(ident)
            .cloned()
            .ok_or(format!("{ident} is not a variable this reader understood"))
    }

    /// Comma-separated arguments up to and including `)`.
    fn args(&self, p: &mut Parser<'_>) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        loop {
            p.skip_ws();
            if p.eat(")") {
                return Ok(out);
            }
            out.push(self.expr(p)?);
            p.skip_ws();
            if !p.eat(",") {
                p.expect(")")?;
                return Ok(out);
            }
        }
    }

    fn double_quoted(&self, p: &mut Parser<'_>) -> Result<String, String> {
        p.expect("\"")?;
        let mut out = String::new();
        loop {
            let c = p.next().ok_or("unterminated string")?;
            match c {
                '"' => return Ok(out),
                '\\' => {
                    let e = p.next().ok_or("unterminated string")?;
                    out.push(match e {
                        'n' => '\n',
                        't' => '\t',
                        's' => ' ',
                        '0' => '\0',
                        other => other,
                    });
                }
                '#' if p.peek() == Some('{') => {
                    p.pos += 1;
                    out.push_str(&self.expr(p)?);
                    p.skip_ws();
                    p.expect("}")?;
                }
                other => out.push(other),
            }
        }
    }
}

fn single_quoted(p: &mut Parser<'_>) -> Result<String, String> {
    p.expect("'")?;
    let mut out = String::new();
    loop {
        match p.next().ok_or("unterminated string")? {
            '\'' => return Ok(out),
            '\\' => match p.next().ok_or("unterminated string")? {
                c @ ('\\' | '\'') => out.push(c),
                c => {
                    out.push('\\');
                    out.push(c);
                }
            },
            c => out.push(c),
        }
    }
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, lit: &str) -> bool {
        if self.s[self.pos..].starts_with(lit) {
            self.pos += lit.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, lit: &str) -> Result<(), String> {
        self.skip_ws();
        if self.eat(lit) {
            Ok(())
        } else {
            Err(format!("expected {lit:?}"))
        }
    }

    fn ident(&mut self) -> &'a str {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            self.pos += 1;
        }
        &self.s[start..self.pos]
    }
}

/// The line without its comment (a `#` outside a string).
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            _ if escaped => escaped = false,
            (Some(_), '\\') => escaped = true,
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') => return &line[..i],
            (None, _) => {}
        }
    }
    line
}

/// A leading lower-case identifier (a setting or variable name) and the rest.
fn split_ident(line: &str) -> (&str, &str) {
    let end = line
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(line.len(), |(i, _)| i);
    let ident = &line[..end];
    if ident.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
        (ident, &line[end..])
    } else {
        ("", line)
    }
}

/// Whether the line opens a block that a later `end` closes.
fn opens_block(ident: &str, line: &str) -> bool {
    matches!(
        ident,
        "if" | "unless" | "case" | "begin" | "while" | "until" | "def" | "class" | "module"
    ) || line.ends_with(" do")
        || (line.contains(" do |") && line.ends_with('|'))
}

/// `(value)` → `value`, when the parentheses enclose the whole value.
fn strip_parens(value: &str) -> &str {
    match value.strip_prefix('(').and_then(|v| v.strip_suffix(')')) {
        Some(inner) => inner.trim(),
        None => value,
    }
}

/// Removes `.` and resolves `..` lexically, as `File.expand_path` does.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
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
}
