//! The tree [`crate::parse`] returns: statements of expressions, each with its line, and the
//! literal [`Value`]s an expression reduces to when it has no code in it.

/// One statement of the file.
#[derive(Clone, Debug, PartialEq)]
pub struct Stmt {
    /// 1-based line the statement starts on.
    pub line: usize,
    /// What it is.
    pub kind: StmtKind,
}

/// The statement forms of Chef-style config files.
#[derive(Clone, Debug, PartialEq)]
pub enum StmtKind {
    /// `name value`, `name(value, …)` or a bare `name`: a Mixlib::Config setting (or a
    /// method call without a receiver, such as `require 'x'`).
    Call {
        /// The setting or method.
        name: String,
        /// The arguments; a brace-less hash (`whitelist 'a' => 'b'`) is one [`ExprKind::Hash`].
        args: Vec<Expr>,
        /// Written with parentheses.
        parens: bool,
    },
    /// `target = value`: a local variable or setting (`x = 1`), an index (`knife[:x] = 1`,
    /// `opscode_pushy_server['a']['b'] = 1`), an attribute (`A::B.c = 1`) or a constant.
    Assign {
        /// The left side.
        target: Expr,
        /// The right side.
        value: Expr,
    },
    /// Any other expression standing alone, e.g. `Chef::Config.from_file(…)`.
    Expr(Expr),
    /// `if … end`, `begin … end`, `def … end`, `… do … end`: the head is not kept (this
    /// reader never runs conditions), the body is.
    Block {
        /// `if`, `unless`, `case`, `def`, …, or `do`.
        keyword: String,
        /// The statements inside, including those of `else`/`elsif`/`when` branches.
        body: Vec<Stmt>,
    },
    /// A statement that could not be read; the reader skipped to its end.
    Unparsed(Problem),
}

/// Why a statement could not be read.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    /// Line of the problem (may be after the statement's first line).
    pub line: usize,
    /// The statement's leading identifier, if it starts with one (`node_name` in
    /// `node_name 'a' if x`), so a tool can tell a setting it needs from one it skips.
    pub head: Option<String>,
    /// What went wrong.
    pub kind: ProblemKind,
}

/// What went wrong in an [`StmtKind::Unparsed`] statement.
#[derive(Clone, Debug, PartialEq)]
pub enum ProblemKind {
    /// Text that is not Ruby this reader knows, and why.
    Syntax(String),
    /// A complete statement followed by something else on the same line.
    Trailing {
        /// The statement as far as it was read.
        after: Box<StmtKind>,
        /// What followed it.
        found: Found,
    },
}

/// What followed a complete statement.
#[derive(Clone, Debug, PartialEq)]
pub enum Found {
    /// A modifier keyword: `if`, `unless`, `while`, `until`, `rescue`.
    Modifier(String),
    /// An operator this reader does not evaluate: `*`, `==`, `?`, `-`, …
    Operator(String),
    /// Any other token, described (`number 5`, `` `,` ``).
    Token(String),
}

impl Found {
    /// How it reads in a message: `` `==` ``, `number 5`.
    pub fn describe(&self) -> String {
        match self {
            Found::Modifier(s) | Found::Operator(s) => format!("`{s}`"),
            Found::Token(d) => d.clone(),
        }
    }
}

/// An expression.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    /// 1-based line it starts on.
    pub line: usize,
    /// What it is.
    pub kind: ExprKind,
}

/// Expression forms.
#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// `nil`.
    Nil,
    /// `true`, `false`.
    Bool(bool),
    /// An integer in any of Ruby's notations.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string without interpolation, escapes decoded.
    Str(String),
    /// `"a#{b}c"`.
    Interp(Vec<Part>),
    /// `:name`, `:"name"`, or a `name:` hash key.
    Sym(String),
    /// `/source/flags` or `%r{source}flags`; `\/` is already `/`, other escapes are kept.
    Regex {
        /// The pattern.
        source: String,
        /// Ruby's flags (`i`, `m`, `x`, …).
        flags: String,
    },
    /// `[a, b]` or `%w[a b]`.
    Array(Vec<Expr>),
    /// `{k => v, l: w}`, entries in file order; each key carries its line.
    Hash(Vec<(Expr, Expr)>),
    /// A lower-case name alone: a local variable, a setting read back, `__FILE__`, `__dir__`.
    Var(String),
    /// `A` or `A::B::C`.
    Const(String),
    /// `receiver[key]`.
    Index(Box<Expr>, Box<Expr>),
    /// `receiver.method(args)` or `method(args)`.
    Call {
        /// `None` for a call without receiver (`foo(1)`).
        recv: Option<Box<Expr>>,
        /// The method.
        method: String,
        /// The arguments, if any.
        args: Vec<Expr>,
    },
    /// `a + b`.
    Add(Box<Expr>, Box<Expr>),
    /// `a || b`.
    Or(Box<Expr>, Box<Expr>),
}

