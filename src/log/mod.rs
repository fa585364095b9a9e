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
//!
//! Every line has one shape per format, whether tracing or leaderrun makes it (the final line,
//! the note of dropped lines, a panic): text, with sd-daemon's `<N>` level prefix when stderr
//! is the journal ([`stderr_is_journal`]); or one flat JSON object per line (`timestamp`,
//! `level`, `message`, the run's election and candidate id, then the event's fields, numbers as
//! numbers).

pub mod recurring;

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

use serde_json::Value;
use std::borrow::Cow;
use std::ffi::OsStr;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};
use tracing::field::{Field, Visit};
use tracing_subscriber::fmt::format::{self, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

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
    line(
        format,
        tracing::Level::WARN,
        message,
        &[("dropped", n.into())],
        at,
    )
}

/// A line made by hand (not through tracing), in the shape of tracing's own: text, or the same
/// JSON object as every other line.
fn line(
    format: LogFormat,
    level: tracing::Level,
    message: &str,
    fields: &[(&str, Value)],
    at: SystemTime,
) -> Vec<u8> {
    match format {
        LogFormat::Text => {
            let mut line = String::new();
            if journal() {
                line.push_str(journal_prefix(level));
            } else {
                line.push_str(&format!("{} ", humantime::format_rfc3339_micros(at)));
            }
            line.push_str(&format!("{level:>5} {}", escape_controls(message)));
            for (k, v) in fields {
                match v {
                    Value::String(s) => line.push_str(&format!(" {k}={}", escape_controls(s))),
                    v => line.push_str(&format!(" {k}={v}")),
                }
            }
            line.push('\n');
            line.into_bytes()
        }
        LogFormat::Json => json_line(at, level, message, fields.iter().cloned()).into_bytes(),
    }
}

/// One JSON line: `timestamp`, `level` and `message` first, then the run's context (election,
/// candidate id), then `fields` (a field named like a context field replaces it). Flat: no
/// object nested under another.
fn json_line<'a>(
    at: SystemTime,
    level: tracing::Level,
    message: &str,
    fields: impl IntoIterator<Item = (&'a str, Value)>,
) -> String {
    let mut all: Vec<(&str, Value)> = CONTEXT
        .get()
        .map(|c| {
            c.iter()
                .map(|(k, v)| (*k, Value::from(v.as_str())))
                .collect()
        })
        .unwrap_or_default();
    for (k, v) in fields {
        match all.iter_mut().find(|(name, _)| *name == k) {
            Some(slot) => slot.1 = v,
            None => all.push((k, v)),
        }
    }
    let mut out = format!(
        "{{\"timestamp\":\"{}\",\"level\":\"{level}\",\"message\":{}",
        humantime::format_rfc3339_micros(at),
        Value::from(message)
    );
    for (k, v) in all {
        out.push_str(&format!(",{}:{v}", Value::from(k)));
    }
    out.push_str("}\n");
    out
}

/// A duration as a log field: whole milliseconds (a number in JSON), `NAME_ms=1500`.
pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The fields every JSON line carries: set once the configuration is known ([`set_context`]).
static CONTEXT: OnceLock<Vec<(&'static str, String)>> = OnceLock::new();

/// The run's election and candidate id, on every JSON line from now on.
pub fn set_context(election: &str, id: &str) {
    let _ = CONTEXT.set(vec![("election", election.into()), ("id", id.into())]);
}

/// Whether stderr is the journal: set once, when first asked.
static JOURNAL: OnceLock<bool> = OnceLock::new();

/// Whether the text lines get sd-daemon's level prefix: stderr is connected to the journal.
fn journal() -> bool {
    *JOURNAL.get_or_init(|| {
        let var = std::env::var_os("JOURNAL_STREAM");
        let stderr = nix::sys::stat::fstat(std::io::stderr()).ok();
        stderr_is_journal(var.as_deref(), stderr.map(|s| (s.st_dev, s.st_ino)))
    })
}

/// systemd.exec(5): `JOURNAL_STREAM` is `DEVICE:INODE` (decimal) of the stream systemd
/// connected stdout or stderr to; stderr goes to the journal when its own device and inode
/// (`stderr`, from fstat) are those. A stderr redirected elsewhere (a file, a pipe: the
/// variable was inherited) or closed is not the journal.
pub fn stderr_is_journal(var: Option<&OsStr>, stderr: Option<(u64, u64)>) -> bool {
    let parsed = var
        .and_then(OsStr::to_str)
        .and_then(|v| v.split_once(':'))
        .and_then(|(dev, ino)| Some((dev.parse::<u64>().ok()?, ino.parse::<u64>().ok()?)));
    matches!((parsed, stderr), (Some(a), Some(b)) if a == b)
}

/// sd-daemon(3)'s prefix of a line at `level`: `<3>` error, `<4>` warning, `<6>` info, `<7>`
/// debug (and trace).
pub fn journal_prefix(level: tracing::Level) -> &'static str {
    match level {
        tracing::Level::ERROR => "<3>",
        tracing::Level::WARN => "<4>",
        tracing::Level::INFO => "<6>",
        _ => "<7>",
    }
}

