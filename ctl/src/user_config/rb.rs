//! The `.rb` reader: a lexer and a small recursive-descent parser for the attribute-assignment
//! subset of Ruby that `opscode-push-jobs-server.rb` files use (ops.md §1.3).
//!
//! Grammar (statements end at a newline or `;`; newlines inside `[]`/`{}` are ignored):
//! ```text
//! statement := NAMESPACE ('[' key ']')+ '=' value
//! key       := 'string' | "string" | :symbol
//! value     := string | symbol | ['-'] number | true | false | nil
//!            | '[' values ']' | '{' pairs '}' | %w[words] | node ('[' key ']')+
//! pair      := key '=>' value | label: value
//! ```
//! `#` comments, `=begin`/`=end` blocks and `__END__` are skipped. Anything else is an error
//! naming the line and quoting it: we never guess at Ruby we cannot evaluate.

use std::path::Path;

use super::{Error, NAMESPACES, Tree, Value, display_key};

mod lex;

use lex::{Fail, Spanned, Tok, fail, lex};

/// Parses `text` (read from `path`) into a [`Tree`]. `node` answers `node['…']` lookups.
pub(super) fn parse(
    path: &Path,
    text: &str,
    node: Option<&serde_json::Value>,
) -> Result<Tree, Error> {
    let to_error = |f: Fail| Error::Syntax {
        path: path.to_path_buf(),
        line: f.line,
        message: f.message,
        text: text
            .lines()
            .nth(f.line.saturating_sub(1))
            .unwrap_or("")
            .trim()
            .to_owned(),
    };
    let tokens = lex(text).map_err(to_error)?;
    let mut parser = Parser {
        tokens,
        pos: 0,
        node,
        tree: Tree::new(path),
    };
    parser.statements().map_err(to_error)?;
    Ok(parser.tree)
}

