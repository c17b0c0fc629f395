//! The `.rb` reader's lexer: tokens with the line they start on. Handles Ruby's comments,
//! `=begin`/`=end`, `__END__`, quoting and escapes, symbols, `%w[]` and number notations.

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    Ident(String),
    /// `name:` in a hash literal.
    Label(String),
    Str(String),
    Sym(String),
    Int(i64),
    Float(f64),
    /// `%w[...]` / `%i[...]`.
    Words(Vec<String>),
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Comma,
    Assign,
    Arrow,
    Minus,
    /// End of statement: a newline or `;`.
    End,
    /// Anything else, kept to be quoted in the error.
    Other(String),
}

impl Tok {
    pub(super) fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Label(s) => format!("`{s}:`"),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::Sym(s) => format!("symbol :{s}"),
            Tok::Int(i) => format!("number {i}"),
            Tok::Float(x) => format!("number {x}"),
            Tok::Words(_) => "a %w[] list".into(),
            Tok::LBracket => "`[`".into(),
            Tok::RBracket => "`]`".into(),
            Tok::LBrace => "`{`".into(),
            Tok::RBrace => "`}`".into(),
            Tok::Comma => "`,`".into(),
            Tok::Assign => "`=`".into(),
            Tok::Arrow => "`=>`".into(),
            Tok::Minus => "`-`".into(),
            Tok::End => "the end of the line".into(),
            Tok::Other(s) => format!("`{s}`"),
        }
    }
}

/// A token and the 1-based line it starts on.
pub(super) type Spanned = (Tok, usize);

/// A parse failure: line and message; [`parse`] adds the path and the line's text.
pub(super) struct Fail {
    pub(super) line: usize,
    pub(super) message: String,
}

pub(super) fn fail<T>(line: usize, message: impl Into<String>) -> Result<T, Fail> {
    Err(Fail {
        line,
        message: message.into(),
    })
}

pub(super) fn lex(text: &str) -> Result<Vec<Spanned>, Fail> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    let at_line_start = |i: usize| i == 0 || chars[i - 1] == '\n';
    let starts_with = |i: usize, s: &str| {
        s.chars()
            .enumerate()
            .all(|(k, c)| chars.get(i + k) == Some(&c))
    };
    while i < chars.len() {
        let c = chars[i];
        if at_line_start(i) && starts_with(i, "__END__") {
            break;
        }
        if at_line_start(i) && starts_with(i, "=begin") {
            // Skip through the line that starts with `=end`.
            let begin = line;
            loop {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                if i >= chars.len() {
                    return fail(begin, "`=begin` without `=end`");
                }
                i += 1;
                line += 1;
                if starts_with(i, "=end") {
                    while i < chars.len() && chars[i] != '\n' {
                        i += 1;
                    }
                    break;
                }
            }
            continue;
        }
        match c {
            ' ' | '\t' | '\r' => i += 1,
            '\\' if chars.get(i + 1) == Some(&'\n') => {
                i += 2;
                line += 1;
            }
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '\n' | ';' => {
                out.push((Tok::End, line));
                if c == '\n' {
                    line += 1;
                }
                i += 1;
            }
            '\'' | '"' => {
                let start = line;
                let (s, next, lines) = lex_string(&chars, i, start)?;
                out.push((Tok::Str(s), start));
                i = next;
                line += lines;
            }
            ':' if chars.get(i + 1) == Some(&'"') || chars.get(i + 1) == Some(&'\'') => {
                let start = line;
                let (s, next, lines) = lex_string(&chars, i + 1, start)?;
                out.push((Tok::Sym(s), start));
                i = next;
                line += lines;
            }
            ':' if chars
                .get(i + 1)
                .is_some_and(|c| c.is_alphabetic() || *c == '_') =>
            {
                let (word, next) = lex_word(&chars, i + 1);
                out.push((Tok::Sym(word), line));
                i = next;
            }
            '%' if matches!(chars.get(i + 1), Some('w' | 'W' | 'i' | 'I')) => {
                let (words, next) = lex_words(&chars, i + 2, line)?;
                out.push((Tok::Words(words), line));
                i = next;
            }
            '0'..='9' => {
                let (tok, next) = lex_number(&chars, i, line)?;
                out.push((tok, line));
                i = next;
            }
            c if c.is_alphabetic() || c == '_' => {
                let (word, next) = lex_word(&chars, i);
                // `label: value` in a hash, but not `A::B`.
                if chars.get(next) == Some(&':') && chars.get(next + 1) != Some(&':') {
                    out.push((Tok::Label(word), line));
                    i = next + 1;
                } else {
                    out.push((Tok::Ident(word), line));
                    i = next;
                }
            }
            '=' if chars.get(i + 1) == Some(&'>') => {
                out.push((Tok::Arrow, line));
                i += 2;
            }
            '=' if matches!(chars.get(i + 1), Some('=' | '~')) => {
                out.push((Tok::Other(chars[i..i + 2].iter().collect()), line));
                i += 2;
            }
            '=' => {
                out.push((Tok::Assign, line));
                i += 1;
            }
            '[' | ']' | '{' | '}' | ',' | '-' => {
                let tok = match c {
                    '[' => Tok::LBracket,
                    ']' => Tok::RBracket,
                    '{' => Tok::LBrace,
                    '}' => Tok::RBrace,
                    ',' => Tok::Comma,
                    _ => Tok::Minus,
                };
                out.push((tok, line));
                i += 1;
            }
            other => {
                out.push((Tok::Other(other.to_string()), line));
                i += 1;
            }
        }
    }
    out.push((Tok::End, line));
    Ok(out)
}