/// The text lines: tracing's own format, with the level prefix and without the timestamp
/// (journald stamps each line) when stderr is the journal.
struct TextLine {
    journal: bool,
    stamped: format::Format<format::Full>,
    bare: format::Format<format::Full, ()>,
}

impl TextLine {
    fn new(journal: bool, ansi: bool) -> TextLine {
        let stamped = format::Format::default().with_target(false).with_ansi(ansi);
        TextLine {
            journal,
            bare: stamped.clone().without_time(),
            stamped,
        }
    }
}

impl<S, N> FormatEvent<S, N> for TextLine
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        if self.journal {
            writer.write_str(journal_prefix(*event.metadata().level()))?;
            self.bare.format_event(ctx, writer, event)
        } else {
            self.stamped.format_event(ctx, writer, event)
        }
    }
}

/// The JSON lines ([`json_line`]): the event's fields recorded as they are, numbers as numbers.
struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = JsonFields::default();
        event.record(&mut fields);
        let message = fields.message.take().unwrap_or_default();
        let level = *event.metadata().level();
        let line = json_line(SystemTime::now(), level, &message, fields.fields);
        writer.write_str(&line)
    }
}

/// An event's fields as JSON values: integers, floats and booleans as numbers and booleans,
/// everything else (Display and Debug values) as strings.
#[derive(Default)]
struct JsonFields {
    message: Option<String>,
    fields: Vec<(&'static str, Value)>,
}

impl JsonFields {
    fn put(&mut self, field: &Field, value: Value) {
        match (field.name(), value) {
            ("message", Value::String(m)) => self.message = Some(m),
            (name, value) => self.fields.push((name, value)),
        }
    }
}

impl Visit for JsonFields {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.put(
            field,
            i64::try_from(value).map_or_else(|_| value.to_string().into(), Value::from),
        );
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        self.put(
            field,
            u64::try_from(value).map_or_else(|_| value.to_string().into(), Value::from),
        );
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

/// A panic is reported through the queue, for up to a tenth of a second: the default report
/// writes to stderr itself and would block on a stderr nobody reads, and the abort that
/// follows (which the guardian acts on) must not wait for a log reader.
fn report_panics(format: LogFormat) {
    std::panic::set_hook(Box::new(move |info| {
        let message = format!("panicked: {info}");
        let at = SystemTime::now();
        write_stderr(&line(format, tracing::Level::ERROR, &message, &[], at));
        flush(Duration::from_millis(100));
    }));
}

/// Set up the process's logging. A second call changes nothing.
pub fn init(format: LogFormat, level: tracing::Level) {
    use tracing_subscriber::layer::SubscriberExt;
    let builder = tracing_subscriber::fmt()
        .with_writer(Stderr)
        .with_max_level(level)
        .log_internal_errors(false);
    let filter = targets(level);
    let _ = match format {
        LogFormat::Text => {
            let journal = journal();
            // The journal is no terminal: no colours there.
            let ansi = !journal && std::io::stderr().is_terminal();
            let subscriber = builder
                .event_format(TextLine::new(journal, ansi))
                .finish()
                .with(filter);
            tracing::subscriber::set_global_default(subscriber)
        }
        LogFormat::Json => tracing::subscriber::set_global_default(
            builder.event_format(JsonLine).finish().with(filter),
        ),
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
    let line = match format {
        LogFormat::Text => {
            let prefix = if journal() { "<3>" } else { "" };
            format!("{prefix}leaderrun: {}\n", escape_controls(message)).into_bytes()
        }
        LogFormat::Json => {
            let fields = [("exit_code", Value::from(code))];
            line(
                format,
                tracing::Level::ERROR,
                message,
                &fields,
                SystemTime::now(),
            )
        }
    };
    write_stderr(&line);
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
        let error = tracing::Level::ERROR;
        let t = text(line(LogFormat::Text, error, "panicked: a\nb", &[], at));
        if !journal() {
            assert_eq!(t, "1970-01-01T00:00:01.500000Z ERROR panicked: a\\nb\n");
        }
        let j = text(dropped_note(LogFormat::Json, 7, at));
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["timestamp"], "1970-01-01T00:00:01.500000Z");
        assert_eq!(v["dropped"], 7);
        assert_eq!(v["message"], "log lines dropped: stderr was not being read");
        assert!(j.starts_with("{\"timestamp\":"), "{j}");
    }