struct Parser<'a> {
    tokens: Vec<Spanned>,
    pos: usize,
    node: Option<&'a serde_json::Value>,
    tree: Tree,
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.tokens[self.pos].0
    }

    fn next(&mut self) -> Spanned {
        let t = self.tokens[self.pos].clone();
        if self.pos + 1 < self.tokens.len() {
            self.pos += 1;
        }
        t
    }

    fn at_eof(&self) -> bool {
        self.pos + 1 >= self.tokens.len()
    }

    fn skip_ends(&mut self) {
        while *self.peek() == Tok::End && !self.at_eof() {
            self.pos += 1;
        }
    }

    fn expect(&mut self, want: Tok, what: &str) -> Result<(), Fail> {
        let (tok, line) = self.next();
        if tok == want {
            Ok(())
        } else {
            fail(line, format!("expected {what}, found {}", tok.describe()))
        }
    }

    fn statements(&mut self) -> Result<(), Fail> {
        loop {
            self.skip_ends();
            if self.at_eof() {
                return Ok(());
            }
            self.statement()?;
            let (tok, line) = self.next();
            if tok != Tok::End {
                return fail(
                    line,
                    format!("unexpected {} after the value", tok.describe()),
                );
            }
        }
    }

    fn statement(&mut self) -> Result<(), Fail> {
        let (tok, line) = self.next();
        let namespace = match tok {
            Tok::Ident(name) if NAMESPACES.contains(&name.as_str()) => name,
            Tok::Ident(name) => {
                return fail(
                    line,
                    format!(
                        "`{name}` is not a setting namespace (expected one of {})",
                        NAMESPACES.join(", ")
                    ),
                );
            }
            other => {
                return fail(
                    line,
                    format!("expected a setting, found {}", other.describe()),
                );
            }
        };
        let mut path = vec![namespace];
        if *self.peek() != Tok::LBracket {
            let found = self.peek().describe();
            return fail(
                line,
                format!("expected `[` after {}, found {found}", path[0]),
            );
        }
        while *self.peek() == Tok::LBracket {
            self.next();
            path.push(self.key()?);
            self.expect(Tok::RBracket, "`]`")?;
        }
        let (tok, at) = self.next();
        if tok != Tok::Assign {
            return fail(
                at,
                format!(
                    "expected `=` after {}, found {}",
                    display_key(&path),
                    tok.describe()
                ),
            );
        }
        let value = self.value(false)?;
        self.tree
            .assign(path, value, Some(line))
            .or_else(|message| fail(line, message))
    }

    /// A hash key or index: a string or a symbol.
    fn key(&mut self) -> Result<String, Fail> {
        match self.next() {
            (Tok::Str(s) | Tok::Sym(s), _) => Ok(s),
            (other, line) => fail(
                line,
                format!(
                    "expected a quoted key or a :symbol, found {}",
                    other.describe()
                ),
            ),
        }
    }

    /// A value; `nested` inside `[]`/`{}`, where newlines do not end anything.
    fn value(&mut self, nested: bool) -> Result<Value, Fail> {
        if nested {
            self.skip_ends();
        }
        let (tok, line) = self.next();
        match tok {
            Tok::Str(s) | Tok::Sym(s) => Ok(Value::Str(s)),
            Tok::Int(n) => Ok(Value::Int(n)),
            Tok::Float(x) => Ok(Value::Float(x)),
            Tok::Minus => match self.next() {
                (Tok::Int(n), _) => Ok(Value::Int(-n)),
                (Tok::Float(x), _) => Ok(Value::Float(-x)),
                (other, line) => fail(
                    line,
                    format!("expected a number after `-`, found {}", other.describe()),
                ),
            },
            Tok::Words(words) => Ok(Value::Array(words.into_iter().map(Value::Str).collect())),
            Tok::Ident(word) => match word.as_str() {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                "nil" => Ok(Value::Nil),
                "node" => self.node_lookup(line),
                _ => fail(
                    line,
                    format!("`{word}` is not a value this reader understands"),
                ),
            },
            Tok::LBracket => self.array(),
            Tok::LBrace => self.hash(),
            other => fail(
                line,
                format!(
                    "expected a value (string, number, true/false/nil, :symbol, array or hash), found {}",
                    other.describe()
                ),
            ),
        }
    }

    fn array(&mut self) -> Result<Value, Fail> {
        let mut items = Vec::new();
        loop {
            self.skip_ends();
            if *self.peek() == Tok::RBracket {
                self.next();
                return Ok(Value::Array(items));
            }
            items.push(self.value(true)?);
            self.skip_ends();
            match self.next() {
                (Tok::Comma, _) => {}
                (Tok::RBracket, _) => return Ok(Value::Array(items)),
                (other, line) => {
                    return fail(
                        line,
                        format!(
                            "expected `,` or `]` in the array, found {}",
                            other.describe()
                        ),
                    );
                }
            }
        }
    }

    fn hash(&mut self) -> Result<Value, Fail> {
        let mut pairs: Vec<(String, Value)> = Vec::new();
        loop {
            self.skip_ends();
            let key = match self.next() {
                (Tok::RBrace, _) => return Ok(Value::Hash(pairs)),
                (Tok::Label(k), _) => k,
                (Tok::Str(k) | Tok::Sym(k), _) => {
                    self.expect(Tok::Arrow, "`=>`")?;
                    k
                }
                (other, line) => {
                    return fail(
                        line,
                        format!("expected a hash key, found {}", other.describe()),
                    );
                }
            };
            let value = self.value(true)?;
            pairs.retain(|(k, _)| *k != key);
            pairs.push((key, value));
            self.skip_ends();
            match self.next() {
                (Tok::Comma, _) => {}
                (Tok::RBrace, _) => return Ok(Value::Hash(pairs)),
                (other, line) => {
                    return fail(
                        line,
                        format!(
                            "expected `,` or `}}` in the hash, found {}",
                            other.describe()
                        ),
                    );
                }
            }
        }
    }

    /// `node['a']['b']`: Chef Server's attributes, as the original's file could read them.
    fn node_lookup(&mut self, line: usize) -> Result<Value, Fail> {
        let mut keys = Vec::new();
        while *self.peek() == Tok::LBracket {
            self.next();
            keys.push(self.key()?);
            self.expect(Tok::RBracket, "`]`")?;
        }
        if keys.is_empty() {
            return fail(
                line,
                "`node` must be indexed, as in node['private_chef']['api_fqdn']",
            );
        }
        let Some(mut current) = self.node else {
            return fail(
                line,
                "node attributes are not available (no chef-server-running.json)",
            );
        };
        for (i, key) in keys.iter().enumerate() {
            match current.get(key) {
                Some(v) => current = v,
                // The last key missing is nil; a missing key in the middle is Ruby's NoMethodError.
                None if i + 1 == keys.len() && current.is_object() => return Ok(Value::Nil),
                None => {
                    let so_far: String = keys[..=i].iter().map(|k| format!("['{k}']")).collect();
                    return fail(
                        line,
                        format!("node{so_far} is not set in Chef Server's attributes"),
                    );
                }
            }
        }
        Ok(from_json(current))
    }
}

fn from_json(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Value::Str(s.clone()),
        serde_json::Value::Array(a) => Value::Array(a.iter().map(from_json).collect()),
        serde_json::Value::Object(m) => {
            Value::Hash(m.iter().map(|(k, v)| (k.clone(), from_json(v))).collect())
        }
    }
}

#[cfg(test)]
#[path = "rb_tests.rs"]
mod tests;
