//! Test helper: the command leaderrun supervises in integration tests. It
//! records its lifetime in a shared file so tests can prove that no two
//! children (from any number of leaderrun processes) ever ran at once.
//!
//! Usage: fenced_child <record-file> [--ignore-term] [--exit-after MS]
//!                     [--exit-code N] [--max-lifetime-ms MS] [--hot]
//!        fenced_child <record-file> --stamp promote|demote
//!
//! Lines (CLOCK_MONOTONIC ns, comparable across processes):
//!   start <pid> <ns> <LEADERRUN_REVISION|-> <LEADERRUN_ID|->
//!   alive <pid> <ns>                       every 5 ms
//!   ignored-term <pid> <ns>                SIGTERM under --ignore-term
//!   end <pid> <ns> term|exit|expired|standby
//! Each line is one write(2) on an O_APPEND fd, so lines from concurrent
//! processes never interleave.
//!
//! `--hot`: a child of `leaderrun --hot-standby`, which runs in every role. Its records are
//! those of its *leader intervals*: `start` when it reads `ROLE=leader` in LEADERRUN_ROLE_FILE
//! (the revision is the file's REVISION, the term's fencing token), `alive` every 5 ms while it
//! leads, and `end ... standby` when it reads `ROLE=standby`, just before it confirms with the
//! datagram `ROLE=standby` on LEADERRUN_NOTIFY_SOCKET (or `end ... term` on SIGTERM while
//! leading). Nothing is recorded while it stands by. It blocks the role signal (SIGURG, or
//! FENCED_ROLE_SIGNAL's number) and SIGTERM and waits for them with sigtimedwait, so it reads
//! the file at once when told. Every time the file says standby after a signal it confirms (a
//! repeated confirmation is dropped by leaderrun as stale), so a leader-then-standby pair of
//! signals it saw as one still gets its confirmation.
//!
//! `--stamp promote|demote`: one line, then exit 0, for a role hook (`--on-promote`,
//! `--on-demote`): `promote <pid> <ns> <LEADERRUN_REVISION|-> <LEADERRUN_ID|->` or
//! `demote <pid> <ns> <LEADERRUN_REASON|-> <LEADERRUN_ID|->`; tests/common/records.rs reads
//! them as intervals of holding what the hooks move (a "VIP").

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::raw::c_int;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
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
    hot: bool,
    stamp: Option<String>,
}

fn usage(msg: &str) -> ! {
    eprintln!("fenced_child: {msg}");
    eprintln!(
        "usage: fenced_child <record-file> [--ignore-term] [--exit-after MS] \
         [--exit-code N] [--max-lifetime-ms MS] [--hot]\n       \
         fenced_child <record-file> --stamp promote|demote"
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
        hot: false,
        stamp: None,
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
            "--hot" => args.hot = true,
            "--stamp" => match it.next().as_deref() {
                Some(w @ ("promote" | "demote")) => args.stamp = Some(w.to_string()),
                _ => usage("--stamp takes promote or demote"),
            },
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

/// `--stamp`: one line for a role hook.
fn stamp(file: &mut File, word: &str) -> ! {
    let what = match word {
        "promote" => env_token("LEADERRUN_REVISION"),
        _ => env_token("LEADERRUN_REASON"),
    };
    record(
        file,
        format!(
            "{word} {} {} {what} {}",
            std::process::id(),
            mono_ns(),
            env_token("LEADERRUN_ID")
        ),
    );
    exit(0);
}

/// ROLE and REVISION of a hot standby's role file (None if unreadable or without ROLE).
fn read_role(path: &Path) -> Option<(String, Option<String>)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut role = None;
    let mut revision = None;
    for line in text.lines() {
        match line.split_once('=') {
            Some(("ROLE", v)) => role = Some(v.trim_matches('\'').to_string()),
            Some(("REVISION", v)) => revision = Some(v.trim_matches('\'').to_string()),
            _ => {}
        }
    }
    Some((role?, revision))
}

/// A signal of `set` (blocked) within `wait`, or None.
fn wait_signal(set: &SigSet, wait: Duration) -> Option<c_int> {
    let timeout = nix::libc::timespec {
        tv_sec: wait.as_secs() as _,
        tv_nsec: wait.subsec_nanos() as _,
    };
    // SAFETY: a plain syscall on a valid set and timeout; no siginfo asked for.
    let sig = unsafe { nix::libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &timeout) };
    (sig > 0).then_some(sig)
}

