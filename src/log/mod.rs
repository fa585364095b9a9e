//! Logging on stderr, and the final line of a failure.
//!
//! Logging never takes the supervisor down, nor holds it up:
//! - The supervisor's thread only queues a line; a thread of its own writes them. A stderr that
//!   nobody reads (a full pipe, a stalled log reader, a terminal stopped with Ctrl-S) blocks that
//!   thread, never the one that keeps the lease and stops the child: a blocked write there
//!   would let the lease expire under a running child. Past [`QUEUE_LINES`] waiting lines, new
//!   ones are dropped and counted; once lines go through again, a WARN line says how many.
//! - What cannot be written (a closed stderr) is dropped; tracing-subscriber's own error
//!   reports (`eprintln!`, which panics on a closed stderr) are switched off. Nothing on
//!   leaderrun's paths uses `eprintln!` or `println!`.
//! - At exit, the queued lines get [`FLUSH_BOUND`] to be written, no more.

pub mod recurring;

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};
use tracing_subscriber::fmt::MakeWriter;

/// Lines waiting to be written, at most: a few minutes of the busiest logging leaderrun does.
const QUEUE_LINES: usize = 1024;
/// How long the lines still queued at exit (the final one included) may take to be written.
pub const FLUSH_BOUND: Duration = Duration::from_secs(1);
/// How long the writer waits before it tries again a stderr that would block (O_NONBLOCK).
const RETRY: Duration = Duration::from_millis(10);

/// The writer thread's queue, once started ([`start_writer`]); before, lines go straight out.
static QUEUE: OnceLock<Queue> = OnceLock::new();

/// Stderr for the logs: a line is queued for the writer (or written, before it starts).
#[derive(Debug, Clone, Copy, Default)]
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        write_stderr(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Stderr;

    fn make_writer(&'a self) -> Stderr {
        Stderr
    }
}

/// Write `buf` (whole lines) to stderr through the writer thread, or drop it when it cannot
/// be queued; straight to stderr before the thread starts.
pub fn write_stderr(buf: &[u8]) {
    match QUEUE.get() {
        Some(queue) => queue.push(buf),
        None => write_out(&mut std::io::stderr(), buf),
    }
}

/// Start the thread that writes the log lines. Call it once nothing is to be forked any more
/// (the guardian is forked from a process of one thread). Without a thread (a limit on
/// processes), lines go straight to stderr as before.
pub fn start_writer(format: LogFormat) {
    let (tx, rx) = sync_channel(QUEUE_LINES);
    let queue = Queue::new(tx, format);
    let pending = queue.pending.clone();
    let spawned = std::thread::Builder::new()
        .name("leaderrun-log".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            // Signals go to the supervisor's thread, as before this one existed.
            let _ = nix::sys::signal::SigSet::all().thread_block();
            drain(rx, &mut std::io::stderr(), &pending)
        });
    if spawned.is_ok() && QUEUE.set(queue).is_ok() {
        report_panics(format);
    }
}

/// Wait until the queued lines are written, for up to `bound`.
pub fn flush(bound: Duration) {
    if let Some(queue) = QUEUE.get() {
        queue.flush(bound);
    }
}

/// The queue's sending side, and what it counts.
struct Queue {
    lines: SyncSender<Vec<u8>>,
    format: LogFormat,
    /// Lines queued and not yet written.
    pending: Arc<AtomicUsize>,
    /// Lines dropped since the last note said so.
    dropped: AtomicU64,
}

impl Queue {
    fn new(lines: SyncSender<Vec<u8>>, format: LogFormat) -> Queue {
        Queue {
            lines,
            format,
            pending: Arc::default(),
            dropped: AtomicU64::new(0),
        }
    }

