//! The command whitelist (zmq.md §6.5): which command names a `commit` may carry, and the
//! command line and optional `:lock` (zmq.md §6.4) each one resolves to.
//!
//! `config` builds it from the config file; the job runner calls [`Whitelist::lookup`] on
//! `commit`. Lookup order is the original's: an exact key first, then the regexp keys in
//! insertion order, first match wins. One deliberate difference (zmq.md §6.5 `[security]`,
//! §9.3 item 6): a regexp key must match the *whole* command. The original substituted only the
//! matched part, so key `/foo/` turned `foo; rm -rf /` into `bar; rm -rf /`; here such a command
//! is rejected.

use std::fmt;
use std::path::PathBuf;

use regex::{Regex, RegexBuilder};

/// A whitelist key that cannot be compiled.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The regexp is not valid (or uses Onigmo syntax the `regex` crate lacks, e.g. `(?>…)`).
    #[error("invalid regular expression /{pattern}/: {source}")]
    BadRegex {
        /// The regexp source as written.
        pattern: String,
        /// What the `regex` crate objected to.
        #[source]
        source: Box<regex::Error>,
    },
    /// A flag other than Ruby's `i m x o u n e s`.
    #[error("unknown regular expression flag `{flag}` in /{pattern}/{flags}")]
    UnknownFlag {
        /// The regexp source as written.
        pattern: String,
        /// All flags as written.
        flags: String,
        /// The offending flag.
        flag: char,
    },
}

/// Which file a `:lock` entry locks before the job may commit (zmq.md §6.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lock {
    /// `:lock => true`: chef-client's own run lock, i.e. Chef's `lockfile` setting or
    /// `<file_cache_path>/chef-client-running.pid` (see `ClientConfig::lock_path`).
    ChefDefault,
    /// `:lock => "/some/path"`.
    Path(PathBuf),
}

/// A whitelist value (zmq.md §6.5 "Values").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// `"name" => "command line"`.
    Line(String),
    /// `"name" => {:command_line => "…", :lock => true | "path"}`.
    Hash {
        /// The command line to run; for regexp keys a replacement template (`\1`, `\k<name>`).
        command_line: String,
        /// Lock taken at commit time, if any.
        lock: Option<Lock>,
    },
}

impl Entry {
    /// The command line (or, under a regexp key, the replacement template).
    pub fn command_line(&self) -> &str {
        match self {
            Entry::Line(line)
            | Entry::Hash {
                command_line: line, ..
            } => line,
        }
    }

    /// The entry's lock, if it is a hash with a truthy `:lock`.
    pub fn lock(&self) -> Option<&Lock> {
        match self {
            Entry::Line(_) => None,
            Entry::Hash { lock, .. } => lock.as_ref(),
        }
    }
}

/// A regexp key: Ruby source and flags, compiled twice: anchored to the whole command for
/// matching, and as written only to explain rejections in the log.
#[derive(Clone, Debug)]
pub struct Pattern {
    source: String,
    flags: String,
    whole: Regex,
    partial: Regex,
}

impl Pattern {
    /// Compiles a Ruby regexp literal's source and flags (`/source/flags`).
    ///
    /// Flags map as Ruby's do: `i` case-insensitive, `m` dot matches newline, `x` extended;
    /// `o u n e s` (interpolation and encoding) are accepted and have no effect. As in Ruby,
    /// `^` and `$` always match at line boundaries.
    ///
    /// # Errors
    /// [`Error::UnknownFlag`] for any other flag, [`Error::BadRegex`] if it does not compile.
    pub fn new(source: &str, flags: &str) -> Result<Self, Error> {
        if let Some(flag) = flags.chars().find(|c| !"imxounse".contains(*c)) {
            return Err(Error::UnknownFlag {
                pattern: source.to_owned(),
                flags: flags.to_owned(),
                flag,
            });
        }
        let extended = flags.contains('x');
        let build = |pattern: &str| {
            RegexBuilder::new(pattern)
                .case_insensitive(flags.contains('i'))
                .dot_matches_new_line(flags.contains('m'))
                .ignore_whitespace(extended)
                .multi_line(true)
                .build()
                .map_err(|e| Error::BadRegex {
                    pattern: source.to_owned(),
                    source: Box::new(e),
                })
        };
        // Compiling the source on its own first proves it is balanced, so it cannot close the
        // wrapping group early. Under `x` a trailing `# comment` would swallow `)\z`: the newline
        // ends it.
        let partial = build(source)?;
        let end_comment = if extended { "\n" } else { "" };
        let whole = build(&format!(r"\A(?:{source}{end_comment})\z"))?;
        Ok(Pattern {
            source: source.to_owned(),
            flags: flags.to_owned(),
            whole,
            partial,
        })
    }

