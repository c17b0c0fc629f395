//! The lexer: Ruby source to tokens, each with its line and whether whitespace precedes it.
//!
//! It knows Ruby's comments (`#`, `=begin`/`=end`, `__END__`), line continuations, quoting
//! and escapes, `#{}` interpolation (kept as raw code for the parser), symbols, labels,
//! `%w[]`/`%i[]` word lists, regexps (`/…/`, `%r{…}`) and Ruby's number notations. Something
//! it cannot read becomes a [`Tok::Error`] and the rest of that line is skipped, so one bad
//! line does not hide the statements after it.

/// A token.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    Const(String),
    /// `name:` or `"name":`, a symbol hash key.
    Label(String),
    Str(String),
    /// A double-quoted string with `#{}`.
    Interp(Vec<RawPart>),
    Sym(String),
    Int(i64),
    Float(f64),
    Regex {
        source: String,
        flags: String,
    },
    Words(Vec<String>),
    LBrace,
    RBrace,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Arrow,
    Assign,
    Dot,
    Scope,
    Semi,
    Plus,
    OrOr,
    /// An operator this reader does not evaluate (`*`, `==`, `?`, `-`, …), kept so the
    /// statement before it can be named in the message.
    Op(String),
    /// Text the lexer could not read, and why.
    Error(String),
    Newline,
    Eof,
}

/// A piece of an interpolated string.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum RawPart {
    Lit(String),
    /// The code inside `#{…}` and the line it starts on.
    Code(String, usize),
}

impl Tok {
    /// How the token reads in a message.
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Ident(s) | Tok::Const(s) => format!("`{s}`"),
            Tok::Label(s) => format!("`{s}:`"),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::Interp(_) => "an interpolated string".into(),
            Tok::Sym(s) => format!("symbol :{s}"),
            Tok::Int(i) => format!("number {i}"),
            Tok::Float(f) => format!("number {f}"),
            Tok::Regex { source, flags } => format!("`/{source}/{flags}`"),
            Tok::Words(_) => "`%w[...]`".into(),
            Tok::LBrace => "`{`".into(),
            Tok::RBrace => "`}`".into(),
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
            Tok::LBracket => "`[`".into(),
            Tok::RBracket => "`]`".into(),
            Tok::Comma => "`,`".into(),
            Tok::Arrow => "`=>`".into(),
            Tok::Assign => "`=`".into(),
            Tok::Dot => "`.` (a method call)".into(),
            Tok::Scope => "`::`".into(),
            Tok::Semi => "`;`".into(),
            Tok::Plus => "`+`".into(),
            Tok::OrOr => "`||`".into(),
            Tok::Op(o) => format!("`{o}`"),
            Tok::Error(e) => e.clone(),
            Tok::Newline => "the end of the line".into(),
            Tok::Eof => "end of file".into(),
        }
    }
}

/// A token where it stands.
#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    pub(crate) line: usize,
    /// Whitespace precedes it: `f [1]` is a call with an array, `f[1]` indexing.
    pub(crate) spaced: bool,
}

/// A lexing failure: line and what was not understood.
struct Problem(usize, String);

type Lexed<T> = Result<T, Problem>;

/// The tokens of `src`, whose first line is `first_line`; always ends with [`Tok::Eof`].
pub(crate) fn tokens(src: &str, first_line: usize) -> Vec<Token> {
    let mut lexer = Lexer {
        src,
        pos: 0,
        line: first_line,
    };
    let mut out = Vec::new();
    lexer.scan(&mut out);
    out
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    line: usize,
}

mod literals;

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