    /// Queue a line without waiting; when the queue is full, count it as dropped. The first
    /// line that fits after a drop is preceded by a note of how many went.
    fn push(&self, line: &[u8]) {
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            if !self.send(dropped_note(self.format, dropped, SystemTime::now())) {
                return self.drop_one();
            }
            self.dropped.fetch_sub(dropped, Ordering::Relaxed);
        }
        if !self.send(line.to_vec()) {
            self.drop_one();
        }
    }

    fn send(&self, line: Vec<u8>) -> bool {
        self.pending.fetch_add(1, Ordering::SeqCst);
        match self.lines.try_send(line) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                false
            }
        }
    }

    fn drop_one(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        crate::metrics::log_line_dropped();
    }

    fn flush(&self, bound: Duration) {
        let until = Instant::now() + bound;
        while self.pending.load(Ordering::SeqCst) > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The writer thread: each line as it comes, for as long as the process lives.
fn drain(lines: Receiver<Vec<u8>>, out: &mut impl Write, pending: &AtomicUsize) {
    for line in lines {
        write_out(out, &line);
        pending.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Write all of `buf`; a stderr set non-blocking by someone else is waited for, anything else
/// that fails drops the line.
fn write_out(out: &mut impl Write, mut buf: &[u8]) {
    while !buf.is_empty() {
        match out.write(buf) {
            Ok(0) => return,
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(RETRY),
            Err(_) => return,
        }
    }
}

/// The line that says `n` lines were dropped.
fn dropped_note(format: LogFormat, n: u64, at: SystemTime) -> Vec<u8> {
    let message = "log lines dropped: stderr was not being read";
    line(format, "WARN", message, Some(("dropped", n)), at)
}

/// A line made by hand (not through tracing), as tracing writes its own: text or JSON.
fn line(
    format: LogFormat,
    level: &str,
    message: &str,
    field: Option<(&str, u64)>,
    at: SystemTime,
) -> Vec<u8> {
    let at = humantime::format_rfc3339_micros(at);
    match format {
        LogFormat::Text => {
            let field = field.map(|(k, v)| format!(" {k}={v}")).unwrap_or_default();
            let message = escape_controls(message);
            format!("{at} {level:>5} {message}{field}\n").into_bytes()
        }
        LogFormat::Json => {
            let mut fields = serde_json::json!({ "message": message });
            if let Some((k, v)) = field {
                fields[k] = v.into();
            }
            let line = serde_json::json!({
                "timestamp": at.to_string(),
                "level": level,
                "fields": fields,
            });
            format!("{line}\n").into_bytes()
        }
    }
}

/// A panic is reported through the queue, for up to a tenth of a second: the default report
/// writes to stderr itself and would block on a stderr nobody reads, and the abort that
/// follows (which the guardian acts on) must not wait for a log reader.
fn report_panics(format: LogFormat) {
    std::panic::set_hook(Box::new(move |info| {
        let message = format!("panicked: {info}");
        write_stderr(&line(format, "ERROR", &message, None, SystemTime::now()));
        flush(Duration::from_millis(100));
    }));
}

/// Set up the process's logging. A second call changes nothing.
pub fn init(format: LogFormat, level: tracing::Level) {
    use tracing_subscriber::layer::SubscriberExt;
    let builder = tracing_subscriber::fmt()
        .with_writer(Stderr)
        .with_max_level(level)
        .with_target(false)
        .log_internal_errors(false);
    let filter = targets(level);
    let _ = match format {
        LogFormat::Text => {
            let ansi = std::io::stderr().is_terminal();
            tracing::subscriber::set_global_default(builder.with_ansi(ansi).finish().with(filter))
        }
        LogFormat::Json => {
            tracing::subscriber::set_global_default(builder.json().finish().with(filter))
        }
    };
}

/// Which events are logged at `level`: leaderrun's own at `level`; the libraries' (the etcd
/// client, gRPC, HTTP/2) at `info` at most, unless `level` is `trace`. Their debug lines are
/// one per HTTP/2 frame: every keepalive, every request would wake the log's thread several
/// times, on the very paths `--log-level debug` is meant to show.
fn targets(level: tracing::Level) -> tracing_subscriber::filter::Targets {
    let libraries = match level {
        tracing::Level::TRACE => tracing::Level::TRACE,
        other => other.min(tracing::Level::INFO),
    };
    tracing_subscriber::filter::Targets::new()
        .with_target(env!("CARGO_CRATE_NAME"), level)
        .with_default(libraries)
}

/// The last line leaderrun writes before it exits with `code` because of `message`: text as
/// `leaderrun: MESSAGE`, or in JSON the same object as every other log line, with `exit_code`
/// among its fields. Works whether logging is set up or not.
pub fn final_line(format: LogFormat, message: &str, code: u8) {
    match format {
        LogFormat::Text => {
            write_stderr(format!("leaderrun: {}\n", escape_controls(message)).as_bytes())
        }
        LogFormat::Json => {
            let subscriber = tracing_subscriber::fmt()
                .with_writer(Stderr)
                .with_target(false)
                .log_internal_errors(false)
                .json()
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                tracing::error!(exit_code = code, "{message}");
            });
        }
    }
}

/// `s` with control characters (and the backslash) escaped as Rust writes them (`\n`,
/// `\u{1b}`, `\\`), so that text from elsewhere can neither forge a line nor a terminal
/// sequence. Unchanged, and not copied, when there is nothing to escape.
/// A value the user gave, as an error line quotes it: control characters escaped, and cut
/// after [`SHOWN_CHARS`] characters with its length in bytes, so that a huge value (a file read
/// as a flag's value) still makes a line one can read.
pub fn shown_value(s: &str) -> String {
    match s.char_indices().nth(SHOWN_CHARS) {
        None => escape_controls(s).into_owned(),
        Some((cut, _)) => format!("{}... ({} bytes)", escape_controls(&s[..cut]), s.len()),
    }
}

/// How much of a value an error line quotes.
const SHOWN_CHARS: usize = 64;

pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() || c == '\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() || c == '\\' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A queue of `n` lines with its receiving end (no writer thread: the test reads).
    fn queue(n: usize, format: LogFormat) -> (Queue, Receiver<Vec<u8>>) {
        let (tx, rx) = sync_channel(n);
        (Queue::new(tx, format), rx)
    }

    fn text(line: Vec<u8>) -> String {
        String::from_utf8(line).unwrap()
    }

    #[test]
    fn a_full_queue_drops_lines_and_the_next_line_that_fits_says_how_many() {
        let (q, rx) = queue(2, LogFormat::Text);
        for l in ["a\n", "b\n", "c\n", "d\n"] {
            q.push(l.as_bytes());
        }
        assert_eq!(q.pending.load(Ordering::SeqCst), 2);
        assert_eq!(text(rx.recv().unwrap()), "a\n");
        // One slot: the note of c and d takes it, and e is counted in turn.
        q.push(b"e\n");
        assert_eq!(text(rx.recv().unwrap()), "b\n");
        let note = text(rx.recv().unwrap());
        let said = "  WARN log lines dropped: stderr was not being read dropped=";
        assert!(note.ends_with(&format!("{said}2\n")), "{note}");
        q.push(b"f\n");
        let note = text(rx.recv().unwrap());
        assert!(note.ends_with(&format!("{said}1\n")), "{note}");
        assert_eq!(text(rx.recv().unwrap()), "f\n");
        assert_eq!(q.dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_writer_counts_down_what_it_wrote_and_flush_returns_then() {
        let (q, rx) = queue(4, LogFormat::Text);
        q.push(b"one\n");
        q.push(b"two\n");
        let pending = q.pending.clone();
        let writer = std::thread::spawn(move || {
            let mut out = Vec::new();
            drain(rx, &mut out, &pending);
            out
        });
        let started = Instant::now();
        q.flush(Duration::from_secs(10));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(q.pending.load(Ordering::SeqCst), 0);
        drop(q);
        assert_eq!(writer.join().unwrap(), b"one\ntwo\n");
    }

    #[test]
    fn flush_gives_up_after_its_bound() {
        let (q, _rx) = queue(4, LogFormat::Text);
        q.push(b"never written\n");
        let started = Instant::now();
        q.flush(Duration::from_millis(50));
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_line_made_by_hand_reads_as_tracings_own() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_micros(1_500_000);
        let t = text(line(LogFormat::Text, "ERROR", "panicked: a\nb", None, at));
        assert_eq!(t, "1970-01-01T00:00:01.500000Z ERROR panicked: a\\nb\n");
        let j = text(dropped_note(LogFormat::Json, 7, at));
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["timestamp"], "1970-01-01T00:00:01.500000Z");
        assert_eq!(v["fields"]["dropped"], 7);
        assert_eq!(
            v["fields"]["message"],
            "log lines dropped: stderr was not being read"
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        assert!(matches!(escape_controls("web-1:42"), Cow::Borrowed(_)));
        assert_eq!(escape_controls("a\nb\u{1b}[2J\\"), "a\\nb\\u{1b}[2J\\\\");
        assert_eq!(escape_controls("é\t"), "é\\t");
        assert_eq!(shown_value("web\n"), "web\\n");
        let long = "é".repeat(5000);
        assert_eq!(
            shown_value(&long),
            format!("{}... (10000 bytes)", "é".repeat(SHOWN_CHARS))
        );
    }
}
