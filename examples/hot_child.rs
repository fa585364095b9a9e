//! Benchmark helper: a hot standby child for `leaderrun --hot-standby`, the example replica
//! (examples/hot-standby/replica.py) without an interpreter's start-up and signal latency, so
//! that a promotion gap measures leaderrun and etcd, not Python.
//!
//! Usage: hot_child <journal>
//!
//! It blocks the role signal (SIGURG, or HOT_CHILD_SIGNAL's number) and SIGTERM and waits for
//! them with sigwait: no signal is lost between a read of the role file and the next wait. On
//! each role signal it reads LEADERRUN_ROLE_FILE; on a change it appends
//! `<CLOCK_MONOTONIC ns> <pid> <role> [<revision>]` to the journal (one write(2), O_APPEND) and,
//! for `standby`, then confirms with the datagram ROLE=standby on LEADERRUN_NOTIFY_SOCKET.
//! SIGTERM ends it (exit 0); so does its journal's removal, or an hour (an orphan must not
//! outlive a benchmark).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::exit;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};

const MAX_LIFETIME: Duration = Duration::from_secs(3600);

/// CLOCK_MONOTONIC, as the fenced child and the benchmark read it (comparable across
/// processes).
fn mono_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock_gettime");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// ROLE and REVISION of the role file (None if unreadable).
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

/// One whole line with a single write(2): lines of concurrent children never interleave.
fn record(journal: &mut File, role: &str, revision: Option<&str>) {
    let mut line = format!("{} {} {role}", mono_ns(), std::process::id());
    if let Some(r) = revision {
        line.push(' ');
        line.push_str(r);
    }
    line.push('\n');
    if journal.write(line.as_bytes()).ok() != Some(line.len()) {
        eprintln!("hot_child: cannot write the journal");
        exit(1);
    }
}

fn main() {
    let Some(journal_path) = std::env::args().nth(1).map(PathBuf::from) else {
        eprintln!("usage: hot_child <journal>");
        exit(2);
    };
    let role_signal = match std::env::var("HOT_CHILD_SIGNAL") {
        Ok(n) => n
            .parse::<i32>()
            .ok()
            .and_then(|n| Signal::try_from(n).ok())
            .unwrap_or_else(|| {
                eprintln!("hot_child: bad HOT_CHILD_SIGNAL {n}");
                exit(2)
            }),
        Err(_) => Signal::SIGURG,
    };
    // Blocked before any thread starts: the watchdog inherits the mask, so only sigwait takes
    // them.
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
        eprintln!("hot_child: LEADERRUN_ROLE_FILE and LEADERRUN_NOTIFY_SOCKET must be set");
        exit(2);
    };
    let mut journal = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&journal_path)
        .unwrap_or_else(|e| {
            eprintln!("hot_child: cannot open {}: {e}", journal_path.display());
            exit(2)
        });
    let watched = journal_path.clone();
    std::thread::spawn(move || {
        let started = Instant::now();
        loop {
            std::thread::sleep(Duration::from_secs(1));
            // The benchmark removed its temp dir: nobody is watching.
            if !watched.exists() || started.elapsed() >= MAX_LIFETIME {
                exit(4);
            }
        }
    });
    let sender = UnixDatagram::unbound().expect("a datagram socket");
    let mut role = std::env::var("LEADERRUN_ROLE").unwrap_or_else(|_| "standby".into());
    record(&mut journal, &role, None);
    // The file may have changed before the mask was set: read it once before the first wait.
    let mut first = true;
    loop {
        if !first && waited.wait().expect("sigwait") == Signal::SIGTERM {
            exit(0);
        }
        first = false;
        let Some((new, revision)) = read_role(&role_file) else {
            continue;
        };
        if new == role {
            continue;
        }
        role = new;
        // Recorded before the confirmation: the journal's standby line is the instant the
        // child stopped acting as leader.
        record(&mut journal, &role, revision.as_deref());
        if role == "standby" {
            if let Err(e) = sender.send_to(b"ROLE=standby\n", &socket) {
                eprintln!("hot_child: cannot confirm on {}: {e}", socket.display());
            }
        }
    }
}
