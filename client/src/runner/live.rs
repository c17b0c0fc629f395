//! Live output (issue 15 §2): a running job's stdout and stderr cut into bounded chunks
//! at a bounded rate, for the `output` messages a server asks for with
//! `"live_output": true` on `run`. The final result still carries the captured tail
//! (`runner/output.rs`); live output is best effort on top of it, so every bound here drops
//! text (and counts it in `dropped`) rather than wait.
//!
//! [`Chunker`] is pure (the caller passes `now`); the runner's supervise loop feeds it
//! what the pipes deliver and polls it on a ticker (see `Running::with_live`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::output::escaped_len;
#[cfg(test)]
use super::output::escaped_size;

/// At most one `output` message per job this often (≤ 4 a second): the command channel
/// also carries heartbeats and results, and the server relays every message.
pub const INTERVAL: Duration = Duration::from_millis(250);
/// Text per stream in one message, measured JSON-escaped (so also a bound on the UTF-8
/// bytes): two streams plus the envelope stay far below the default 63 000-byte body.
pub const CHUNK: usize = 8 * 1024;
/// Raw bytes kept per stream between messages; past it the oldest are dropped (counted),
/// so a command printing faster than 4 × [`CHUNK`] a second costs bounded memory.
pub const PENDING: usize = 64 * 1024;

/// One `output` message's content: the text of each stream since the previous one
/// (`None` when that stream wrote nothing) and the bytes not sent since.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveChunk {
    /// New stdout text.
    pub stdout: Option<String>,
    /// New stderr text.
    pub stderr: Option<String>,
    /// Bytes of output not sent since the previous message (bounds or a full queue).
    pub dropped: u64,
}

impl LiveChunk {
    /// What is lost when this chunk cannot be sent: its text and what it reported as
    /// dropped, so the next chunk reports both.
    pub fn lost_bytes(&self) -> u64 {
        let text = |s: &Option<String>| s.as_ref().map_or(0, String::len) as u64;
        text(&self.stdout) + text(&self.stderr) + self.dropped
    }
}

/// Which pipe bytes came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// stdout.
    Out,
    /// stderr.
    Err,
}

/// Where the runner hands chunks: a send that never waits, `false` when the chunk could
/// not be queued (then it counts as dropped).
pub type LiveSink = Box<dyn FnMut(LiveChunk) -> bool + Send>;

/// What a running job streams to, given by the agent.
pub struct Live {
    /// Queues a chunk for the agent.
    pub sink: LiveSink,
    /// Bytes lost after the sink took a chunk (no connection, the channel refused it);
    /// the agent adds to it, the runner moves it into the next chunk's `dropped`.
    pub lost: Arc<AtomicU64>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("lost", &self.lost.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Live {
    /// One tick of the runner's loop: takes what the agent reports lost into the count,
    /// then hands the chunk due at `now` (the last one when `eof`) to the sink, counting
    /// it lost when the sink refuses.
    pub fn feed(&mut self, chunker: &mut Chunker, now: Instant, eof: bool) {
        chunker.lost(self.lost.swap(0, Ordering::Relaxed));
        let chunk = if eof {
            chunker.finish(now)
        } else {
            chunker.poll(now)
        };
        if let Some(chunk) = chunk {
            let size = chunk.lost_bytes();
            if !(self.sink)(chunk) {
                chunker.lost(size);
            }
        }
    }
}

/// The bounds; tests shrink them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Least time between two chunks.
    pub interval: Duration,
    /// Largest text per stream per chunk, JSON-escaped.
    pub chunk: usize,
    /// Largest raw backlog per stream.
    pub pending: usize,
}

impl Bounds {
    /// The agent's bounds, with the chunk shrunk so two of them fit a quarter of a small
    /// `max_body` each (a server may configure a body limit below the default).
    pub fn for_body(max_body: usize) -> Bounds {
        Bounds {
            interval: INTERVAL,
            // Never below the widest character (`\u00XX`), or a chunk could hold none.
            chunk: CHUNK.min(max_body / 4).max(16),
            pending: PENDING,
        }
    }
}

/// Cuts a job's output into chunks (pure: the caller passes `now`).
#[derive(Clone, Debug)]
pub struct Chunker {
    bounds: Bounds,
    out: VecDeque<u8>,
    err: VecDeque<u8>,
    dropped: u64,
    /// When the next chunk may go; `None` before the first.
    next_at: Option<Instant>,
}

impl Chunker {
    /// An empty chunker.
    pub fn new(bounds: Bounds) -> Chunker {
        Chunker {
            bounds,
            out: VecDeque::new(),
            err: VecDeque::new(),
            dropped: 0,
            next_at: None,
        }
    }

