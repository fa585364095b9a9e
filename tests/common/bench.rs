//! What the benchmark (benches/handover.rs) reads and computes beside the scene: a record file
//! and a hot child's journal (examples/hot_child.rs) followed as they grow, figures of processes from /proc (peak and resident memory, run time,
//! proportional set size), etcd's count of received gRPC messages, and percentiles.
//!
//! Nothing here forks: these are the polls that run while a handover is measured, and on a
//! 2-core machine a fork and exec (a millisecond of CPU) would land inside the gap. And the
//! cleanup of an interrupted run (`stop_all_on_signal`).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::os::raw::c_int;
use std::os::unix::io::IntoRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use super::{http, Ending, RecordParser, Run};

/// How often the waits look at a record file: the gaps come from the children's own stamps,
/// so this only bounds how soon a wait returns.
pub const FOLLOW_POLL: Duration = Duration::from_millis(10);

/// A record file read as it grows: each poll reads only what was appended since the last.
/// (Re-reading the whole file would cost more at every poll as a child's `alive` lines pile up,
/// every 5 ms, over a long scale run.)
#[derive(Debug)]
pub struct Follow {
    file: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    parser: RecordParser,
}

impl Follow {
    pub fn new(file: PathBuf) -> Follow {
        Follow {
            file,
            offset: 0,
            partial: Vec::new(),
            parser: RecordParser::default(),
        }
    }

    /// The runs read so far, in the order of their start lines.
    pub fn runs(&self) -> &[Run] {
        &self.parser.runs
    }

    /// Reads what was appended since the last call; returns all runs so far.
    pub fn poll(&mut self) -> &[Run] {
        for line in new_lines(&self.file, &mut self.offset, &mut self.partial) {
            self.parser
                .line(&line)
                .unwrap_or_else(|e| panic!("bad record line {line:?}: {e}"));
        }
        &self.parser.runs
    }

    /// Polls every `FOLLOW_POLL` until `pred(runs)` holds (true) or `timeout` passes (false).
    pub fn wait(&mut self, timeout: Duration, mut pred: impl FnMut(&[Run]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(self.poll()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(FOLLOW_POLL);
        }
    }

    /// The latest run with no end line: the leader's child, where children only end by
    /// themselves or on SIGTERM.
    pub fn holder(&mut self) -> Option<Run> {
        self.poll()
            .iter()
            .rev()
            .find(|r| r.ending == Ending::Killed)
            .cloned()
    }
}

/// The whole lines appended to `file` since `offset` (which moves on); a line still being
/// written stays in `partial` for the next call.
fn new_lines(file: &std::path::Path, offset: &mut u64, partial: &mut Vec<u8>) -> Vec<String> {
    if let Ok(mut f) = File::open(file) {
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(*offset)).is_ok() && f.read_to_end(&mut buf).is_ok() {
            *offset += buf.len() as u64;
            partial.extend_from_slice(&buf);
        }
    }
    // Only whole lines: each is one write(2), but a read can end inside one.
    match partial.iter().rposition(|&b| b == b'\n') {
        Some(cut) => {
            let complete: Vec<u8> = partial.drain(..=cut).collect();
            String::from_utf8_lossy(&complete)
                .lines()
                .map(str::to_string)
                .collect()
        }
        None => Vec::new(),
    }
}

/// One role a hot standby child took: its journal line `<ns> <pid> <role> [<revision>]`
/// (examples/hot_child.rs).
#[derive(Debug, Clone)]
pub struct Took {
    pub ns: u64,
    pub pid: u32,
    pub role: String,
}

/// The hot children's journal, read as it grows.
#[derive(Debug)]
pub struct Journal {
    file: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    took: Vec<Took>,
}

impl Journal {
    pub fn new(file: PathBuf) -> Journal {
        Journal {
            file,
            offset: 0,
            partial: Vec::new(),
            took: Vec::new(),
        }
    }

    /// Reads what was appended since the last call; returns all lines so far.
    pub fn poll(&mut self) -> &[Took] {
        for line in new_lines(&self.file, &mut self.offset, &mut self.partial) {
            let mut w = line.split_whitespace();
            let took = (|| {
                Some(Took {
                    ns: w.next()?.parse().ok()?,
                    pid: w.next()?.parse().ok()?,
                    role: w.next()?.to_string(),
                })
            })();
            self.took
                .push(took.unwrap_or_else(|| panic!("bad journal line {line:?}")));
        }
        &self.took
    }

