//! A job's output as it is kept and sent: the tail of each stream within a byte budget,
//! measured as the text will take room in the JSON message (escaped), so the newest
//! output that fits is sent instead of none.

/// The tail of one output stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Captured {
    /// The output as UTF-8 (each invalid sequence as U+FFFD, everything else as written);
    /// empty when the command wrote nothing.
    pub text: String,
    /// Output was dropped from the front to fit the budget.
    pub truncated: bool,
}

/// The last `cap` bytes of a stream plus how many were written in all. Memory stays
/// below 2 × `cap` (the front is dropped in batches).
#[derive(Debug)]
pub(super) struct Tail {
    buf: Vec<u8>,
    total: usize,
    cap: usize,
}

impl Tail {
    pub(super) fn new(cap: usize) -> Self {
        Tail {
            buf: Vec::new(),
            total: 0,
            cap,
        }
    }

    pub(super) fn push(&mut self, chunk: &[u8]) {
        self.total += chunk.len();
        if chunk.len() >= self.cap {
            self.buf.clear();
            self.buf.extend_from_slice(&chunk[chunk.len() - self.cap..]);
            return;
        }
        self.buf.extend_from_slice(chunk);
        if self.buf.len() > 2 * self.cap {
            self.buf.drain(..self.buf.len() - self.cap);
        }
    }

    fn kept(&self) -> &[u8] {
        &self.buf[self.buf.len().saturating_sub(self.cap)..]
    }
}

/// Splits `max` bytes between two streams of `a` and `b` bytes: everything if it fits;
/// else a stream under half keeps all of it and the other gets the rest; else half each.
fn split_budget(a: usize, b: usize, max: usize) -> (usize, usize) {
    let half = max / 2;
    if a + b <= max {
        (a, b)
    } else if a <= half {
        (a, max - a)
    } else if b <= half {
        (max - b, b)
    } else {
        (half, max - half)
    }
}

pub(super) fn finish_capture(out: &Tail, err: &Tail, max: usize) -> (Captured, Captured) {
    fit_output(tail_text(out), tail_text(err), max)
}

/// The bytes a character takes inside a JSON string as serde_json writes it: `"` and `\`
/// and the short escapes take 2, other control characters `\u00XX` 6, the rest their
/// UTF-8 length (non-ASCII is not escaped).
pub(super) fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if c < ' ' => 6,
        c => c.len_utf8(),
    }
}

/// The JSON-escaped size of `s` (without the quotes).
pub fn escaped_size(s: &str) -> usize {
    s.chars().map(escaped_len).sum()
}

/// Fits two captured streams into `budget` bytes *as they will be in the message*: their
/// JSON-escaped sizes together. Each stream keeps its newest characters; the budget is
/// split as `split_budget` says (a newline costs two bytes escaped, so measuring raw bytes
/// would overflow the message and lose everything). A stream cut here is `truncated`.
pub fn fit_output(out: Captured, err: Captured, budget: usize) -> (Captured, Captured) {
    let (a, b) = split_budget(escaped_size(&out.text), escaped_size(&err.text), budget);
    (keep_newest(out, a), keep_newest(err, b))
}

/// The longest suffix of `c.text` whose escaped size is at most `keep`.
fn keep_newest(mut c: Captured, keep: usize) -> Captured {
    let mut size = 0;
    let mut start = c.text.len();
    for (i, ch) in c.text.char_indices().rev() {
        size += escaped_len(ch);
        if size > keep {
            break;
        }
        start = i;
    }
    if start > 0 {
        c.text.drain(..start);
        c.truncated = true;
    }
    c
}

/// The kept bytes of `tail` as text. Valid UTF-8 passes through unchanged (control
/// characters and NUL included; JSON escapes them); each invalid sequence becomes U+FFFD,
/// the only loss, since the wire carries JSON strings. When the front was cut, a
/// character split by the cut is dropped whole.
fn tail_text(tail: &Tail) -> Captured {
    let mut bytes = tail.kept();
    let cut = bytes.len() < tail.total;
    if cut {
        let mut skipped = 0;
        while skipped < 3 && bytes.first().is_some_and(|b| b & 0xC0 == 0x80) {
            bytes = &bytes[1..];
            skipped += 1;
        }
    }
    Captured {
        text: String::from_utf8_lossy(bytes).into_owned(),
        truncated: cut,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_split_rules() {
        assert_eq!(split_budget(10, 20, 100), (10, 20));
        assert_eq!(split_budget(500, 500, 100), (50, 50));
        assert_eq!(split_budget(500, 500, 101), (50, 51));
        assert_eq!(split_budget(10, 500, 100), (10, 90));
        assert_eq!(split_budget(500, 30, 100), (70, 30));
        assert_eq!(split_budget(0, 500, 100), (0, 100));
    }

    #[test]
    fn lossy_text_stays_within_budget() {
        let mut tail = Tail::new(4);
        tail.push(&[0xff, 0xfe, 0xfd, 0xfc, 0xfb]);
        let (c, _) = finish_capture(&tail, &Tail::new(4), 4);
        assert!(c.truncated);
        assert_eq!(c.text, "\u{FFFD}");
    }

    #[test]
    fn invalid_bytes_at_the_start_are_kept_unless_the_front_was_cut() {
        let mut tail = Tail::new(100);
        tail.push(b"\x80abc");
        assert_eq!(tail_text(&tail).text, "\u{FFFD}abc");
        let mut cut = Tail::new(3);
        cut.push("xé".as_bytes());
        cut.push(b"ab");
        // "xé" + "ab" keeps the last 3 bytes: half of "é", then "ab".
        assert_eq!(
            tail_text(&cut),
            Captured {
                text: "ab".into(),
                truncated: true
            }
        );
    }

    #[test]
    fn escaped_sizes_match_serde_json() {
        let chars = (0u8..0x80)
            .map(char::from)
            .chain(['é', '\u{7f}', '\u{FFFD}', '\u{2028}', '😀']);
        for c in chars {
            let json = serde_json::to_string(&c.to_string()).unwrap();
            assert_eq!(escaped_len(c), json.len() - 2, "{c:?}");
        }
    }

    #[test]
    fn fixes_output_is_fitted_after_escaping() {
        // `seq 200000`: fitting raw bytes overflowed the message once newlines were
        // escaped, and then nothing at all was sent.
        let text: String = (1..=200_000).map(|i| format!("{i}\n")).collect();
        let out = Captured {
            text,
            truncated: false,
        };
        let (out, err) = fit_output(out, Captured::default(), 60_000);
        assert!(out.truncated);
        assert!(out.text.ends_with("\n199999\n200000\n"));
        assert!(out.text.starts_with(|c: char| c.is_ascii_digit()));
        let size = escaped_size(&out.text);
        assert!((59_993..=60_000).contains(&size), "{size}");
        let body = serde_json::to_string(&out.text).unwrap();
        assert_eq!(body.len(), size + 2);
        assert_eq!(err, Captured::default());
    }

    #[test]
    fn tail_keeps_the_last_bytes() {
        let mut tail = Tail::new(3);
        for chunk in [&b"ab"[..], b"cd", b"e", b"fghij", b"k"] {
            tail.push(chunk);
        }
        assert_eq!((tail.kept(), tail.total), (&b"ijk"[..], 11));
    }
}