    /// The source between the slashes, as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The flags after the closing slash, as written.
    pub fn flags(&self) -> &str {
        &self.flags
    }
}

/// Ruby `Regexp#==`: same source and options.
impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.flags == other.flags
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}/{}", self.source, self.flags)
    }
}

/// A whitelist key.
#[derive(Clone, Debug, PartialEq)]
pub enum Key {
    /// A string key: matches a command equal to it.
    Exact(String),
    /// A regexp key: matches a command it matches in full.
    Regex(Pattern),
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Exact(s) => write!(f, "{s:?}"),
            Key::Regex(p) => p.fmt(f),
        }
    }
}

/// What a whitelisted command resolves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The command line to execute (zmq.md §6.6).
    pub command_line: String,
    /// The lock to take at commit (zmq.md §6.4), if any.
    pub lock: Option<Lock>,
}

/// An ordered map from keys to entries, like the Ruby Hash it replaces.
#[derive(Clone, Debug, PartialEq)]
pub struct Whitelist {
    entries: Vec<(Key, Entry)>,
}

impl Default for Whitelist {
    /// The original's default, `{"chef-client" => "chef-client"}` (zmq.md §6.1).
    fn default() -> Self {
        let mut w = Whitelist::empty();
        w.insert(
            Key::Exact("chef-client".to_owned()),
            Entry::Line("chef-client".to_owned()),
        );
        w
    }
}

impl FromIterator<(Key, Entry)> for Whitelist {
    fn from_iter<I: IntoIterator<Item = (Key, Entry)>>(iter: I) -> Self {
        let mut w = Whitelist::empty();
        for (key, entry) in iter {
            w.insert(key, entry);
        }
        w
    }
}

impl Whitelist {
    /// A whitelist allowing nothing.
    pub fn empty() -> Self {
        Whitelist {
            entries: Vec::new(),
        }
    }

    /// Adds an entry at the end; a key already present keeps its position and gets the new
    /// entry (Ruby `Hash#[]=`).
    pub fn insert(&mut self, key: Key, entry: Entry) {
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = entry,
            None => self.entries.push((key, entry)),
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if nothing is allowed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Entry)> {
        self.entries.iter().map(|(k, e)| (k, e))
    }

    /// Resolves the command string of a `commit` (zmq.md §6.5): an equal string key first;
    /// else the first regexp key matching the *whole* command, whose command line is the
    /// template with Ruby back-references (`\0`–`\9`, `\&`, `\k<name>`) expanded; else `None`
    /// (the runner nacks).
    pub fn lookup(&self, command: &str) -> Option<Resolved> {
        let exact = self
            .entries
            .iter()
            .find(|(key, _)| matches!(key, Key::Exact(k) if k == command));
        if let Some((_, entry)) = exact {
            return Some(Resolved {
                command_line: entry.command_line().to_owned(),
                lock: entry.lock().cloned(),
            });
        }
        for (key, entry) in &self.entries {
            let Key::Regex(pattern) = key else { continue };
            if let Some(caps) = pattern.whole.captures(command) {
                let mut command_line = String::new();
                caps.expand(&ruby_template(entry.command_line()), &mut command_line);
                return Some(Resolved {
                    command_line,
                    lock: entry.lock().cloned(),
                });
            }
            if pattern.partial.is_match(command) {
                tracing::warn!(
                    %pattern,
                    command,
                    "command matches a whitelist regexp only in part; not allowed (zmq.md §6.5)"
                );
            }
        }
        None
    }
}