    /// Polls every `FOLLOW_POLL` until `pred(lines)` holds (true) or `timeout` passes (false).
    pub fn wait(&mut self, timeout: Duration, mut pred: impl FnMut(&[Took]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(self.poll()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(FOLLOW_POLL);
        }
    }

    /// The child that leads now: the last to say `leader`, unless it said `standby` since.
    pub fn leader(&mut self) -> Option<u32> {
        let took = self.poll();
        let last = took.iter().rposition(|t| t.role == "leader")?;
        let pid = took[last].pid;
        let demoted = took[last..]
            .iter()
            .any(|t| t.pid == pid && t.role == "standby");
        (!demoted).then_some(pid)
    }
}

/// The path of the release (or this build's profile) example `name` beside the fenced child,
/// built first when cargo runs us (cargo bench builds no example).
pub fn example_path(name: &str) -> PathBuf {
    let fenced = super::fenced_child_path();
    let examples = fenced.parent().expect("examples dir");
    let path = examples.join(name);
    let profile_dir = examples.parent().expect("profile dir");
    if let (Some(cargo), Some(target_dir)) = (std::env::var_os("CARGO"), profile_dir.parent()) {
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "--quiet", "--offline", "--example", name])
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        match profile_dir.file_name().and_then(|s| s.to_str()) {
            Some("debug") | None => {}
            Some("release") => {
                cmd.arg("--release");
            }
            Some(other) => {
                cmd.args(["--profile", other]);
            }
        }
        let out = cmd.output().expect("run cargo build --example");
        assert!(
            out.status.success(),
            "cargo build --example {name} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(path.exists(), "{} missing", path.display());
    path
}

/// The instant the child ended, by its own end line (None without one).
pub fn end_ns(run: &Run) -> Option<u64> {
    // The end line is the last a child writes: its last sign of life.
    (run.ending != Ending::Killed).then_some(run.last_seen_ns)
}

// ---------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------

/// A `Key:  N kB` (or `Threads: N`) field of /proc/<pid>/status.
pub fn status_field(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// CPU time used so far by those of `pids` still alive, all their threads, in ns: from
/// /proc/PID/task/TID/schedstat (the scheduler's run time, to the ns; /proc/PID/schedstat is
/// the main thread's only). utime + stime of /proc/PID/stat are whole clock ticks, and an idle
/// standby uses less than one tick in a 30 s window; they are the fallback on a kernel without
/// schedstat.
pub fn cpu_ns(pids: &[u32]) -> u64 {
    let mut total = 0;
    for &pid in pids {
        let tasks = format!("/proc/{pid}/task");
        if std::path::Path::new(&format!("/proc/{pid}/schedstat")).exists() {
            let Ok(dir) = std::fs::read_dir(&tasks) else {
                continue;
            };
            for task in dir.flatten() {
                let Ok(line) = std::fs::read_to_string(task.path().join("schedstat")) else {
                    continue;
                };
                total += line
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        } else if let Some(f) = super::stat_fields(pid) {
            // Fields after the name: state is [0], utime [11], stime [12].
            let ticks: u64 = [11, 12]
                .iter()
                .filter_map(|&i| f.get(i)?.parse::<u64>().ok())
                .sum();
            total += ticks * 1_000_000_000 / clock_ticks();
        }
    }
    total
}

fn clock_ticks() -> u64 {
    extern "C" {
        fn sysconf(name: std::os::raw::c_int) -> std::os::raw::c_long;
    }
    const SC_CLK_TCK: std::os::raw::c_int = 2;
    // SAFETY: sysconf only reads a constant of the C library.
    let t = unsafe { sysconf(SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Sum, median and count of VmRSS (KiB) over those of `pids` still alive.
pub fn rss(pids: &[u32]) -> (u64, f64, usize) {
    let mut v: Vec<u64> = pids
        .iter()
        .filter_map(|&p| status_field(p, "VmRSS"))
        .collect();
    v.sort_unstable();
    let sum = v.iter().sum();
    let f: Vec<f64> = v.iter().map(|&k| k as f64).collect();
    (sum, median(&f).unwrap_or(0.0), v.len())
}

/// The sum of the proportional set sizes (KiB) of `pids`: pages shared between them (the
/// binary, the C library) counted once.
pub fn pss(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).ok())
        .flat_map(|t| {
            t.lines()
                .filter_map(|l| l.strip_prefix("Pss:"))
                .filter_map(|r| r.split_whitespace().next()?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// KiB as MiB with one decimal, as the tables print memory.
pub fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

// ---------------------------------------------------------------------------
// etcd
// ---------------------------------------------------------------------------

/// etcd's `grpc_server_msg_received_total`, summed over all its labels, from the /metrics of
/// the plain-http client address `addr`.
pub fn etcd_msgs(addr: SocketAddr) -> Result<f64, String> {
    let answer = http::http(addr, "GET", "/metrics", Duration::from_secs(5))?;
    if answer.code != 200 {
        return Err(format!("/metrics answered {}", answer.code));
    }
    Ok(answer
        .body
        .lines()
        .filter(|l| {
            l.strip_prefix("grpc_server_msg_received_total")
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum())
}

// ---------------------------------------------------------------------------
// Figures
// ---------------------------------------------------------------------------

/// `v` sorted (NaN-free input).
pub fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

/// The median of `v` (the mean of the middle two for an even count).
pub fn median(v: &[f64]) -> Option<f64> {
    let s = sorted(v);
    let n = s.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(s[n / 2]),
        _ => Some((s[n / 2 - 1] + s[n / 2]) / 2.0),
    }
}

/// The `p`-th percentile of `v`, nearest rank.
pub fn pct(v: &[f64], p: usize) -> Option<f64> {
    let s = sorted(v);
    if s.is_empty() {
        return None;
    }
    let rank = (p * s.len()).div_ceil(100).clamp(1, s.len());
    Some(s[rank - 1])
}

/// A figure with two decimals, or `-` when there is none.
pub fn fmt2(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}

/// `median / min / max` with two decimals each.
pub fn med_min_max(v: &[f64]) -> String {
    let s = sorted(v);
    format!(
        "{} / {} / {}",
        fmt2(median(&s)),
        fmt2(s.first().copied()),
        fmt2(s.last().copied())
    )
}

/// `p50 / p90 / max` with two decimals each.
pub fn p50_p90_max(v: &[f64]) -> String {
    format!(
        "{} / {} / {}",
        fmt2(median(v)),
        fmt2(pct(v, 90)),
        fmt2(sorted(v).last().copied())
    )
}

/// A ratio with two decimals, `-` if either side is missing or the divisor is 0.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

// ---------------------------------------------------------------------------
// Interrupted
// ---------------------------------------------------------------------------

/// The environment variable every process the benchmark starts inherits (its value: the
/// benchmark's pid), so that an interrupted run finds what it started, grandchildren (the
/// fenced children, the guardians, a SIGKILLed `etcdctl lock`'s orphan) included, and never
/// anyone else's process. (leaderrun drops only LEADERRUN_* variables, etcd reads only ETCD_*.)
const MARKER: &str = "HANDOVER_BENCH";

/// The write end of the pipe the signal handler wakes the cleaner with.
static WAKE: AtomicI32 = AtomicI32::new(-1);
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: c_int) {
    extern "C" {
        fn write(fd: c_int, buf: *const u8, n: usize) -> isize;
    }
    SIGNAL.store(sig, Ordering::SeqCst);
    // SAFETY: write(2) is async-signal-safe; the buffer is a static byte.
    unsafe { write(WAKE.load(Ordering::SeqCst), b"x".as_ptr(), 1) };
}

/// On SIGINT or SIGTERM: SIGTERM to every process the benchmark started but etcd, up to 5 s
/// (`etcdctl lock` lets go only when its child ends: the children get it too), then SIGKILL to
/// what is left; then etcd; then the temp dirs go (unless LEADERRUN_KEEP_TMP is set), and the
/// process exits 128 + the signal. Call it first thing, before any thread or process starts:
/// it marks the environment they inherit.
pub fn stop_all_on_signal() {
    let me = std::process::id();
    std::env::set_var(MARKER, me.to_string());
    // A socket pair's ends are close-on-exec: no process started here inherits them.
    let (mut wake, tx) = UnixStream::pair().expect("socketpair");
    WAKE.store(tx.into_raw_fd(), Ordering::SeqCst);
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores an atomic and calls write(2).
        unsafe { sigaction(sig, &action) }.expect("sigaction");
    }
    thread::spawn(move || {
        let mut byte = [0u8; 1];
        let _ = wake.read(&mut byte);
        let sig = SIGNAL.load(Ordering::SeqCst);
        println!("\nbench: interrupted (signal {sig}): stopping what it started");
        let marked = format!("{MARKER}={me}");
        let (etcd, others): (Vec<u32>, Vec<u32>) = marked_pids(&marked, me)
            .into_iter()
            .partition(|&p| super::comm(p).as_deref() == Some("etcd"));
        stop_pids(&others);
        // Started since the scan (the main thread runs on meanwhile): no grace.
        let late: Vec<u32> = marked_pids(&marked, me)
            .into_iter()
            .filter(|p| !etcd.contains(p))
            .collect();
        late.iter()
            .for_each(|&p| super::signal_pid(p, Signal::SIGKILL));
        stop_pids(&etcd);
        if std::env::var_os("LEADERRUN_KEEP_TMP").is_none() {
            remove_temp_dirs(me);
        }
        std::process::exit(128 + sig);
    });
}

/// The pids whose environment holds `marked` (`NAME=VALUE`), but `me`.
fn marked_pids(marked: &str, me: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| p != me)
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == marked.as_bytes()))
        })
        .collect()
}

/// SIGTERM to `pids`, up to 5 s for all, then SIGKILL to the rest.
fn stop_pids(pids: &[u32]) {
    pids.iter()
        .for_each(|&p| super::signal_pid(p, Signal::SIGTERM));
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && pids.iter().any(|&p| super::process_alive(p)) {
        thread::sleep(Duration::from_millis(50));
    }
    pids.iter()
        .filter(|&&p| super::process_alive(p))
        .for_each(|&p| super::signal_pid(p, Signal::SIGKILL));
}

/// The temp dirs of this process (`unique_name` puts its pid in every name).
fn remove_temp_dirs(me: u32) {
    let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    let mine = format!("-{me}-");
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("leaderrun-") && name.contains(&mine) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
