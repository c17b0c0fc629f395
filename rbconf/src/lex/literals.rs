//! The lexer's literals: quoted strings (escapes, `#{}` interpolation), regexps, `%`
//! literals and numbers in Ruby's notations.

use super::{Lexed, Lexer, Problem, RawPart, Tok, is_ident_start};

impl Lexer<'_> {
    pub(super) fn single_quoted(&mut self) -> Lexed<String> {
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
    pub(super) fn double_quoted(&mut self) -> Lexed<Tok> {
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
    pub(super) fn regex(&mut self, open: char, close: char) -> Lexed<Tok> {
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
    pub(super) fn percent(&mut self) -> Lexed<Tok> {
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

    pub(super) fn number(&mut self) -> Lexed<Tok> {
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