impl<'a> Lexer<'a> {
    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek2(&self) -> Option<char> {
        self.rest().chars().nth(1)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn at_line_start(&self) -> bool {
        self.pos == 0 || self.src[..self.pos].ends_with('\n')
    }

    fn skip_line(&mut self) {
        while self.peek().is_some_and(|c| c != '\n') {
            self.bump();
        }
    }

    fn scan(&mut self, out: &mut Vec<Token>) {
        let mut spaced = true;
        loop {
            let line = self.line;
            let Some(c) = self.peek() else {
                out.push(Token {
                    tok: Tok::Eof,
                    line,
                    spaced,
                });
                return;
            };
            let tok = match c {
                ' ' | '\t' | '\r' => {
                    self.bump();
                    spaced = true;
                    continue;
                }
                '\\' if matches!(self.peek2(), Some('\n' | '\r')) => {
                    self.bump();
                    self.skip_line();
                    self.bump();
                    spaced = true;
                    continue;
                }
                '#' => {
                    self.skip_line();
                    continue;
                }
                '=' if self.at_line_start() && self.rest().starts_with("=begin") => {
                    match self.block_comment(line) {
                        Ok(()) => continue,
                        Err(p) => Err(p),
                    }
                }
                '_' if self.at_line_start() && self.rest().lines().next() == Some("__END__") => {
                    out.push(Token {
                        tok: Tok::Eof,
                        line,
                        spaced,
                    });
                    return;
                }
                _ => self.token(c, line),
            };
            let tok = match tok {
                Ok(tok) => tok,
                Err(Problem(at, message)) => {
                    // Resume on the next line; the parser reports the problem.
                    self.skip_line();
                    out.push(Token {
                        tok: Tok::Error(message),
                        line: at,
                        spaced,
                    });
                    continue;
                }
            };
            out.push(Token { tok, line, spaced });
            spaced = false;
        }
    }

    fn token(&mut self, c: char, line: usize) -> Lexed<Tok> {
        Ok(match c {
            '\n' => {
                self.bump();
                Tok::Newline
            }
            '\'' => self.label_or(|l| l.single_quoted().map(Tok::Str))?,
            '"' => self.label_or(|l| l.double_quoted())?,
            '/' => {
                self.bump();
                self.regex('/', '/')?
            }
            '%' => self.percent()?,
            ':' => self.colon()?,
            '-' if self.peek2().is_some_and(|d| d.is_ascii_digit()) => self.number()?,
            d if d.is_ascii_digit() => self.number()?,
            c if is_ident_start(c) => self.word(),
            '=' => {
                self.bump();
                match self.peek() {
                    Some('>') => {
                        self.bump();
                        Tok::Arrow
                    }
                    Some(c @ ('=' | '~')) => {
                        self.bump();
                        Tok::Op(format!("={c}"))
                    }
                    _ => Tok::Assign,
                }
            }
            '|' if self.peek2() == Some('|') => {
                self.bump();
                self.bump();
                Tok::OrOr
            }
            '@' | '$' | '`' | '<' | '|' => return Err(Problem(line, unexpected_char(c))),
            '*' | '?' | '-' | '!' | '&' | '>' | '^' | '~' => {
                self.bump();
                let mut op = c.to_string();
                if let Some(d) = self.peek().filter(|d| "=*&".contains(*d)) {
                    self.bump();
                    op.push(d);
                }
                Tok::Op(op)
            }
            _ => {
                self.bump();
                match c {
                    '{' => Tok::LBrace,
                    '}' => Tok::RBrace,
                    '(' => Tok::LParen,
                    ')' => Tok::RParen,
                    '[' => Tok::LBracket,
                    ']' => Tok::RBracket,
                    ',' => Tok::Comma,
                    ';' => Tok::Semi,
                    '+' => Tok::Plus,
                    '.' => Tok::Dot,
                    other => return Err(Problem(line, unexpected_char(other))),
                }
            }
        })
    }

    fn block_comment(&mut self, line: usize) -> Lexed<()> {
        loop {
            self.skip_line();
            if self.bump().is_none() {
                return Err(Problem(line, "`=begin` without `=end`".into()));
            }
            if self.rest().starts_with("=end") {
                self.skip_line();
                return Ok(());
            }
        }
    }

    /// A string, or a `"name":` hash label.
    fn label_or(&mut self, string: impl FnOnce(&mut Self) -> Lexed<Tok>) -> Lexed<Tok> {
        let tok = string(self)?;
        match tok {
            Tok::Str(s) if self.peek() == Some(':') && self.peek2() != Some(':') => {
                self.bump();
                Ok(Tok::Label(s))
            }
            tok => Ok(tok),
        }
    }

    fn word(&mut self) -> Tok {
        let start = self.pos;
        while self.peek().is_some_and(is_ident_char) {
            self.bump();
        }
        if matches!(self.peek(), Some('?' | '!')) && self.peek2() != Some('=') {
            self.bump();
        }
        let word = self.src[start..self.pos].to_owned();
        if self.peek() == Some(':') && self.peek2() != Some(':') && !word.ends_with(['?', '!']) {
            self.bump();
            return Tok::Label(word);
        }
        if word.starts_with(|c: char| c.is_uppercase()) {
            Tok::Const(word)
        } else {
            Tok::Ident(word)
        }
    }

    fn colon(&mut self) -> Lexed<Tok> {
        let line = self.line;
        self.bump();
        match self.peek() {
            Some(':') => {
                self.bump();
                Ok(Tok::Scope)
            }
            Some('"') => match self.double_quoted()? {
                Tok::Str(s) => Ok(Tok::Sym(s)),
                _ => Err(Problem(
                    line,
                    "interpolated symbols are not supported".into(),
                )),
            },
            Some('\'') => self.single_quoted().map(Tok::Sym),
            Some(c) if is_ident_start(c) => match self.word() {
                Tok::Ident(s) | Tok::Const(s) => Ok(Tok::Sym(s)),
                // `:a:` is not Ruby; report it as such.
                _ => Err(Problem(line, "malformed symbol".into())),
            },
            _ => Err(Problem(
                line,
                "a lone `:` is not supported (no ternaries or operator symbols)".into(),
            )),
        }
    }
}

fn unexpected_char(c: char) -> String {
    match c {
        '@' => "instance variables (`@...`) are not supported".into(),
        '$' => "global variables (`$...`) are not supported".into(),
        '`' => "backticks (shell commands) are not supported".into(),
        '<' => "heredocs and operators (`<`, `<<`) are not supported".into(),
        '|' => "blocks and operators (`|`) are not supported".into(),
        c if c.is_ascii_punctuation() => {
            format!("operator `{c}` is not supported (only literal values)")
        }
        c => format!("unexpected character {c:?}"),
    }
}
