//! How every binary words an error for people: each cause once.

use std::error::Error;

/// The texts of `e` and its sources, outermost first, leaving out any cause whose text an
/// earlier one already quotes: many errors put their cause in their own message and also
/// return it as `source()`, so printing the whole chain would say it twice ("… (os error
/// 2): No such file or directory (os error 2)").
pub fn causes(e: &(dyn Error + 'static)) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.iter().any(|shown| shown.contains(&text)) {
            out.push(text);
        }
        next = cause.source();
    }
    out
}

/// [`causes`] on one line, joined by `": "`.
pub fn one_line(e: &(dyn Error + 'static)) -> String {
    causes(e).join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading {path}: {source}")]
    struct Read {
        path: String,
        source: std::io::Error,
    }

    #[test]
    fn a_cause_the_message_quotes_is_said_once() {
        let e = Read {
            path: "/x".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(causes(&e), ["reading /x: entity not found"]);
        let wrapped = anyhow::Error::new(e).context("starting");
        assert_eq!(
            one_line(wrapped.as_ref()),
            "starting: reading /x: entity not found"
        );
    }
}