/// An identifier (letters, digits, `_`, an optional trailing `?` or `!`). Returns it and the
/// index after it.
fn lex_word(chars: &[char], mut i: usize) -> (String, usize) {
    let start = i;
    while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
        i += 1;
    }
    if i < chars.len() && (chars[i] == '?' || chars[i] == '!') {
        i += 1;
    }
    (chars[start..i].iter().collect(), i)
}

/// A quoted string starting at `chars[i]` (the quote). Returns the value, the index after the
/// closing quote and the number of newlines inside.
fn lex_string(chars: &[char], i: usize, line: usize) -> Result<(String, usize, usize), Fail> {
    let quote = chars[i];
    let mut out = String::new();
    let mut j = i + 1;
    let mut lines = 0;
    loop {
        let Some(&c) = chars.get(j) else {
            return fail(line, "unterminated string");
        };
        j += 1;
        match c {
            c if c == quote => return Ok((out, j, lines)),
            '\n' => {
                lines += 1;
                out.push('\n');
            }
            '#' if quote == '"' && chars.get(j) == Some(&'{') => {
                return fail(
                    line + lines,
                    "string interpolation (`#{…}`) is not supported",
                );
            }
            '\\' => {
                let Some(&e) = chars.get(j) else {
                    return fail(line, "unterminated string");
                };
                j += 1;
                if quote == '\'' {
                    // Single quotes only escape the quote and the backslash.
                    if e != '\'' && e != '\\' {
                        out.push('\\');
                    }
                    if e == '\n' {
                        lines += 1;
                    }
                    out.push(e);
                    continue;
                }
                match e {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    '0' => out.push('\0'),
                    's' => out.push(' '),
                    'e' => out.push('\x1b'),
                    'a' => out.push('\x07'),
                    'b' => out.push('\x08'),
                    'f' => out.push('\x0c'),
                    'v' => out.push('\x0b'),
                    'u' => {
                        let (ch, next) = lex_unicode_escape(chars, j, line + lines)?;
                        out.push(ch);
                        j = next;
                    }
                    '\n' => lines += 1,
                    other => out.push(other),
                }
            }
            c => out.push(c),
        }
    }
}

/// `\uXXXX` or `\u{X…}` after the `u`.
fn lex_unicode_escape(chars: &[char], j: usize, line: usize) -> Result<(char, usize), Fail> {
    let (digits, next): (String, usize) = if chars.get(j) == Some(&'{') {
        let end = (j + 1..chars.len()).find(|&k| chars[k] == '}');
        match end {
            Some(end) => (chars[j + 1..end].iter().collect(), end + 1),
            None => return fail(line, "unterminated \\u{…} escape"),
        }
    } else {
        (chars.iter().skip(j).take(4).collect(), j + 4)
    };
    u32::from_str_radix(&digits, 16)
        .ok()
        .and_then(char::from_u32)
        .map(|c| (c, next))
        .ok_or(Fail {
            line,
            message: format!("bad unicode escape \\u{digits}"),
        })
}

/// `%w[a b c]` after the `%w`: any bracket pair, or any other punctuation as both delimiters.
fn lex_words(chars: &[char], i: usize, line: usize) -> Result<(Vec<String>, usize), Fail> {
    let Some(&open) = chars.get(i) else {
        return fail(line, "`%w` without a list");
    };
    let close = match open {
        '[' => ']',
        '(' => ')',
        '{' => '}',
        '<' => '>',
        c if c.is_ascii_punctuation() => c,
        _ => return fail(line, "`%w` without a list"),
    };
    let end = (i + 1..chars.len())
        .find(|&k| chars[k] == close)
        .ok_or(Fail {
            line,
            message: "unterminated %w list".into(),
        })?;
    let body: String = chars[i + 1..end].iter().collect();
    Ok((
        body.split_whitespace().map(str::to_owned).collect(),
        end + 1,
    ))
}

/// A number starting at `chars[i]`: decimal (with `_` separators), `0x`, `0b`, `0o`, a leading
/// `0` for octal as in Ruby, and floats with a fraction and/or exponent.
fn lex_number(chars: &[char], i: usize, line: usize) -> Result<(Tok, usize), Fail> {
    let mut j = i;
    let is_part = |c: char| c.is_ascii_alphanumeric() || c == '_';
    while j < chars.len() && is_part(chars[j]) {
        j += 1;
    }
    let mut float = false;
    if chars.get(j) == Some(&'.') && chars.get(j + 1).is_some_and(char::is_ascii_digit) {
        float = true;
        j += 1;
        while j < chars.len() && is_part(chars[j]) {
            j += 1;
        }
    }
    if float
        && matches!(chars.get(j - 1), Some('e' | 'E'))
        && matches!(chars.get(j), Some('+' | '-'))
    {
        j += 1;
        while j < chars.len() && chars[j].is_ascii_digit() {
            j += 1;
        }
    }
    let raw: String = chars[i..j].iter().filter(|c| **c != '_').collect();
    let bad = || Fail {
        line,
        message: format!(
            "`{}` is not a number",
            chars[i..j].iter().collect::<String>()
        ),
    };
    let lower = raw.to_ascii_lowercase();
    let is_float = float || (lower.contains('e') && !lower.starts_with("0x"));
    if is_float {
        return lower
            .parse::<f64>()
            .map(|x| (Tok::Float(x), j))
            .map_err(|_| bad());
    }
    let (digits, radix) = if let Some(rest) = lower.strip_prefix("0x") {
        (rest, 16)
    } else if let Some(rest) = lower.strip_prefix("0b") {
        (rest, 2)
    } else if let Some(rest) = lower.strip_prefix("0o") {
        (rest, 8)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (&lower[1..], 8)
    } else {
        (lower.as_str(), 10)
    };
    i64::from_str_radix(digits, radix)
        .map(|n| (Tok::Int(n), j))
        .map_err(|_| bad())
}