    /// Bytes read from a pipe. Past [`Bounds::pending`], the oldest go (counted), and so
    /// does the rest of a character the cut split.
    pub fn push(&mut self, stream: Stream, bytes: &[u8]) {
        let cap = self.bounds.pending;
        let buf = match stream {
            Stream::Out => &mut self.out,
            Stream::Err => &mut self.err,
        };
        buf.extend(bytes);
        if buf.len() > cap {
            let mut cut = buf.len() - cap;
            while buf.get(cut).is_some_and(|b| is_continuation(*b)) {
                cut += 1;
            }
            buf.drain(..cut);
            self.dropped += cut as u64;
        }
    }

    /// Bytes that never reached the server (a chunk the sink or the channel refused).
    pub fn lost(&mut self, bytes: u64) {
        self.dropped += bytes;
    }

    /// The next chunk, if one may go at `now` and there is something to say. A stream
    /// longer than [`Bounds::chunk`] is cut after its last newline that fits (or at the
    /// bound when no newline does); the rest waits. A character still incomplete at the
    /// end waits for its last bytes.
    pub fn poll(&mut self, now: Instant) -> Option<LiveChunk> {
        self.take(now, false)
    }

    /// The last chunk when the pipes have closed: as [`Chunker::poll`], but an
    /// incomplete character at the end is sent as U+FFFD and what does not fit is
    /// counted as dropped. It goes whatever the rate (one extra message per job at most),
    /// so a live view ends with the command's last lines.
    pub fn finish(&mut self, now: Instant) -> Option<LiveChunk> {
        self.take(now, true)
    }

    /// The earliest time [`Chunker::poll`] may return a chunk.
    pub fn next_at(&self) -> Option<Instant> {
        self.next_at
    }

