//! The parser: a small recursive descent over the lexer's tokens.
//!
//! ```text
//! file      := (stmt (NEWLINE | ';'))*
//! stmt      := BLOCK_KEYWORD … NEWLINE stmts 'end' | … 'do' … NEWLINE stmts 'end'
//!            | IDENT '=' expr | IDENT '(' args ')' | IDENT args | IDENT
//!            | expr ['=' expr]
//! args      := arg (',' arg)*            arg := expr | expr '=>' … (a brace-less hash)
//! expr      := sum ('||' sum)*            sum := postfix ('+' postfix)*
//! postfix   := primary ('.' NAME ['(' args ')'] | '[' expr ']' | '::' CONST)*
//! primary   := literal | IDENT ['(' args ')'] | CONST | '[' items ']' | '{' pairs '}'
//!            | '(' expr ')'
//! ```
//! Newlines inside brackets do not end a statement. A statement that does not parse becomes
//! [`StmtKind::Unparsed`] and the parser resumes after it.

use crate::lex::{self, RawPart, Tok, Token};
use crate::tree::{Expr, ExprKind, Found, Part, Problem, ProblemKind, Stmt, StmtKind};

/// Keywords that open a block closed by `end`.
const BLOCK_KEYWORDS: &[&str] = &[
    "if", "unless", "case", "begin", "while", "until", "for", "def", "class", "module",
];

/// Keywords that continue a block (their line's condition is skipped).
const BRANCH_KEYWORDS: &[&str] = &["else", "elsif", "when", "in", "rescue", "ensure"];

/// Keywords that, after a statement, make it conditional.
const MODIFIERS: &[&str] = &["if", "unless", "while", "until", "rescue"];

/// A parse failure: line and message.
struct Fail(usize, String);

type Parsed<T> = Result<T, Fail>;

/// Parses `src` into statements. Never fails: what cannot be read is
/// [`StmtKind::Unparsed`], in file order with the rest.
pub fn parse(src: &str) -> Vec<Stmt> {
    let mut p = Parser {
        toks: lex::tokens(src, 1),
        i: 0,
        depth: 0,
    };
    p.statements(None).0
}

