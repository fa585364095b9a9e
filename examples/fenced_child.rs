//! Test helper: the command leaderrun supervises in integration tests. It
//! records its lifetime in a shared file so tests can prove that no two
//! children (from any number of leaderrun processes) ever ran at once.
//!
//! Usage: fenced_child <record-file> [--ignore-term] [--exit-after MS]
//!                     [--exit-code N] [--max-lifetime-ms MS]
//!
//! Lines (CLOCK_MONOTONIC ns, comparable across processes):
//!   start <pid> <ns> <LEADERRUN_REVISION|-> <LEADERRUN_ID|->
//!   alive <pid> <ns>                       every 5 ms
//!   ignored-term <pid> <ns>                SIGTERM under --ignore-term
//!   end <pid> <ns> term|exit|expired
//! Each line is one write(2) on an O_APPEND fd, so lines from concurrent
//! processes never interleave.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::raw::c_int;
use std::path::PathBuf;
use std::process::exit;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

const TICK: Duration = Duration::from_millis(5);
/// Orphans (e.g. left by a SIGKILLed leaderrun) must not outlive a test run.
const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(600);
/// How often to check that the record file still exists.
const FILE_CHECK_EVERY: u32 = 20;

/// SIGTERMs received and not yet handled by the main loop.
static TERMS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_sigterm(_: c_int) {
    TERMS.fetch_add(1, Ordering::SeqCst);
}

struct Args {
    record: PathBuf,
    ignore_term: bool,
    exit_after: Option<Duration>,
    exit_code: i32,
    max_lifetime: Duration,
}

fn usage(msg: &str) -> ! {
    eprintln!("fenced_child: {msg}");
    eprintln!(
        "usage: fenced_child <record-file> [--ignore-term] [--exit-after MS] \
         [--exit-code N] [--max-lifetime-ms MS]"
    );
    exit(2);
}

fn parse_args() -> Args {
    let mut it = std::env::args().skip(1);
    let record = it.next().unwrap_or_else(|| usage("missing record file"));
    let mut args = Args {
        record: PathBuf::from(record),
        ignore_term: false,
        exit_after: None,
        exit_code: 0,
        max_lifetime: DEFAULT_MAX_LIFETIME,
    };
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> u64 {
            let v = it
                .next()
                .unwrap_or_else(|| usage(&format!("{name} needs a value")));
            v.parse()
                .unwrap_or_else(|_| usage(&format!("bad {name} value {v}")))
        };
        match flag.as_str() {
            "--ignore-term" => args.ignore_term = true,
            "--exit-after" => args.exit_after = Some(Duration::from_millis(value("--exit-after"))),
            "--exit-code" => args.exit_code = value("--exit-code") as i32,
            "--max-lifetime-ms" => {
                args.max_lifetime = Duration::from_millis(value("--max-lifetime-ms"))
            }
            other => usage(&format!("unknown argument {other}")),
        }
    }
    args
}

/// CLOCK_MONOTONIC: std's Instant hides the raw value.
fn mono_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock_gettime");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// Appends one whole line with a single write(2) call.
fn record(file: &mut File, line: String) {
    let line = line + "\n";
    match file.write(line.as_bytes()) {
        Ok(n) if n == line.len() => {}
        Ok(n) => panic!("short write to record file ({n} of {})", line.len()),
        Err(e) => panic!("cannot write record file: {e}"),
    }
}

/// Env value as one whitespace-free token, `-` if unset or empty.
fn env_token(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.split_whitespace().collect::<Vec<_>>().join("_"),
        _ => "-".to_string(),
    }
}

fn install_sigterm_handler() {
    let action = SigAction::new(
        SigHandler::Handler(on_sigterm),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler only touches an atomic, which is async-signal-safe.
    unsafe { sigaction(Signal::SIGTERM, &action) }.expect("sigaction(SIGTERM)");
}

fn main() {
    let args = parse_args();
    install_sigterm_handler();
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.record)
        .unwrap_or_else(|e| usage(&format!("cannot open {}: {e}", args.record.display())));
    let pid = std::process::id();
    let started = Instant::now();
    record(
        &mut file,
        format!(
            "start {pid} {} {} {}",
            mono_ns(),
            env_token("LEADERRUN_REVISION"),
            env_token("LEADERRUN_ID")
        ),
    );
    let mut ticks: u32 = 0;
    loop {
        std::thread::sleep(TICK);
        if TERMS.swap(0, Ordering::SeqCst) > 0 {
            if !args.ignore_term {
                record(&mut file, format!("end {pid} {} term", mono_ns()));
                exit(0);
            }
            record(&mut file, format!("ignored-term {pid} {}", mono_ns()));
        }
        if args.exit_after.is_some_and(|d| started.elapsed() >= d) {
            record(&mut file, format!("end {pid} {} exit", mono_ns()));
            exit(args.exit_code);
        }
        if started.elapsed() >= args.max_lifetime {
            record(&mut file, format!("end {pid} {} expired", mono_ns()));
            exit(3);
        }
        // The test removed its temp dir: nobody is watching, so stop.
        ticks = ticks.wrapping_add(1);
        if ticks.is_multiple_of(FILE_CHECK_EVERY) && !args.record.exists() {
            exit(4);
        }
        record(&mut file, format!("alive {pid} {}", mono_ns()));
    }
}
