//! One reader for the Ruby-form config files of the Chef world: `knife.rb`/`config.rb`,
//! `push-jobs-client.rb` and `opscode-push-jobs-server.rb`.
//!
//! The files are *not* run as Ruby. [`parse`] reads the assignment form they are written in
//! (`setting value`, `setting(value)`, `x = value`, `ns['a']['b'] = value`,
//! `Const.attr = value`, blocks kept as blocks) into a tree of [`Stmt`]s and [`Expr`]s,
//! each with its line. Each tool then walks that tree into its own settings:
//! - literal-only files use [`Expr::literal`] and name what is not a literal in their own
//!   words;
//! - `knife.rb`-style files evaluate paths and names with a [`Scope`] (`File.join`,
//!   `ENV['USER'] || "alice"`, `"#{current_dir}/#{node_name}.pem"`, …).
//!
//! A statement the parser cannot read is [`StmtKind::Unparsed`] and parsing goes on, so a
//! tool can refuse it (naming file, line and construct) or skip it with a warning, as the
//! original tool would have.
//!
//! Layout: `lex.rs` (tokens; `lex/literals.rs` strings, regexps, numbers), `parse.rs`
//! (statements and expressions), `tree.rs` (the tree and literal values), `eval.rs` (the
//! [`Scope`] evaluator).

#![warn(missing_docs)]

mod eval;
mod lex;
mod parse;
mod tree;

pub use eval::{Error as EvalError, Scope, resolve_path};
pub use parse::parse;
pub use tree::{Expr, ExprKind, Found, Part, Problem, ProblemKind, Stmt, StmtKind, Value};

#[cfg(test)]
mod tests;
