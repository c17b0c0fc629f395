//! How a job's progress is shown while `job start` waits: an indicatif bar (nodes voted /
//! running / done / failed) when stderr is a terminal, else knife-push's dot-plus-state
//! lines (`.Voting.`, `..Running (2/3 in progress) ...`, `...Complete.`), one dot per event
//! and the state when it changes (ops.md §7.2 step 6).

use std::io::Write as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::feed::Progress;

/// Where progress goes.
pub enum Display {
    /// A live bar on stderr.
    Bar(ProgressBar),
    /// Plain lines on stdout (text output) or stderr (JSON output keeps stdout clean).
    Lines {
        /// Write to stderr instead of stdout.
        stderr: bool,
        /// The state line last printed.
        last: String,
        /// Dots were printed since the last newline.
        open_line: bool,
    },
}

impl Display {
    /// A bar when `terminal`, else lines; `stderr` picks the lines' stream.
    pub fn new(total: usize, terminal: bool, stderr: bool) -> Display {
        if terminal {
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} finished · {msg}",
                )
                // The template is a literal checked by the tests.
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            Display::Bar(bar)
        } else {
            Display::Lines {
                stderr,
                last: "Initialized.".to_owned(),
                open_line: false,
            }
        }
    }

    /// Shows the progress after one event.
    pub fn update(&mut self, p: &Progress) {
        match self {
            Display::Bar(bar) => {
                let c = p.counts();
                bar.set_length(c.total as u64);
                bar.set_position((c.done + c.failed) as u64);
                bar.set_message(bar_message(p));
            }
            Display::Lines {
                stderr,
                last,
                open_line,
            } => {
                let line = p.state_line();
                let mut text = String::from(".");
                *open_line = true;
                if line != *last {
                    text.push_str(&line);
                    text.push('\n');
                    *last = line;
                    *open_line = false;
                }
                emit(*stderr, &text);
            }
        }
    }

    /// Prints one line of live output above the bar, or on its own line between the
    /// dots (stdout with text output; stderr when stdout holds a document).
    pub fn output(&mut self, line: &str) {
        match self {
            Display::Bar(bar) => bar.println(line),
            Display::Lines {
                stderr, open_line, ..
            } => {
                let lead = if *open_line { "\n" } else { "" };
                *open_line = false;
                emit(*stderr, &format!("{lead}{line}\n"));
            }
        }
    }

    /// Ends the display (clears the bar, closes a line of dots).
    pub fn finish(&mut self, p: &Progress) {
        match self {
            Display::Bar(bar) => {
                bar.finish_and_clear();
                eprintln!("{}", bar_message(p));
            }
            Display::Lines {
                stderr, open_line, ..
            } => {
                if *open_line {
                    emit(*stderr, "\n");
                    *open_line = false;
                }
            }
        }
    }
}

/// "voted 2/3 · running 1 · done 1 · failed 1".
pub fn bar_message(p: &Progress) -> String {
    let c = p.counts();
    let waiting = if c.waiting > 0 {
        format!(" · waiting {}", c.waiting)
    } else {
        String::new()
    };
    format!(
        "{} voted {}/{} · running {}{waiting} · done {} · failed {}",
        p.state_line(),
        c.voted,
        c.total,
        c.running,
        c.done,
        c.failed
    )
}

fn emit(stderr: bool, text: &str) {
    // Progress is best effort: a closed pipe must not stop the wait.
    if stderr {
        let mut e = std::io::stderr().lock();
        let _ = e.write_all(text.as_bytes());
        let _ = e.flush();
    } else {
        let mut o = std::io::stdout().lock();
        let _ = o.write_all(text.as_bytes());
        let _ = o.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_template_is_valid_and_the_message_counts_nodes() {
        let _ = Display::new(3, true, true);
        let p = Progress::new(3);
        assert_eq!(
            bar_message(&p),
            "Initialized. voted 0/3 · running 0 · done 0 · failed 0"
        );
    }
}