/// `--hot`: records only the leader intervals (see the module doc). Never returns.
fn run_hot(args: &Args, file: &mut File) -> ! {
    let role_signal = match std::env::var("FENCED_ROLE_SIGNAL") {
        Ok(n) => n
            .parse::<i32>()
            .ok()
            .and_then(|n| Signal::try_from(n).ok())
            .unwrap_or_else(|| usage(&format!("bad FENCED_ROLE_SIGNAL {n}"))),
        Err(_) => Signal::SIGURG,
    };
    let mut waited = SigSet::empty();
    waited.add(role_signal);
    waited.add(Signal::SIGTERM);
    waited
        .thread_block()
        .expect("block the role signal and SIGTERM");
    let (Some(role_file), Some(socket)) = (
        std::env::var_os("LEADERRUN_ROLE_FILE").map(PathBuf::from),
        std::env::var_os("LEADERRUN_NOTIFY_SOCKET").map(PathBuf::from),
    ) else {
        usage("--hot needs LEADERRUN_ROLE_FILE and LEADERRUN_NOTIFY_SOCKET");
    };
    let sender = UnixDatagram::unbound().expect("a datagram socket");
    let pid = std::process::id();
    let started = Instant::now();
    let mut leading = false;
    let mut last_alive = Instant::now();
    let mut ticks: u32 = 0;
    // The file may have changed before the mask was set: read it once before the first wait.
    let mut told = Some(role_signal as c_int);
    loop {
        if told == Some(Signal::SIGTERM as c_int) {
            if leading {
                record(file, format!("end {pid} {} term", mono_ns()));
            }
            exit(0);
        }
        if told.is_some() {
            match read_role(&role_file) {
                Some((role, revision)) if role == "leader" && !leading => {
                    leading = true;
                    last_alive = Instant::now();
                    record(
                        file,
                        format!(
                            "start {pid} {} {} {}",
                            mono_ns(),
                            revision.as_deref().unwrap_or("-"),
                            env_token("LEADERRUN_ID")
                        ),
                    );
                }
                Some((role, _)) if role == "standby" => {
                    // Stop acting as leader (the record) before saying so.
                    if leading {
                        leading = false;
                        record(file, format!("end {pid} {} standby", mono_ns()));
                    }
                    if let Err(e) = sender.send_to(b"ROLE=standby\n", &socket) {
                        eprintln!("fenced_child: cannot confirm on {}: {e}", socket.display());
                    }
                }
                _ => {}
            }
        }
        if started.elapsed() >= args.max_lifetime {
            if leading {
                record(file, format!("end {pid} {} expired", mono_ns()));
            }
            exit(3);
        }
        if leading && last_alive.elapsed() >= TICK {
            last_alive = Instant::now();
            record(file, format!("alive {pid} {}", mono_ns()));
        }
        let wait = match leading {
            true => TICK.saturating_sub(last_alive.elapsed()),
            false => TICK,
        };
        told = wait_signal(&waited, wait.max(Duration::from_millis(1)));
        if told.is_none() {
            // The test removed its temp dir: nobody is watching, so stop.
            ticks = ticks.wrapping_add(1);
            if ticks.is_multiple_of(FILE_CHECK_EVERY) && !args.record.exists() {
                exit(4);
            }
        }
    }
}

fn main() {
    let args = parse_args();
    install_sigterm_handler();
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.record)
        .unwrap_or_else(|e| usage(&format!("cannot open {}: {e}", args.record.display())));
    if let Some(word) = &args.stamp {
        stamp(&mut file, word);
    }
    if args.hot {
        run_hot(&args, &mut file);
    }
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