struct Parser {
    toks: Vec<Token>,
    i: usize,
    /// Open brackets: newlines inside them do not end the statement.
    depth: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.toks[self.i.min(self.toks.len() - 1)]
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.i < self.toks.len() - 1 {
            self.i += 1;
        }
        t
    }

    fn skip_newlines(&mut self) {
        while self.peek().tok == Tok::Newline {
            self.next();
        }
    }

    /// Skips newlines only inside brackets.
    fn gap(&mut self) {
        if self.depth > 0 {
            self.skip_newlines();
        }
    }

    fn expect(&mut self, want: &Tok, context: &str) -> Parsed<()> {
        let t = self.next();
        if t.tok == *want {
            return Ok(());
        }
        Err(Fail(
            t.line,
            format!(
                "expected {} {context}, found {}",
                want.describe(),
                t.tok.describe()
            ),
        ))
    }

    /// Statements up to the end of the file, or up to `end` when inside a block (`opened`
    /// names its keyword). Returns them and whether `end` was found.
    fn statements(&mut self, opened: Option<&str>) -> (Vec<Stmt>, bool) {
        let mut out = Vec::new();
        loop {
            let t = self.peek().clone();
            match &t.tok {
                Tok::Newline | Tok::Semi => {
                    self.next();
                    continue;
                }
                Tok::Eof => return (out, false),
                Tok::Ident(k) if opened.is_some() && k == "end" => {
                    self.next();
                    return (out, true);
                }
                Tok::Ident(k) if opened.is_some() && BRANCH_KEYWORDS.contains(&k.as_str()) => {
                    self.skip_statement(0);
                    continue;
                }
                _ => {}
            }
            out.push(self.statement());
        }
    }

    fn statement(&mut self) -> Stmt {
        let t = self.peek().clone();
        let line = t.line;
        let head = match &t.tok {
            Tok::Ident(name) => Some(name.clone()),
            _ => None,
        };
        if let Some(keyword) = self.block_opener() {
            self.skip_statement(0);
            let (body, closed) = self.statements(Some(&keyword));
            let kind = if closed || keyword != "do" {
                StmtKind::Block { keyword, body }
            } else {
                StmtKind::Unparsed(Problem {
                    line,
                    head,
                    kind: ProblemKind::Syntax("`do` without `end`".into()),
                })
            };
            return Stmt { line, kind };
        }
        let kind = match self.simple() {
            Ok(_) if matches!(self.peek().tok, Tok::Error(_)) => {
                let t = self.next();
                self.skip_statement(0);
                StmtKind::Unparsed(Problem {
                    line: t.line,
                    head,
                    kind: ProblemKind::Syntax(t.tok.describe()),
                })
            }
            Ok(kind) => match self.end_of_statement() {
                None => kind,
                Some((at, found)) => {
                    self.skip_statement(self.depth);
                    StmtKind::Unparsed(Problem {
                        line: at,
                        head,
                        kind: ProblemKind::Trailing {
                            after: Box::new(kind),
                            found,
                        },
                    })
                }
            },
            Err(Fail(at, message)) => {
                self.skip_statement(self.depth);
                StmtKind::Unparsed(Problem {
                    line: at,
                    head,
                    kind: ProblemKind::Syntax(message),
                })
            }
        };
        self.depth = 0;
        Stmt { line, kind }
    }

    /// The keyword if the statement at hand opens a block: it starts with one of
    /// [`BLOCK_KEYWORDS`] or has a `do` before its end.
    fn block_opener(&self) -> Option<String> {
        if let Tok::Ident(k) = &self.peek().tok
            && BLOCK_KEYWORDS.contains(&k.as_str())
        {
            return Some(k.clone());
        }
        let mut depth = 0isize;
        for t in &self.toks[self.i..] {
            match &t.tok {
                Tok::Newline | Tok::Semi if depth <= 0 => return None,
                Tok::Eof => return None,
                Tok::LBrace | Tok::LBracket | Tok::LParen => depth += 1,
                Tok::RBrace | Tok::RBracket | Tok::RParen => depth -= 1,
                Tok::Ident(k) if k == "do" => return Some("do".into()),
                _ => {}
            }
        }
        None
    }

    /// Skips to the end of the statement: the next newline or `;` outside brackets, counting
    /// `depth` brackets as already open.
    fn skip_statement(&mut self, depth: usize) {
        let mut depth = depth as isize;
        loop {
            match self.peek().tok {
                Tok::Eof => return,
                Tok::Newline | Tok::Semi if depth <= 0 => return,
                Tok::LBrace | Tok::LBracket | Tok::LParen => depth += 1,
                Tok::RBrace | Tok::RBracket | Tok::RParen => depth -= 1,
                _ => {}
            }
            self.next();
        }
    }

    /// `None` at the end of a statement, else what follows instead and its line.
    fn end_of_statement(&self) -> Option<(usize, Found)> {
        let t = self.peek();
        let found = match &t.tok {
            Tok::Newline | Tok::Semi | Tok::Eof => return None,
            Tok::Ident(k) if MODIFIERS.contains(&k.as_str()) => Found::Modifier(k.clone()),
            Tok::Op(o) => Found::Operator(o.clone()),
            other => Found::Token(other.describe()),
        };
        Some((t.line, found))
    }

    fn simple(&mut self) -> Parsed<StmtKind> {
        let t = self.peek().clone();
        let (Tok::Ident(name), false) = (&t.tok, ["true", "false", "nil"].contains(&ident(&t)))
        else {
            return self.expression_statement();
        };
        let start = self.i;
        self.next();
        let u = self.peek().clone();
        match u.tok {
            Tok::Assign => {
                self.next();
                self.skip_newlines();
                let value = self.expr()?;
                let target = Expr {
                    line: t.line,
                    kind: ExprKind::Var(name.clone()),
                };
                Ok(StmtKind::Assign { target, value })
            }
            Tok::LParen if !u.spaced => {
                let args = self.paren_args(name)?;
                Ok(StmtKind::Call {
                    name: name.clone(),
                    args,
                    parens: true,
                })
            }
            Tok::LBracket if !u.spaced => {
                self.i = start;
                self.expression_statement()
            }
            Tok::Dot | Tok::Scope | Tok::Plus | Tok::OrOr => {
                self.i = start;
                self.expression_statement()
            }
            ref tok if starts_value(tok) => {
                let mut args = vec![self.argument()?];
                while self.peek().tok == Tok::Comma {
                    self.next();
                    self.skip_newlines();
                    args.push(self.argument()?);
                }
                Ok(StmtKind::Call {
                    name: name.clone(),
                    args,
                    parens: false,
                })
            }
            _ => Ok(StmtKind::Call {
                name: name.clone(),
                args: Vec::new(),
                parens: false,
            }),
        }
    }

    fn expression_statement(&mut self) -> Parsed<StmtKind> {
        let target = self.expr()?;
        if self.peek().tok != Tok::Assign {
            return Ok(StmtKind::Expr(target));
        }
        self.next();
        self.skip_newlines();
        let value = self.expr()?;
        Ok(StmtKind::Assign { target, value })
    }

    /// `(args)` after a name; the `(` is next.
    fn paren_args(&mut self, name: &str) -> Parsed<Vec<Expr>> {
        self.next();
        self.depth += 1;
        let mut args = Vec::new();
        loop {
            self.skip_newlines();
            if self.peek().tok == Tok::RParen {
                break;
            }
            args.push(self.argument()?);
            self.skip_newlines();
            if self.peek().tok != Tok::Comma {
                break;
            }
            self.next();
        }
        self.skip_newlines();
        self.expect(&Tok::RParen, &format!("to close `{name}(`"))?;
        self.depth -= 1;
        Ok(args)
    }

    /// A call argument: a value, or a brace-less hash (`whitelist "a" => "b", ...`).
    fn argument(&mut self) -> Parsed<Expr> {
        if matches!(self.peek().tok, Tok::Label(_)) {
            return self.bare_hash(None);
        }
        let v = self.expr()?;
        self.gap();
        if self.peek().tok == Tok::Arrow {
            return self.bare_hash(Some(v));
        }
        Ok(v)
    }

    fn bare_hash(&mut self, first_key: Option<Expr>) -> Parsed<Expr> {
        let line = self.peek().line;
        let mut items = Vec::new();
        let mut first_key = first_key;
        loop {
            let item = match first_key.take() {
                Some(key) => {
                    self.expect(&Tok::Arrow, "after a hash key")?;
                    self.skip_newlines();
                    (key, self.expr()?)
                }
                None => self.hash_item()?,
            };
            items.push(item);
            self.gap();
            if self.peek().tok != Tok::Comma {
                break;
            }
            self.next();
            self.skip_newlines();
            if self.peek().tok == Tok::RParen {
                break;
            }
        }
        Ok(Expr {
            line,
            kind: ExprKind::Hash(items),
        })
    }

    fn hash_item(&mut self) -> Parsed<(Expr, Expr)> {
        let t = self.peek().clone();
        if let Tok::Label(name) = t.tok {
            self.next();
            self.skip_newlines();
            let key = Expr {
                line: t.line,
                kind: ExprKind::Sym(name),
            };
            return Ok((key, self.expr()?));
        }
        let key = self.expr()?;
        self.gap();
        self.expect(&Tok::Arrow, "after a hash key")?;
        self.skip_newlines();
        Ok((key, self.expr()?))
    }

    fn expr(&mut self) -> Parsed<Expr> {
        let mut left = self.sum()?;
        while self.peek().tok == Tok::OrOr {
            self.next();
            self.skip_newlines();
            let right = self.sum()?;
            left = Expr {
                line: left.line,
                kind: ExprKind::Or(Box::new(left), Box::new(right)),
            };
        }
        Ok(left)
    }

    fn sum(&mut self) -> Parsed<Expr> {
        let mut left = self.postfix()?;
        while self.peek().tok == Tok::Plus {
            self.next();
            self.skip_newlines();
            let right = self.postfix()?;
            left = Expr {
                line: left.line,
                kind: ExprKind::Add(Box::new(left), Box::new(right)),
            };
        }
        Ok(left)
    }

    fn postfix(&mut self) -> Parsed<Expr> {
        let mut e = self.primary()?;
        loop {
            let t = self.peek().clone();
            let kind = match t.tok {
                Tok::Dot => {
                    self.next();
                    let m = self.next();
                    let method = match m.tok {
                        Tok::Ident(m) | Tok::Const(m) => m,
                        other => {
                            return Err(Fail(
                                m.line,
                                format!(
                                    "expected a method name after `.`, found {}",
                                    other.describe()
                                ),
                            ));
                        }
                    };
                    let u = self.peek().clone();
                    let args = if u.tok == Tok::LParen && !u.spaced {
                        self.paren_args(&format!("{}.{method}", e.name()))?
                    } else {
                        Vec::new()
                    };
                    ExprKind::Call {
                        recv: Some(Box::new(e)),
                        method,
                        args,
                    }
                }
                Tok::LBracket if !t.spaced => {
                    self.next();
                    self.depth += 1;
                    self.skip_newlines();
                    let key = self.expr()?;
                    self.skip_newlines();
                    self.expect(&Tok::RBracket, "to close `[`")?;
                    self.depth -= 1;
                    ExprKind::Index(Box::new(e), Box::new(key))
                }
                Tok::Scope => {
                    self.next();
                    let c = self.next();
                    match (e.kind, c.tok) {
                        (ExprKind::Const(path), Tok::Const(name)) => {
                            ExprKind::Const(format!("{path}::{name}"))
                        }
                        (_, other) => {
                            return Err(Fail(
                                c.line,
                                format!(
                                    "`::` must be followed by a constant, found {}",
                                    other.describe()
                                ),
                            ));
                        }
                    }
                }
                _ => return Ok(e),
            };
            e = Expr { line: t.line, kind };
        }
    }

    fn primary(&mut self) -> Parsed<Expr> {
        let t = self.next();
        let kind = match t.tok {
            Tok::Str(s) => ExprKind::Str(s),
            Tok::Interp(parts) => ExprKind::Interp(interpolation(parts)?),
            Tok::Int(i) => ExprKind::Int(i),
            Tok::Float(f) => ExprKind::Float(f),
            Tok::Sym(s) => ExprKind::Sym(s),
            Tok::Regex { source, flags } => ExprKind::Regex { source, flags },
            Tok::Words(w) => ExprKind::Array(
                w.into_iter()
                    .map(|s| Expr {
                        line: t.line,
                        kind: ExprKind::Str(s),
                    })
                    .collect(),
            ),
            Tok::Ident(w) if w == "true" => ExprKind::Bool(true),
            Tok::Ident(w) if w == "false" => ExprKind::Bool(false),
            Tok::Ident(w) if w == "nil" => ExprKind::Nil,
            Tok::Ident(w) => {
                let u = self.peek().clone();
                if u.tok == Tok::LParen && !u.spaced {
                    let args = self.paren_args(&w)?;
                    ExprKind::Call {
                        recv: None,
                        method: w,
                        args,
                    }
                } else {
                    ExprKind::Var(w)
                }
            }
            Tok::Const(c) => ExprKind::Const(c),
            Tok::LBrace => ExprKind::Hash(self.delimited(&Tok::RBrace, t.line, |p| p.hash_item())?),
            Tok::LBracket => ExprKind::Array(self.delimited(&Tok::RBracket, t.line, |p| p.expr())?),
            Tok::LParen => {
                self.depth += 1;
                self.skip_newlines();
                let e = self.expr()?;
                self.skip_newlines();
                self.expect(&Tok::RParen, "to close `(`")?;
                self.depth -= 1;
                return Ok(e);
            }
            Tok::Error(message) => return Err(Fail(t.line, message)),
            other => {
                return Err(Fail(
                    t.line,
                    format!("expected a value, found {}", other.describe()),
                ));
            }
        };
        Ok(Expr { line: t.line, kind })
    }

    /// Comma-separated items up to `close` (trailing comma allowed, newlines anywhere).
    fn delimited<T>(
        &mut self,
        close: &Tok,
        open_line: usize,
        mut item: impl FnMut(&mut Self) -> Parsed<T>,
    ) -> Parsed<Vec<T>> {
        self.depth += 1;
        let mut items = Vec::new();
        loop {
            self.skip_newlines();
            if self.peek().tok == *close {
                self.next();
                break;
            }
            items.push(item(self)?);
            self.skip_newlines();
            let t = self.next();
            match t.tok {
                Tok::Comma => {}
                ref tok if tok == close => break,
                Tok::Error(message) => return Err(Fail(t.line, message)),
                other => {
                    let place = if *close == Tok::RBracket {
                        " in the array"
                    } else {
                        ""
                    };
                    return Err(Fail(
                        t.line,
                        format!(
                            "expected `,` or {}{place} (opened on line {open_line}), found {}",
                            close.describe(),
                            other.describe()
                        ),
                    ));
                }
            }
        }
        self.depth -= 1;
        Ok(items)
    }
}