/// A piece of an interpolated string.
#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    /// Literal text.
    Lit(String),
    /// The code of a `#{…}`.
    Code(Expr),
}

/// A literal value: what an expression without code means.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `nil`.
    Nil,
    /// `true`, `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A symbol.
    Sym(String),
    /// A constant such as `STDOUT`, by name.
    Const(String),
    /// A regexp.
    Regex {
        /// The pattern.
        source: String,
        /// Ruby's flags.
        flags: String,
    },
    /// An array.
    Array(Vec<Value>),
    /// A hash: entries in order, each with its key's line.
    Hash(Vec<(Value, Value, usize)>),
}

impl Value {
    /// The kind, for messages: "a string", "an integer".
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Str(_) => "a string",
            Value::Sym(_) => "a symbol",
            Value::Const(_) => "a constant",
            Value::Regex { .. } => "a regexp",
            Value::Array(_) => "an array",
            Value::Hash(_) => "a hash",
        }
    }

    /// The value as Ruby source where that is short, else its kind.
    pub fn show(&self) -> String {
        match self {
            Value::Str(s) => format!("{s:?}"),
            Value::Sym(s) => format!(":{s}"),
            Value::Int(i) => i.to_string(),
            Value::Const(c) => c.clone(),
            Value::Regex { source, flags } => format!("/{source}/{flags}"),
            other => other.kind().to_owned(),
        }
    }

    /// Ruby truthiness: everything but `nil` and `false`.
    pub fn truthy(&self) -> bool {
        !matches!(self, Value::Nil | Value::Bool(false))
    }
}

impl Expr {
    /// The literal value, or the first sub-expression (in source order) that is code: a
    /// variable, call, index, operator or interpolation.
    ///
    /// # Errors
    /// That sub-expression, for the caller to name in its own words.
    pub fn literal(&self) -> Result<Value, &Expr> {
        Ok(match &self.kind {
            ExprKind::Nil => Value::Nil,
            ExprKind::Bool(b) => Value::Bool(*b),
            ExprKind::Int(i) => Value::Int(*i),
            ExprKind::Float(f) => Value::Float(*f),
            ExprKind::Str(s) => Value::Str(s.clone()),
            ExprKind::Sym(s) => Value::Sym(s.clone()),
            ExprKind::Const(c) => Value::Const(c.clone()),
            ExprKind::Regex { source, flags } => Value::Regex {
                source: source.clone(),
                flags: flags.clone(),
            },
            ExprKind::Array(items) => {
                Value::Array(items.iter().map(Expr::literal).collect::<Result<_, _>>()?)
            }
            ExprKind::Hash(items) => Value::Hash(
                items
                    .iter()
                    .map(|(k, v)| Ok::<_, &Expr>((k.literal()?, v.literal()?, k.line)))
                    .collect::<Result<_, _>>()?,
            ),
            ExprKind::Interp(_)
            | ExprKind::Var(_)
            | ExprKind::Index(..)
            | ExprKind::Call { .. }
            | ExprKind::Add(..)
            | ExprKind::Or(..) => return Err(self),
        })
    }

    /// How the expression reads in a message: `` `name` ``, `string "x"`, `number 5`.
    pub fn describe(&self) -> String {
        match &self.kind {
            ExprKind::Nil => "`nil`".into(),
            ExprKind::Bool(b) => format!("`{b}`"),
            ExprKind::Int(i) => format!("number {i}"),
            ExprKind::Float(f) => format!("number {f}"),
            ExprKind::Str(s) => format!("string {s:?}"),
            ExprKind::Interp(_) => "an interpolated string".into(),
            ExprKind::Sym(s) => format!("symbol :{s}"),
            ExprKind::Regex { source, flags } => format!("`/{source}/{flags}`"),
            ExprKind::Array(_) => "an array".into(),
            ExprKind::Hash(_) => "a hash".into(),
            ExprKind::Var(v) => format!("`{v}`"),
            ExprKind::Const(c) => format!("`{c}`"),
            ExprKind::Index(recv, _) => format!("`{}[...]`", recv.name()),
            ExprKind::Call { .. } => format!("method call `{}`", self.name()),
            ExprKind::Add(..) => "operator `+`".into(),
            ExprKind::Or(..) => "operator `||`".into(),
        }
    }

    /// A short name for a variable, constant or call chain (`File.join`, `knife`), or `...`.
    pub fn name(&self) -> String {
        match &self.kind {
            ExprKind::Var(n) | ExprKind::Const(n) => n.clone(),
            ExprKind::Call {
                recv: Some(recv),
                method,
                ..
            } => format!("{}.{method}", recv.name()),
            ExprKind::Call { method, .. } => method.clone(),
            ExprKind::Index(recv, _) => format!("{}[...]", recv.name()),
            _ => "...".into(),
        }
    }
}