/// Converts a Ruby `gsub` replacement to a `regex` crate template. Pre- and post-match
/// (`` \` ``, `\'`) are empty because the match spans the whole command; `\\` is one
/// backslash; any other backslash is literal, as in Ruby; `$` is literal, so doubled.
fn ruby_template(ruby: &str) -> String {
    let mut out = String::with_capacity(ruby.len());
    let mut rest = ruby;
    while let Some(c) = rest.chars().next() {
        rest = &rest[c.len_utf8()..];
        match c {
            '$' => out.push_str("$$"),
            '\\' => {
                let next = rest.chars().next();
                match next {
                    Some(d @ '0'..='9') => out.push_str(&format!("${{{d}}}")),
                    Some('&') => out.push_str("${0}"),
                    Some('`' | '\'') => {}
                    Some('\\') => out.push('\\'),
                    Some('k') if rest.starts_with("k<") && rest.contains('>') => {
                        let end = rest.find('>').expect("checked by contains");
                        out.push_str(&format!("${{{}}}", &rest[2..end]));
                        rest = &rest[end + 1..];
                        continue;
                    }
                    _ => {
                        out.push('\\');
                        continue;
                    }
                }
                rest = &rest[next.map_or(0, char::len_utf8)..];
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regex(source: &str, entry: Entry) -> (Key, Entry) {
        (Key::Regex(Pattern::new(source, "").unwrap()), entry)
    }

    fn line(s: &str) -> Entry {
        Entry::Line(s.to_owned())
    }

    fn resolved(command_line: &str, lock: Option<Lock>) -> Option<Resolved> {
        Some(Resolved {
            command_line: command_line.to_owned(),
            lock,
        })
    }

    #[test]
    fn default_allows_only_chef_client() {
        let w = Whitelist::default();
        assert_eq!(w.len(), 1);
        assert_eq!(w.lookup("chef-client"), resolved("chef-client", None));
        assert_eq!(w.lookup("chef-client -o recipe[x]"), None);
        assert_eq!(w.lookup("ls"), None);
    }

    #[test]
    fn exact_key_wins_over_earlier_regexp() {
        let w: Whitelist = [
            regex("^deploy (\\w+)$", line("deploy.sh \\1")),
            (Key::Exact("deploy web".into()), line("special.sh")),
        ]
        .into_iter()
        .collect();
        assert_eq!(w.lookup("deploy web"), resolved("special.sh", None));
        assert_eq!(w.lookup("deploy db"), resolved("deploy.sh db", None));
    }

    #[test]
    fn first_matching_regexp_in_insertion_order_wins() {
        let w: Whitelist = [
            regex("restart (\\w+)", line("first \\1")),
            regex("restart (.*)", line("second \\1")),
        ]
        .into_iter()
        .collect();
        assert_eq!(w.lookup("restart nginx"), resolved("first nginx", None));
        assert_eq!(w.lookup("restart a b"), resolved("second a b", None));
    }

    #[test]
    fn unmatched_command_is_not_allowed() {
        let w: Whitelist = [regex("^deploy (\\w+)$", line("x"))].into_iter().collect();
        assert_eq!(w.lookup("undeploy"), None);
        assert_eq!(Whitelist::empty().lookup("chef-client"), None);
    }

    #[test]
    fn fixes_unanchored_regexp_passing_the_rest_of_the_command() {
        // zmq.md §6.5 [security]: the original turned `foo; rm -rf /` into `bar; rm -rf /`.
        let w: Whitelist = [regex("foo", line("bar"))].into_iter().collect();
        assert_eq!(w.lookup("foo; rm -rf /"), None);
        assert_eq!(w.lookup("xfoo"), None);
        assert_eq!(w.lookup("foo"), resolved("bar", None));
    }

    #[test]
    fn fixes_line_anchors_accepting_a_second_line() {
        // Ruby's ^ and $ match at newlines: /^deploy (\w+)$/ matches the first line only.
        let w: Whitelist = [regex("^deploy (\\w+)$", line("deploy.sh \\1"))]
            .into_iter()
            .collect();
        assert_eq!(w.lookup("deploy web\nrm -rf /"), None);
    }

    #[test]
    fn fixes_alternation_matching_a_prefix() {
        // Leftmost-first on the bare regexp would match "a" and leave "b; id" behind.
        let w: Whitelist = [regex("a|a; id", line("ok"))].into_iter().collect();
        assert_eq!(w.lookup("a; id"), resolved("ok", None));
        assert_eq!(w.lookup("a; idx"), None);
    }

    #[test]
    fn partial_match_on_an_earlier_key_does_not_hide_a_later_full_match() {
        let w: Whitelist = [
            regex("deploy", line("wrong")),
            regex("deploy (\\w+)", line("right \\1")),
        ]
        .into_iter()
        .collect();
        assert_eq!(w.lookup("deploy web"), resolved("right web", None));
    }

    #[test]
    fn back_references_expand() {
        let w: Whitelist = [
            regex(
                "(start|stop) (\\w+) (\\d+)",
                line("svc \\2 \\1 \\3 [\\0] [\\&] \\9"),
            ),
            regex(
                "(?<verb>reload) (?<svc>\\w+)",
                line("svc \\k<svc> \\k<verb>"),
            ),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            w.lookup("stop web 7"),
            resolved("svc web stop 7 [stop web 7] [stop web 7] ", None)
        );
        assert_eq!(w.lookup("reload web"), resolved("svc web reload", None));
    }

    #[test]
    fn ruby_replacement_escapes() {
        assert_eq!(ruby_template(r"a \1 b"), "a ${1} b");
        assert_eq!(ruby_template(r"\10"), "${1}0");
        assert_eq!(ruby_template(r"cost $5 \\1"), r"cost $$5 \1");
        assert_eq!(ruby_template(r"\`pre\' \q \"), r"pre \q \");
        assert_eq!(ruby_template(r"\k<n>!"), "${n}!");
        assert_eq!(ruby_template(r"\k<n"), r"\k<n");
        assert_eq!(ruby_template("é\\1ü"), "é${1}ü");
    }

    #[test]
    fn dollar_in_command_line_stays_literal() {
        let w: Whitelist = [regex("echo (\\w+)", line("echo $HOME \\1"))]
            .into_iter()
            .collect();
        assert_eq!(w.lookup("echo hi"), resolved("echo $HOME hi", None));
    }

    #[test]
    fn hash_value_under_exact_key_keeps_lock() {
        let w: Whitelist = [(
            Key::Exact("chef-client".into()),
            Entry::Hash {
                command_line: "chef-client -l info".into(),
                lock: Some(Lock::ChefDefault),
            },
        )]
        .into_iter()
        .collect();
        assert_eq!(
            w.lookup("chef-client"),
            resolved("chef-client -l info", Some(Lock::ChefDefault))
        );
    }

    #[test]
    fn hash_value_under_regexp_substitutes_command_line_and_keeps_lock() {
        let lock = Some(Lock::Path("/var/run/deploy.lock".into()));
        let w: Whitelist = [regex(
            "deploy (\\w+)",
            Entry::Hash {
                command_line: "deploy.sh \\1".into(),
                lock: lock.clone(),
            },
        )]
        .into_iter()
        .collect();
        assert_eq!(w.lookup("deploy api"), resolved("deploy.sh api", lock));
    }

    #[test]
    fn hash_without_lock_has_none() {
        let e = Entry::Hash {
            command_line: "x".into(),
            lock: None,
        };
        assert_eq!(e.lock(), None);
        assert_eq!(e.command_line(), "x");
    }

    #[test]
    fn flags_follow_ruby() {
        let p = Pattern::new("^DEPLOY$", "i").unwrap();
        let w: Whitelist = [(Key::Regex(p), line("d"))].into_iter().collect();
        assert_eq!(w.lookup("deploy"), resolved("d", None));

        let p = Pattern::new("a.b", "m").unwrap();
        let w: Whitelist = [(Key::Regex(p), line("dotall"))].into_iter().collect();
        assert_eq!(w.lookup("a\nb"), resolved("dotall", None));

        let p = Pattern::new("deploy \\s (\\w+) # the app name", "x").unwrap();
        let w: Whitelist = [(Key::Regex(p), line("d \\1"))].into_iter().collect();
        assert_eq!(w.lookup("deploy web"), resolved("d web", None));
        assert_eq!(w.lookup("deploy web; id"), None);

        assert!(Pattern::new("a", "ou").is_ok());
    }

    #[test]
    fn bad_regexp_and_flag_are_errors() {
        assert!(matches!(
            Pattern::new("a)|(.*", ""),
            Err(Error::BadRegex { .. })
        ));
        assert!(matches!(
            Pattern::new("(?>atomic)", ""),
            Err(Error::BadRegex { .. })
        ));
        let err = Pattern::new("a", "iq").unwrap_err();
        assert!(matches!(err, Error::UnknownFlag { flag: 'q', .. }));
        assert_eq!(
            err.to_string(),
            "unknown regular expression flag `q` in /a/iq"
        );
    }

    #[test]
    fn reinserting_a_key_keeps_its_position() {
        let mut w = Whitelist::empty();
        w.insert(Key::Regex(Pattern::new("a.*", "").unwrap()), line("one"));
        w.insert(Key::Regex(Pattern::new("ab", "").unwrap()), line("two"));
        w.insert(Key::Regex(Pattern::new("a.*", "").unwrap()), line("three"));
        assert_eq!(w.len(), 2);
        assert_eq!(w.lookup("ab"), resolved("three", None));
        let keys: Vec<String> = w.iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(keys, ["/a.*/", "/ab/"]);
    }
}
