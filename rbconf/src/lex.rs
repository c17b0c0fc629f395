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

    fn single_quoted(&mut self) -> Lexed<String> {
        let line = self.line;
        self.bump();
        let mut s = String::new();
        loop {
            match self.bump() {
                None => return Err(Problem(line, "unterminated string".into())),
                Some('\'') => return Ok(s),
                Some('\\') => match self.bump() {
                    Some(c @ ('\\' | '\'')) => s.push(c),
                    Some(c) => {
                        s.push('\\');
                        s.push(c);
                    }
                    None => return Err(Problem(line, "unterminated string".into())),
                },
                Some(c) => s.push(c),
            }
        }
    }

    /// A double-quoted string: [`Tok::Str`], or [`Tok::Interp`] when it has `#{…}`.
    fn double_quoted(&mut self) -> Lexed<Tok> {
        let line = self.line;
        self.bump();
        let mut parts = Vec::new();
        let mut s = String::new();
        loop {
            match self.bump() {
                None => return Err(Problem(line, "unterminated string".into())),
                Some('"') => break,
                Some('\\') => self.escape(&mut s, line)?,
                Some('#') if self.peek() == Some('{') => {
                    self.bump();
                    parts.push(RawPart::Lit(std::mem::take(&mut s)));
                    let code_line = self.line;
                    let code = self.interpolated_code(line)?;
                    parts.push(RawPart::Code(code, code_line));
                }
                Some('#') if self.interpolates_variable() => {
                    return Err(Problem(
                        self.line,
                        "string interpolation of variables (`#@...`, `#$...`) is not supported"
                            .into(),
                    ));
                }
                Some(c) => s.push(c),
            }
        }
        if parts.is_empty() {
            return Ok(Tok::Str(s));
        }
        parts.push(RawPart::Lit(s));
        parts.retain(|p| !matches!(p, RawPart::Lit(l) if l.is_empty()));
        Ok(Tok::Interp(parts))
    }

    /// The code of a `#{…}` up to its closing brace (which is consumed).
    fn interpolated_code(&mut self, line: usize) -> Lexed<String> {
        let start = self.pos;
        let mut depth = 0usize;
        let mut quote = None;
        loop {
            let c = self
                .bump()
                .ok_or_else(|| Problem(line, "unterminated string".into()))?;
            match (quote, c) {
                (Some(_), '\\') => {
                    self.bump();
                }
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '\'' | '"') => quote = Some(c),
                (None, '{') => depth += 1,
                (None, '}') if depth == 0 => return Ok(self.src[start..self.pos - 1].to_owned()),
                (None, '}') => depth -= 1,
                (None, _) => {}
            }
        }
    }

    /// After a `#` inside double quotes or a regexp: is this `#@var` or `#$var`?
    fn interpolates_variable(&self) -> bool {
        match self.peek() {
            Some('@') => self.peek2().is_some_and(|c| is_ident_start(c) || c == '@'),
            Some('$') => self
                .peek2()
                .is_some_and(|c| is_ident_start(c) || "!@&~0123456789".contains(c)),
            _ => false,
        }
    }

    fn escape(&mut self, s: &mut String, line: usize) -> Lexed<()> {
        let unterminated = || Problem(line, "unterminated string".into());
        let c = self.bump().ok_or_else(unterminated)?;
        let decoded = match c {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            's' => ' ',
            'e' => '\x1b',
            'a' => '\x07',
            'b' => '\x08',
            'f' => '\x0c',
            'v' => '\x0b',
            '\n' => return Ok(()),
            '0'..='7' => {
                let mut n = c.to_digit(8).expect("an octal digit was matched");
                for _ in 0..2 {
                    match self.peek().and_then(|d| d.to_digit(8)) {
                        Some(d) => {
                            self.bump();
                            n = n * 8 + d;
                        }
                        None => break,
                    }
                }
                char::from_u32(n).expect("at most 0o777 is a valid char")
            }
            'x' => {
                let n = self.hex_digits(2);
                let n = n.ok_or_else(|| Problem(line, "invalid `\\x` escape".into()))?;
                char::from_u32(n).expect("at most 0xff is a valid char")
            }
            'u' if self.peek() == Some('{') => {
                self.bump();
                loop {
                    while self.peek() == Some(' ') {
                        self.bump();
                    }
                    if self.peek() == Some('}') {
                        self.bump();
                        return Ok(());
                    }
                    let n = self.hex_digits(6).and_then(char::from_u32);
                    s.push(n.ok_or_else(|| Problem(line, "invalid `\\u{...}` escape".into()))?);
                }
            }
            'u' => {
                let start = self.pos;
                let n = self.hex_digits(4).filter(|_| self.pos - start == 4);
                n.and_then(char::from_u32)
                    .ok_or_else(|| Problem(line, "invalid `\\u` escape".into()))?
            }
            'c' | 'C' | 'M' => {
                return Err(Problem(
                    line,
                    format!("control/meta escape `\\{c}` is not supported"),
                ));
            }
            other => other,
        };
        s.push(decoded);
        Ok(())
    }

    fn hex_digits(&mut self, max: usize) -> Option<u32> {
        let mut n = None;
        for _ in 0..max {
            let Some(d) = self.peek().and_then(|c| c.to_digit(16)) else {
                break;
            };
            self.bump();
            n = Some(n.unwrap_or(0) * 16 + d);
        }
        n
    }

    /// A regexp body after its opening delimiter; `\/` becomes `/`, other escapes stay.
    fn regex(&mut self, open: char, close: char) -> Lexed<Tok> {
        let line = self.line;
        let mut source = String::new();
        let mut depth = 0usize;
        loop {
            let c = self
                .bump()
                .ok_or_else(|| Problem(line, "unterminated regexp".into()))?;
            match c {
                '\\' => {
                    let d = self
                        .bump()
                        .ok_or_else(|| Problem(line, "unterminated regexp".into()))?;
                    if d != '/' {
                        source.push('\\');
                    }
                    source.push(d);
                }
                '#' if self.peek() == Some('{') || self.interpolates_variable() => {
                    return Err(Problem(
                        self.line,
                        "regexp interpolation (`#{...}`) is not supported".into(),
                    ));
                }
                c if c == close && depth == 0 => break,
                c => {
                    if open != close && c == open {
                        depth += 1;
                    } else if open != close && c == close {
                        depth -= 1;
                    }
                    source.push(c);
                }
            }
        }
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
            self.bump();
        }
        let flags = self.src[start..self.pos].to_owned();
        if let Some(bad) = flags.chars().find(|c| !"imxounse".contains(*c)) {
            return Err(Problem(
                line,
                format!("unknown regexp flag `{bad}` in /{source}/{flags}"),
            ));
        }
        Ok(Tok::Regex { source, flags })
    }

    /// `%w[...]`/`%i[...]` word arrays and `%r{...}` regexps; other `%` literals are refused.
    fn percent(&mut self) -> Lexed<Tok> {
        let line = self.line;
        self.bump();
        let kind = self.bump();
        let open = self.bump();
        let close = match open {
            Some('(') => ')',
            Some('[') => ']',
            Some('{') => '}',
            Some('<') => '>',
            Some(c) if c.is_ascii_punctuation() => c,
            _ => return Err(Problem(line, "unsupported `%` literal".into())),
        };
        let open = open.expect("matched above");
        match kind {
            Some('r') => self.regex(open, close),
            Some('w' | 'W' | 'i' | 'I') => {
                let mut body = String::new();
                loop {
                    match self.bump() {
                        None => return Err(Problem(line, "unterminated %w literal".into())),
                        Some(c) if c == close => break,
                        Some(c) => body.push(c),
                    }
                }
                Ok(Tok::Words(
                    body.split_whitespace().map(str::to_owned).collect(),
                ))
            }
            _ => Err(Problem(
                line,
                "only the %w[...] and %r{...} `%` literals are supported".into(),
            )),
        }
    }

    fn number(&mut self) -> Lexed<Tok> {
        let line = self.line;
        let start = self.pos;
        let negative = self.peek() == Some('-');
        if negative {
            self.bump();
        }
        let radix = match (self.peek(), self.peek2().map(|c| c.to_ascii_lowercase())) {
            (Some('0'), Some('x')) => 16,
            (Some('0'), Some('b')) => 2,
            (Some('0'), Some('o')) => 8,
            (Some('0'), Some('d')) => 10,
            (Some('0'), Some('0'..='9' | '_')) => 8,
            _ => 0,
        };
        if radix != 0 {
            self.bump();
            if self.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
                self.bump();
            }
        }
        let digits_start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            self.bump();
        }
        let mut float = false;
        if radix == 0
            && self.peek() == Some('.')
            && self.peek2().is_some_and(|c| c.is_ascii_digit())
        {
            float = true;
            self.bump();
            while self
                .peek()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                self.bump();
            }
        }
        if (float || radix == 0)
            && self.src[..self.pos].ends_with(['e', 'E'])
            && matches!(self.peek(), Some('+' | '-'))
        {
            float = true;
            self.bump();
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.bump();
            }
        }
        let digits: String = self.src[digits_start..self.pos]
            .chars()
            .filter(|&c| c != '_')
            .collect();
        let invalid = || {
            Problem(
                line,
                format!(
                    "`{}` is not a number (invalid number literal)",
                    &self.src[start..self.pos]
                ),
            )
        };
        if radix == 0 && (float || digits.contains(['e', 'E'])) {
            let value: f64 = digits.parse().map_err(|_| invalid())?;
            return Ok(Tok::Float(if negative { -value } else { value }));
        }
        let value = i64::from_str_radix(&digits, if radix == 0 { 10 } else { radix })
            .map_err(|_| invalid())?;
        Ok(Tok::Int(if negative { -value } else { value }))
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