fn ident(t: &Token) -> &str {
    match &t.tok {
        Tok::Ident(s) => s,
        _ => "",
    }
}

/// Whether `tok` can begin a command argument (`name value`).
fn starts_value(tok: &Tok) -> bool {
    matches!(
        tok,
        Tok::Ident(_)
            | Tok::Const(_)
            | Tok::Label(_)
            | Tok::Str(_)
            | Tok::Interp(_)
            | Tok::Sym(_)
            | Tok::Int(_)
            | Tok::Float(_)
            | Tok::Regex { .. }
            | Tok::Words(_)
            | Tok::LBrace
            | Tok::LBracket
            | Tok::LParen
            | Tok::Error(_)
    ) && !matches!(tok, Tok::Ident(k) if MODIFIERS.contains(&k.as_str()) || k == "do")
}

/// Parses the code of each `#{…}`.
fn interpolation(parts: Vec<RawPart>) -> Parsed<Vec<Part>> {
    parts
        .into_iter()
        .map(|part| match part {
            RawPart::Lit(s) => Ok(Part::Lit(s)),
            RawPart::Code(code, line) => {
                let mut p = Parser {
                    toks: lex::tokens(&code, line),
                    i: 0,
                    depth: 1,
                };
                p.skip_newlines();
                let e = p.expr()?;
                p.skip_newlines();
                let t = p.peek();
                if t.tok != Tok::Eof {
                    return Err(Fail(
                        t.line,
                        format!("unexpected {} inside `#{{...}}`", t.tok.describe()),
                    ));
                }
                Ok(Part::Code(e))
            }
        })
        .collect()
}