    /// Lines that `log` makes through a subscriber of `format` (journal or not).
    fn through_tracing(format: LogFormat, journal: bool, log: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buffer(Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Buffer {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let out = Buffer::default();
        let writer = {
            let out = out.clone();
            move || out.clone()
        };
        let builder = tracing_subscriber::fmt()
            .with_writer(writer)
            .with_max_level(tracing::Level::DEBUG);
        match format {
            LogFormat::Text => {
                let s = builder.event_format(TextLine::new(journal, false)).finish();
                tracing::subscriber::with_default(s, log);
            }
            LogFormat::Json => {
                let s = builder.event_format(JsonLine).finish();
                tracing::subscriber::with_default(s, log);
            }
        }
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn json_lines_are_flat_with_numbers_as_numbers() {
        let out = through_tracing(LogFormat::Json, false, || {
            let lease = 0x2040a1fcu64;
            tracing::info!(
                pid = 42u32,
                revision = 7i64,
                pid1 = false,
                lease = %format!("{lease:x}"),
                took_us = ms(Duration::from_millis(1500)),
                "leading: {}",
                "child started"
            );
        });
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["message"], "leading: child started");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["pid"], 42);
        assert_eq!(v["revision"], 7);
        assert_eq!(v["pid1"], false);
        assert_eq!(v["lease"], "2040a1fc");
        assert_eq!(v["took_us"], 1500);
        assert!(v.get("fields").is_none() && v.get("span").is_none(), "{v}");
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        for k in ["timestamp", "level", "message", "pid"] {
            assert!(keys.contains(&k), "{k}: {v}");
        }
    }

    #[test]
    fn the_run_context_is_on_every_json_line_and_a_field_of_the_same_name_wins() {
        let at = SystemTime::UNIX_EPOCH;
        let context = vec![
            ("election", "web".to_string()),
            ("id", "db-1:42".to_string()),
        ];
        let _ = CONTEXT.set(context);
        // Whatever context the process set first (tests share it), it is on the line.
        let (election, id) = match CONTEXT.get().unwrap().as_slice() {
            [(_, e), (_, i)] => (e.clone(), i.clone()),
            other => panic!("{other:?}"),
        };
        let level = tracing::Level::ERROR;
        let line = json_line(at, level, "x", [("exit_code", Value::from(2))]);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            (v["election"].as_str(), v["id"].as_str()),
            (Some(&*election), Some(&*id))
        );
        assert_eq!(v["exit_code"], 2);
        let line = json_line(at, level, "x", [("election", Value::from("other"))]);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["election"], "other");
        assert_eq!(line.matches("\"election\"").count(), 1, "{line}");
    }

    #[test]
    fn the_journal_is_stderr_only_when_its_device_and_inode_are_stderrs() {
        let var = |s: &str| Some(std::ffi::OsString::from(s));
        let is = |v: Option<std::ffi::OsString>, st| stderr_is_journal(v.as_deref(), st);
        assert!(is(var("64769:123456"), Some((64769, 123456))));
        assert!(!is(var("64769:123456"), Some((64769, 1))));
        assert!(!is(var("64769:123456"), None), "a closed stderr");
        assert!(!is(None, Some((1, 2))));
        for bad in ["", "1", "1:", ":2", "a:b", "1:2:3", "-1:2"] {
            assert!(!is(var(bad), Some((1, 2))), "{bad}");
        }
        // A real file's own numbers, as fstat gives them.
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        let st = nix::sys::stat::fstat(&file).unwrap();
        let (dev, ino) = (st.st_dev, st.st_ino);
        assert!(is(var(&format!("{dev}:{ino}")), Some((dev, ino))));
    }

    #[test]
    fn journal_lines_carry_the_level_prefix_and_no_timestamp() {
        assert_eq!(journal_prefix(tracing::Level::ERROR), "<3>");
        assert_eq!(journal_prefix(tracing::Level::WARN), "<4>");
        assert_eq!(journal_prefix(tracing::Level::INFO), "<6>");
        assert_eq!(journal_prefix(tracing::Level::DEBUG), "<7>");
        assert_eq!(journal_prefix(tracing::Level::TRACE), "<7>");
        let out = through_tracing(LogFormat::Text, true, || {
            tracing::error!("e");
            tracing::warn!(n = 1, "w");
            tracing::info!("i");
            tracing::debug!("d");
        });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            ["<3>ERROR e", "<4> WARN w n=1", "<6> INFO i", "<7>DEBUG d"]
        );
        // Elsewhere: the timestamp, no prefix.
        let out = through_tracing(LogFormat::Text, false, || tracing::info!("i"));
        assert!(
            out.ends_with("Z  INFO i\n") && !out.starts_with('<'),
            "{out}"
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