    fn take(&mut self, now: Instant, eof: bool) -> Option<LiveChunk> {
        // The last chunk goes at once, whatever the rate: a live view then ends with the
        // command's last lines (one extra message per job at most).
        if !eof && self.next_at.is_some_and(|at| now < at) {
            return None;
        }
        let mut chunk = LiveChunk {
            stdout: cut(&mut self.out, self.bounds.chunk, eof),
            stderr: cut(&mut self.err, self.bounds.chunk, eof),
            dropped: self.dropped,
        };
        if eof {
            // No chunk follows the last: what did not fit in it counts as dropped, so
            // the chunks' text and counts add up to all the output.
            chunk.dropped += (self.out.len() + self.err.len()) as u64;
            self.out.clear();
            self.err.clear();
        }
        if chunk == LiveChunk::default() {
            return None;
        }
        self.dropped = 0;
        self.next_at = Some(now + self.bounds.interval);
        Some(chunk)
    }
}

fn is_continuation(b: u8) -> bool {
    b & 0xC0 == 0x80
}

/// Takes the front of `buf` as text within `limit` escaped bytes (see [`Chunker::poll`]).
fn cut(buf: &mut VecDeque<u8>, limit: usize, eof: bool) -> Option<String> {
    let bytes = buf.make_contiguous();
    let complete = if eof {
        bytes.len()
    } else {
        complete_prefix(bytes)
    };
    let (text, used) = text_within(&bytes[..complete], limit);
    buf.drain(..used);
    (!text.is_empty()).then_some(text)
}

/// The length of `bytes` without a trailing incomplete UTF-8 sequence (a character whose
/// last bytes have not been read yet). Invalid sequences count as complete: they become
/// U+FFFD whatever follows.
fn complete_prefix(bytes: &[u8]) -> usize {
    let tail_from = bytes.len().saturating_sub(3);
    match (tail_from..bytes.len())
        .rev()
        .find(|&i| !is_continuation(bytes[i]))
    {
        Some(i) => match std::str::from_utf8(&bytes[i..]) {
            Err(e) if e.valid_up_to() == 0 && e.error_len().is_none() => i,
            _ => bytes.len(),
        },
        None => bytes.len(),
    }
}

/// The longest text from the front of `bytes` (each invalid sequence as U+FFFD, as the
/// final capture reads it) whose escaped size is within `limit`, cut after its last
/// newline when not all of `bytes` fits; with the raw bytes it used.
fn text_within(bytes: &[u8], limit: usize) -> (String, usize) {
    let mut text = String::new();
    let mut size = 0;
    // (text length, raw length) after the last newline taken.
    let mut line_end = None;
    let mut raw = 0;
    for piece in bytes.utf8_chunks() {
        let valid = piece.valid().chars().map(|c| (c, c.len_utf8()));
        let invalid = (!piece.invalid().is_empty()).then(|| ('\u{FFFD}', piece.invalid().len()));
        for (c, len) in valid.chain(invalid) {
            size += escaped_len(c);
            if size > limit {
                return match line_end {
                    Some((t, r)) => {
                        text.truncate(t);
                        (text, r)
                    }
                    None => (text, raw),
                };
            }
            text.push(c);
            raw += len;
            if c == '\n' {
                line_end = Some((text.len(), raw));
            }
        }
    }
    (text, raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn small(chunk: usize, pending: usize) -> Chunker {
        Chunker::new(Bounds {
            interval: INTERVAL,
            chunk,
            pending,
        })
    }

    fn out(s: &str) -> Option<String> {
        Some(s.to_owned())
    }

    #[test]
    fn nothing_written_sends_nothing() {
        let mut c = Chunker::new(Bounds::for_body(63_000));
        assert_eq!(c.poll(Instant::now()), None);
        assert_eq!(c.finish(Instant::now()), None);
    }

    #[test]
    fn each_stream_is_sent_since_the_previous_chunk() {
        let t = Instant::now();
        let mut c = Chunker::new(Bounds::for_body(63_000));
        c.push(Stream::Out, b"1\n");
        c.push(Stream::Err, b"warn\n");
        c.push(Stream::Out, b"2\n");
        assert_eq!(
            c.poll(t),
            Some(LiveChunk {
                stdout: out("1\n2\n"),
                stderr: out("warn\n"),
                dropped: 0
            })
        );
        c.push(Stream::Out, b"3\n");
        assert_eq!(
            c.poll(t + INTERVAL),
            Some(LiveChunk {
                stdout: out("3\n"),
                stderr: None,
                dropped: 0
            })
        );
    }

    #[test]
    fn at_most_one_chunk_per_interval() {
        let t = Instant::now();
        let mut c = Chunker::new(Bounds::for_body(63_000));
        c.push(Stream::Out, b"a");
        assert!(c.poll(t).is_some());
        c.push(Stream::Out, b"b");
        assert_eq!(c.poll(t + INTERVAL - MS), None);
        let mut early = c.clone();
        assert_eq!(
            early.finish(t + INTERVAL - MS).unwrap().stdout,
            out("b"),
            "the last chunk does not wait for the rate"
        );
        assert_eq!(c.next_at(), Some(t + INTERVAL));
        assert_eq!(c.poll(t + INTERVAL).unwrap().stdout, out("b"));
        // An empty poll does not spend the slot: output after a quiet spell goes at once.
        assert_eq!(c.poll(t + INTERVAL * 3), None);
        c.push(Stream::Out, b"c");
        assert_eq!(c.poll(t + INTERVAL * 3 + MS).unwrap().stdout, out("c"));
    }

    #[test]
    fn long_text_is_cut_after_the_last_newline_that_fits() {
        let t = Instant::now();
        let mut c = small(10, 1000);
        c.push(Stream::Out, b"abc\ndef\nghijk\nl");
        assert_eq!(c.poll(t).unwrap().stdout, out("abc\ndef\n"));
        // "ghijk\n" is 7 bytes escaped; "l" waits for more.
        assert_eq!(c.poll(t + INTERVAL).unwrap().stdout, out("ghijk\nl"));
        // No newline within the bound: cut at the bound.
        c.push(Stream::Out, b"0123456789abc\n");
        assert_eq!(c.poll(t + INTERVAL * 2).unwrap().stdout, out("0123456789"));
        assert_eq!(c.poll(t + INTERVAL * 3).unwrap().stdout, out("abc\n"));
    }

    #[test]
    fn the_bound_is_measured_escaped() {
        let t = Instant::now();
        let mut c = small(8, 1000);
        // Each NUL is six bytes escaped: one fits, two do not.
        c.push(Stream::Out, b"\0\0\0");
        assert_eq!(c.poll(t).unwrap().stdout, out("\0"));
        let mut c = Chunker::new(Bounds::for_body(63_000));
        c.push(Stream::Out, "\"é\"\n".repeat(10_000).as_bytes());
        let text = c.poll(t).unwrap().stdout.unwrap();
        let json = serde_json::to_string(&text).unwrap();
        assert!(
            json.len() - 2 <= CHUNK && json.len() - 2 > CHUNK - 8,
            "{}",
            json.len()
        );
        assert!(text.ends_with("\"é\"\n"));
    }

    #[test]
    fn a_character_split_across_reads_waits_for_its_end() {
        let t = Instant::now();
        let mut c = Chunker::new(Bounds::for_body(63_000));
        let e = "é€😀".as_bytes();
        c.push(Stream::Out, &e[..1]);
        assert_eq!(c.poll(t), None, "half a character is not sent");
        c.push(Stream::Out, &e[1..4]);
        assert_eq!(c.poll(t).unwrap().stdout, out("é"));
        c.push(Stream::Out, &e[4..7]);
        assert_eq!(c.poll(t + INTERVAL).unwrap().stdout, out("€"));
        // Half of the emoji waits; at the end it is sent as U+FFFD.
        assert_eq!(c.poll(t + INTERVAL * 2), None);
        assert_eq!(c.finish(t + INTERVAL * 2).unwrap().stdout, out("\u{FFFD}"));
    }

    #[test]
    fn the_last_chunk_counts_what_it_cannot_hold() {
        let t = Instant::now();
        let mut c = small(10, 1000);
        c.push(Stream::Out, b"abc\ndef\nghijk\nl");
        c.push(Stream::Err, b"e");
        assert_eq!(
            c.finish(t),
            Some(LiveChunk {
                stdout: out("abc\ndef\n"),
                stderr: out("e"),
                dropped: 7
            })
        );
        assert_eq!(c.finish(t + INTERVAL), None);
    }

    #[test]
    fn invalid_bytes_become_replacement_characters_as_in_the_final_capture() {
        let mut c = Chunker::new(Bounds::for_body(63_000));
        let bytes = b"\x00\x01\xff\nline2\n\xe2\x82x";
        c.push(Stream::Out, bytes);
        assert_eq!(
            c.poll(Instant::now()).unwrap().stdout.unwrap(),
            String::from_utf8_lossy(bytes)
        );
    }

    #[test]
    fn a_backlog_past_the_bound_drops_the_oldest_and_counts_it() {
        let t = Instant::now();
        let mut c = small(100, 10);
        c.push(Stream::Out, b"0123456789abcdef");
        c.push(Stream::Err, b"xy");
        assert_eq!(
            c.poll(t),
            Some(LiveChunk {
                stdout: out("6789abcdef"),
                stderr: out("xy"),
                dropped: 6
            })
        );
        // A cut inside a character drops the whole character.
        c.push(Stream::Out, "€€€€".as_bytes()); // 12 bytes: the cut falls in the first
        let chunk = c.poll(t + INTERVAL).unwrap();
        assert_eq!((chunk.stdout, chunk.dropped), (out("€€€"), 3));
        assert_eq!(c.poll(t + INTERVAL * 2), None, "counted once");
    }

    #[test]
    fn lost_chunks_are_reported_by_the_next_one() {
        let t = Instant::now();
        let mut c = Chunker::new(Bounds::for_body(63_000));
        c.push(Stream::Out, b"abc");
        let lost = c.poll(t).unwrap();
        c.lost(lost.lost_bytes());
        // Only the count to say: a chunk goes anyway, so the server learns of the gap.
        assert_eq!(
            c.poll(t + INTERVAL),
            Some(LiveChunk {
                stdout: None,
                stderr: None,
                dropped: 3
            })
        );
    }

    #[test]
    fn a_small_body_limit_shrinks_the_chunk() {
        assert_eq!(Bounds::for_body(63_000).chunk, CHUNK);
        assert_eq!(Bounds::for_body(8_000).chunk, 2_000);
    }

    #[test]
    fn a_fast_writer_stays_within_the_bounds_and_everything_is_accounted() {
        // `seq 200000` read in 16 KiB pieces between polls every 10 ms.
        let all: Vec<u8> = (1..=200_000)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        let t = Instant::now();
        let mut c = Chunker::new(Bounds::for_body(63_000));
        let (mut chunks, mut sent, mut dropped) = (Vec::new(), 0, 0);
        for (i, piece) in all.chunks(16 * 1024).enumerate() {
            c.push(Stream::Out, piece);
            let now = t + MS * 10 * i as u32;
            if let Some(chunk) = c.poll(now) {
                chunks.push(now);
                let text = chunk.stdout.unwrap();
                assert!(escaped_size(&text) <= CHUNK);
                assert!(text.ends_with('\n'), "cut after a newline");
                sent += text.len() as u64;
                dropped += chunk.dropped;
            }
        }
        assert!(chunks.windows(2).all(|w| w[1] - w[0] >= INTERVAL));
        // Not yet sent: the backlog, and what was dropped since the last chunk.
        let left = c.out.len() as u64 + c.dropped;
        assert!(c.out.len() <= PENDING);
        assert_eq!(sent + dropped + left, all.len() as u64);
        assert!(dropped > 1_000_000, "{dropped}");
    }
}
