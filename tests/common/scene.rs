//! The harness every integration test uses to run leaderrun: a `Scene` (one test's temp dir,
//! election, etcd endpoints, shared fenced-child record file, logs and timeline) and the
//! processes it starts (`Lr`), plus the wait and check helpers built on them.
//!
//! - Every process started through a scene writes stderr to `<dir>/<id>.log` and stdout to
//!   `<dir>/<id>.out`; if the test panics, dropping the scene prints the timeline (`mark`,
//!   process starts), the tail of every log and the fenced children's runs.
//! - leaderrun never inherits `LEADERRUN_*` or `ETCDCTL_*` variables (nor systemd's
//!   `JOURNAL_STREAM`, `NOTIFY_SOCKET`, ...) from the test's environment (`leaderrun()`); add
//!   them per process with `.env(..)`.
//! - A process is SIGKILLed and reaped when its `Lr` drops, so a failing test leaks nothing.
//!
//! ```ignore
//! mod common;
//! use common::*;
//! use nix::sys::signal::Signal;
//!
//! #[test]
//! fn a_standby_started_like_under_nohup_takes_over_on_sigterm() {
//!     let (etcd, scene) = etcd_and_scene(); // or Scene::on(&cluster, "svc"), a 3-member one
//!     // `leaderrun --endpoints E --election svc --id A --ttl 3 -- fenced_child <records>`, then
//!     // wait (<= 10 s) until its child runs.
//!     let (mut a, run_a) = scene.leader("A", &["--ttl", "3"], &[]);
//!     // Any other option: endpoints (a FaultProxy's), command, env, stderr, signal dispositions.
//!     let proxy = FaultProxy::start(etcd.client_addr(0));
//!     let b = scene
//!         .leaderrun("B")
//!         .endpoints(&proxy.endpoint())
//!         .args(&["--ttl", "3"])
//!         .fenced(&["--ignore-term"]) // the default is .fenced(&[]); or .sh(..), .command(..)
//!         .env("LEADERRUN_STOP_TIMEOUT", "1s")
//!         .stderr(Stderr::Closed) // or Stderr::Piped, then b.take_stderr()
//!         .ignore_signals(&[Signal::SIGHUP]) // SIG_IGN from the start, as under nohup
//!         .spawn();
//!     scene.wait_candidates(&["A", "B"], 10 * SEC);
//!     b.signal(Signal::SIGHUP);
//!     assert!(holds_for(SEC, || process_alive(b.pid())));
//!     scene.mark("B is started"); // the timeline is printed if the test fails
//!     // SIGTERM to A: B leads within 3 s, A exits 0, its child ended on the SIGTERM, no overlap.
//!     // (`scene.handover` is the bare signal-and-wait, for checks of one's own.)
//!     let run_b = scene.sigterm_handover(&mut a, &run_a, "B", 3 * SEC, "with B behind a proxy");
//!     assert!(running_now(&scene.current(run_b.pid)));
//! }
//! ```
//!
//! Other programs (etcdctl, `leaderrun leader`, unshare) start with `scene.command(id, cmd)`,
//! which takes the same options; `scene.start(id, &mut cmd)` is its short form.

use std::cell::RefCell;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStderr, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::{SigHandler, Signal};

use super::{
    assert_no_overlap, etcdctl_command, fenced_child_path, file_tail, mono_now_ns, records,
    run_with_timeout, wait_until, ChildGuard, Ending, Etcd, EtcdCluster, Records, Run, TempDir,
};

pub const SEC: Duration = Duration::from_secs(1);
pub const MS: Duration = Duration::from_millis(1);
/// The default poll period of the wait helpers.
pub const POLL: Duration = Duration::from_millis(20);
/// How recently a fenced child must have written to count as running now (it writes every
/// 5 ms; this leaves room for a loaded machine).
pub const FRESH: Duration = Duration::from_millis(500);
/// Lines of each log printed when a test fails.
const LOG_TAIL: usize = 40;

// ---------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------

/// A duration in ns (the unit of the records).
pub fn ns(d: Duration) -> u64 {
    d.as_nanos() as u64
}

/// ns as seconds, for messages.
pub fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// ns as milliseconds, for messages.
pub fn ms_of(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// ns from `t0` to `t`, or 0 if `t` is earlier.
pub fn since(t0: u64, t: u64) -> u64 {
    t.saturating_sub(t0)
}

/// Wall clock as leaderrun's logs print it (UTC time of day), to line them up with a timeline.
pub fn wall() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let s = d.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:06}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        d.subsec_micros()
    )
}

/// Polls `get` every `POLL` until `ok` accepts its value: Ok(value), or Err(the last value)
/// after `timeout`. For waits whose failure message shows what was seen.
pub fn poll_for<T>(
    timeout: Duration,
    mut get: impl FnMut() -> T,
    mut ok: impl FnMut(&T) -> bool,
) -> Result<T, T> {
    let mut last = None;
    let found = wait_until(timeout, POLL, || {
        let value = get();
        let done = ok(&value);
        last = Some(value);
        done
    });
    let last = last.expect("polled at least once");
    if found {
        Ok(last)
    } else {
        Err(last)
    }
}

/// True if `cond` holds at every poll (`POLL`) for the whole `window`.
pub fn holds_for(window: Duration, mut cond: impl FnMut() -> bool) -> bool {
    !wait_until(window, POLL, || !cond())
}

// ---------------------------------------------------------------------------
// Runs (the fenced children's records)
// ---------------------------------------------------------------------------

/// `id`'s runs, in start order.
pub fn runs_of<'a>(runs: &'a [Run], id: &str) -> Vec<&'a Run> {
    runs.iter()
        .filter(|r| r.id.as_deref() == Some(id))
        .collect()
}

/// The run's LEADERRUN_REVISION (its fencing token); panics if it has none.
pub fn revision(run: &Run) -> i64 {
    run.revision
        .as_deref()
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("run without a numeric LEADERRUN_REVISION: {run:?}"))
}

/// The child is running now: no end line and a recent alive line.
pub fn running_now(run: &Run) -> bool {
    run.ending == Ending::Killed && run.seen_within(mono_now_ns(), FRESH)
}

/// The one run that is running now, if exactly one is.
pub fn the_running(runs: &[Run]) -> Option<Run> {
    let running: Vec<&Run> = runs.iter().filter(|r| running_now(r)).collect();
    (running.len() == 1).then(|| running[0].clone())
}

// ---------------------------------------------------------------------------
// Files and outputs
// ---------------------------------------------------------------------------

/// The lines of a file (none if it does not exist).
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The file exists and contains `needle`.
pub fn file_has(path: &Path, needle: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| t.contains(needle))
}

pub fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

/// The leaderrun binary, with no LEADERRUN_* or ETCDCTL_* variables from the test's environment
/// (a developer's shell set up for etcdctl would reach another etcd).
pub fn leaderrun() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_leaderrun"));
    scrub_leaderrun_env(&mut c);
    c
}

/// Keeps the test's own LEADERRUN_* and ETCDCTL_* variables (the settings leaderrun reads),
/// and the ones systemd sets for a service (JOURNAL_STREAM, NOTIFY_SOCKET, WATCHDOG_USEC,
/// CREDENTIALS_DIRECTORY, ...), from `cmd` (for a wrapper that runs leaderrun too). A test sets
/// its own afterwards, with `.env(..)`.
pub fn scrub_leaderrun_env(cmd: &mut Command) {
    const SYSTEMD: &[&str] = &[
        "JOURNAL_STREAM",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "CREDENTIALS_DIRECTORY",
    ];
    for (k, _) in std::env::vars_os() {
        let name = k.to_string_lossy();
        if name.starts_with("LEADERRUN_")
            || name.starts_with("ETCDCTL_")
            || SYSTEMD.contains(&name.as_ref())
        {
            cmd.env_remove(k);
        }
    }
}

/// `/bin/sh -c script`, as a command line.
pub fn sh(script: &str) -> Vec<OsString> {
    vec!["/bin/sh".into(), "-c".into(), script.into()]
}

/// The candidates' keys and values under `<election>/`, oldest first (empty if etcdctl fails).
pub fn election_keys(endpoints: &str, election: &str) -> Vec<(String, String)> {
    keys_in(etcdctl_command(endpoints, &[]), election)
}

/// `election_keys`, asked with `etcdctl` (a command with its endpoints and flags set).
fn keys_in(mut etcdctl: Command, election: &str) -> Vec<(String, String)> {
    let prefix = format!("{election}/");
    etcdctl.args(["--command-timeout", "2s", "get", "--prefix", &prefix]);
    etcdctl.args(["--sort-by", "CREATE", "--order", "ASCEND"]);
    let out = run_with_timeout(&mut etcdctl, 30 * SEC);
    if !out.status.success() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    lines
        .chunks(2)
        .filter(|kv| kv.len() == 2)
        .map(|kv| (kv[0].to_string(), kv[1].to_string()))
        .collect()
}

// ---------------------------------------------------------------------------
// Scene
// ---------------------------------------------------------------------------

/// A single-member etcd and a scene on it (election "svc"). Bind both, in this order:
/// `let (etcd, scene) = etcd_and_scene();` (the scene drops first, printing its logs).
pub fn etcd_and_scene() -> (Etcd, Scene) {
    etcd_and_scene_with_election("svc")
}

/// Like `etcd_and_scene`, for the election `election`.
pub fn etcd_and_scene_with_election(election: &str) -> (Etcd, Scene) {
    let etcd = Etcd::single();
    let scene = Scene::on(&etcd, election);
    (etcd, scene)
}

/// One test's world: its temp dir, the shared record file, the election name, the etcd
/// endpoints, the logs to print if the test fails and a timeline of what the test did.
pub struct Scene {
    name: String,
    pub dir: TempDir,
    /// The record file every fenced child of this scene writes to.
    pub records: PathBuf,
    /// The election (`--election`) candidates join; "svc" unless set.
    pub election: String,
    /// The etcd endpoints candidates use (unless told otherwise) and etcdctl uses.
    pub etcd: String,
    /// What the scene's etcdctl adds: the fixture's TLS and root login (`Scene::on`).
    etcdctl_flags: Vec<String>,
    logs: RefCell<Vec<(String, PathBuf)>>,
    timeline: RefCell<Vec<String>>,
}

impl Scene {
    /// A scene on `etcd_endpoints` (one member's or a cluster's), election "svc".
    pub fn new(etcd_endpoints: &str) -> Scene {
        Scene::with_election(etcd_endpoints, "svc")
    }

    /// A scene on `etcd` (a single member or a cluster) whose etcdctl presents the fixture's
    /// TLS files and, if auth is on by now, logs in as root: its candidate listing works over
    /// TLS and with auth.
    pub fn on(etcd: &EtcdCluster, election: &str) -> Scene {
        let mut scene = Scene::with_election(&etcd.endpoints(), election);
        scene.etcdctl_flags = etcd.etcdctl_flags();
        scene
    }

    /// A scene on plain-http `etcd_endpoints` (a proxy's, some members'), election `election`.
    pub fn with_election(etcd_endpoints: &str, election: &str) -> Scene {
        let dir = TempDir::new("leaderrun-test");
        let records = dir.join("records");
        // libtest names each test's thread after the test.
        let name = std::thread::current()
            .name()
            .unwrap_or("test")
            .rsplit("::")
            .next()
            .unwrap_or("test")
            .to_string();
        let scene = Scene {
            name,
            dir,
            records,
            election: election.to_string(),
            etcd: etcd_endpoints.to_string(),
            etcdctl_flags: Vec::new(),
            logs: RefCell::new(Vec::new()),
            timeline: RefCell::new(Vec::new()),
        };
        scene.mark("scene set up");
        scene
    }

    /// `<temp dir>/name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Notes an event on the timeline (printed on failure) with both clocks; returns the
    /// CLOCK_MONOTONIC ns it was noted at (the records' clock).
    pub fn mark(&self, what: &str) -> u64 {
        let mono = mono_now_ns();
        self.timeline
            .borrow_mut()
            .push(format!("{} mono={:.3}s {what}", wall(), secs(mono)));
        mono
    }

    /// Prints a measured figure (see it with `--nocapture`), tagged with the test's name.
    pub fn report(&self, what: &str) {
        eprintln!("[{}] {what}", self.name);
        self.mark(&format!("measured: {what}"));
    }

    /// `fenced_child <records> extra...`, as a command line.
    pub fn fenced(&self, extra: &[&str]) -> Vec<OsString> {
        let mut cmd = vec![fenced_child_path().into(), self.records.clone().into()];
        cmd.extend(extra.iter().map(OsString::from));
        cmd
    }

    /// The fenced child's command as words for `sh -c`, each single-quoted (the binary's
    /// path and the records file hold no quote).
    pub fn fenced_words(&self, extra: &[&str]) -> String {
        let words: Vec<String> = self
            .fenced(extra)
            .iter()
            .map(|a| format!("'{}'", a.to_string_lossy()))
            .collect();
        words.join(" ")
    }

    /// A candidate to configure, then `.spawn()`: `leaderrun --endpoints <etcd> --election
    /// <election> --id <id> <args> -- <command>`; the command is a fenced child by default.
    pub fn leaderrun(&self, id: &str) -> Launch<'_> {
        Launch {
            scene: self,
            id: id.to_string(),
            cmd: leaderrun(),
            candidate: Some(Candidate {
                endpoints: self.etcd.clone(),
                opts: Vec::new(),
                command: self.fenced(&[]),
            }),
            stderr: Stderr::Log,
            ignored: Vec::new(),
            limits: Vec::new(),
            stdout: None,
        }
    }

    /// Any program (etcdctl, `leaderrun leader`, unshare ...) to configure, then `.spawn()`.
    /// Build leaderrun itself with `leaderrun()`, which scrubs the environment.
    pub fn command(&self, id: &str, cmd: Command) -> Launch<'_> {
        Launch {
            scene: self,
            id: id.to_string(),
            cmd,
            candidate: None,
            stderr: Stderr::Log,
            ignored: Vec::new(),
            limits: Vec::new(),
            stdout: None,
        }
    }

    /// A candidate on this scene's etcd whose command is `fenced_child <records> child...`.
    pub fn candidate(&self, id: &str, opts: &[&str], child: &[&str]) -> Lr {
        self.leaderrun(id).args(opts).fenced(child).spawn()
    }

    /// `candidate`, then waits (<= 10 s) until its child runs: it leads. Returns the run too.
    pub fn leader(&self, id: &str, opts: &[&str], child: &[&str]) -> (Lr, Run) {
        let lr = self.candidate(id, opts, child);
        let run = self.wait_leading(id, 1, 10 * SEC);
        (lr, run)
    }

    /// `candidate`, then waits (<= 10 s) until exactly the candidates `all` (this one among
    /// them) are in etcd: it stands by.
    pub fn standby(&self, id: &str, opts: &[&str], child: &[&str], all: &[&str]) -> Lr {
        let lr = self.candidate(id, opts, child);
        self.wait_candidates(all, 10 * SEC);
        lr
    }

    /// A candidate on this scene's etcd whose command is `/bin/sh -c script`.
    pub fn candidate_sh(&self, id: &str, opts: &[&str], script: &str) -> Lr {
        self.leaderrun(id).args(opts).sh(script).spawn()
    }

    /// A candidate reaching etcd through `endpoints` (a proxy's, say) with command `cmd`.
    pub fn spawn(&self, id: &str, endpoints: &str, opts: &[&str], cmd: &[OsString]) -> Lr {
        self.leaderrun(id)
            .endpoints(endpoints)
            .args(opts)
            .command(cmd)
            .spawn()
    }

    /// Spawns `cmd` (stdout to `<id>.out`, stderr to `<id>.log`).
    pub fn start(&self, id: &str, cmd: &mut Command) -> Lr {
        let cmd = std::mem::replace(cmd, Command::new("/bin/true"));
        self.command(id, cmd).spawn()
    }

    /// `leaderrun <subcommand> --endpoints <etcd> --election <election> extra...`: a question
    /// about this scene's election (`leader`, `resign`), to start as one likes.
    pub fn subcommand(&self, subcommand: &str, extra: &[&str]) -> Command {
        let mut cmd = leaderrun();
        cmd.args([subcommand, "--endpoints", &self.etcd])
            .args(["--election", &self.election])
            .args(extra);
        cmd
    }

    /// `subcommand`, run to completion (SIGKILLed after `timeout`).
    pub fn ask(&self, subcommand: &str, extra: &[&str], timeout: Duration) -> Output {
        run_with_timeout(&mut self.subcommand(subcommand, extra), timeout)
    }

    /// All runs recorded so far, in start order.
    pub fn runs(&self) -> Vec<Run> {
        Records::read(&self.records)
    }

    /// Waits until `pred(runs)` holds, else panics naming `what`.
    pub fn wait_runs(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl FnMut(&[Run]) -> bool,
    ) -> Vec<Run> {
        Records::wait_for(&self.records, timeout, pred)
            .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for: {what}"))
    }

    /// Waits until candidate `id` has a child running (its n-th run, 1-based, counting its runs
    /// in start order); returns that run.
    pub fn wait_leading(&self, id: &str, nth: usize, timeout: Duration) -> Run {
        let runs = self.wait_runs(timeout, &format!("run #{nth} of {id}'s child"), |runs| {
            runs_of(runs, id).len() >= nth
        });
        runs_of(&runs, id)[nth - 1].clone()
    }

    /// `wait_leading`, asserting that the run's fencing token is above `after`'s.
    pub fn wait_leading_after(&self, id: &str, nth: usize, timeout: Duration, after: &Run) -> Run {
        let run = self.wait_leading(id, nth, timeout);
        assert!(revision(&run) > revision(after), "{run:?} after {after:?}");
        run
    }

    /// Sends `sig` to `from` and waits (<= `timeout`) until candidate `to`'s first child runs;
    /// returns that run and the ns from the signal to its start.
    pub fn handover(&self, from: &Lr, sig: Signal, to: &str, timeout: Duration) -> (Run, u64) {
        let t0 = mono_now_ns();
        from.signal(sig);
        let run = self.wait_leading(to, 1, timeout);
        let took = since(t0, run.start_ns);
        (run, took)
    }

    /// The graceful handover, checked: SIGTERM to the leader `from`, whose child is `from_run`,
    /// makes candidate `to` lead less than `within` after the signal (reported as "handover
    /// {what}"); `from` exits 0 within 5 s, its child ended on the SIGTERM, and no two children
    /// overlapped (looked at once `to`'s child has run for 300 ms). Returns `to`'s run.
    pub fn sigterm_handover(
        &self,
        from: &mut Lr,
        from_run: &Run,
        to: &str,
        within: Duration,
        what: &str,
    ) -> Run {
        self.mark(&format!("SIGTERM to {}", from.id));
        let (run, took) = self.handover(from, Signal::SIGTERM, to, 15 * SEC);
        self.report(&format!("handover {what}: {:.3}s", secs(took)));
        assert!(
            took < ns(within),
            "handover {what} took {:.3}s, not under {within:?}",
            secs(took)
        );
        from.expect_exit_code(5 * SEC, 0, "a leader exits 0 on SIGTERM");
        let ended = self.current(from_run.pid);
        assert_eq!(ended.ending, Ending::Term, "{ended:?}");
        assert_no_overlap(&self.after_running(run.pid, 300 * MS));
        run
    }

    /// Waits for the `n`-th run overall (1-based) and returns it.
    pub fn wait_nth_run(&self, n: usize, timeout: Duration, what: &str) -> Run {
        let runs = self.wait_runs(timeout, what, |runs| runs.len() >= n);
        runs[n - 1].clone()
    }

    /// Waits (<= `timeout`) for the `n`-th run overall, which must start less than `within`
    /// after `t0` (mono ns, when `after` happened); reports how long that took. Returns it.
    pub fn wait_nth_run_within(
        &self,
        n: usize,
        (t0, after): (u64, &str),
        timeout: Duration,
        within: Duration,
    ) -> Run {
        let run = self.wait_nth_run(n, timeout, &format!("a child after {after}"));
        let took = since(t0, run.start_ns);
        self.report(&format!(
            "{} leads {:.3}s after {after}",
            run.id.as_deref().unwrap_or("?"),
            secs(took)
        ));
        assert!(
            took < ns(within),
            "no child within {within:?} after {after}: {run:?} started {:.3}s after it",
            secs(took)
        );
        run
    }

    /// The child `pid` as recorded now.
    pub fn current(&self, pid: u32) -> Run {
        self.runs()
            .into_iter()
            .rev()
            .find(|r| r.pid == pid)
            .unwrap_or_else(|| panic!("no run with pid {pid}"))
    }

    /// Waits until the child `pid` wrote its end line (or, with `killed_ok`, stopped writing
    /// for a while); returns its run.
    pub fn wait_ended(&self, pid: u32, timeout: Duration, killed_ok: bool) -> Run {
        let mut found = None;
        let ok = wait_until(timeout, 10 * MS, || {
            let run = self.current(pid);
            let done = run.ending != Ending::Killed
                || (killed_ok && !run.seen_within(mono_now_ns(), FRESH));
            if done {
                found = Some(run);
            }
            done
        });
        assert!(ok, "child {pid} still running after {timeout:?}");
        found.unwrap()
    }

    /// Waits until the child `pid` has run for `age` (by its own records), then returns all
    /// runs: an overlap with an older child still running shows up.
    pub fn after_running(&self, pid: u32, age: Duration) -> Vec<Run> {
        let age = ns(age);
        self.wait_runs(
            5 * SEC,
            &format!("child {pid} to run for {age} ns"),
            |runs| {
                runs.iter()
                    .any(|r| r.pid == pid && r.last_seen_ns >= r.start_ns + age)
            },
        )
    }

    /// Asserts that for the whole `window` `pid` is the only child and it runs; panics
    /// naming `what`.
    pub fn only_child_runs_for(&self, pid: u32, window: Duration, what: &str) {
        let mut last = Vec::new();
        let ok = holds_for(window, || {
            last = self.runs();
            last.len() == 1 && last[0].pid == pid && running_now(&last[0])
        });
        assert!(
            ok,
            "{what}: the child {pid} stopped or another child started: {last:?}"
        );
    }

    /// `etcdctl --endpoints <etcd> args...` with the scene's TLS and auth flags (`Scene::on`),
    /// to spawn as one likes.
    pub fn etcdctl_command(&self, args: &[&str]) -> Command {
        let mut cmd = etcdctl_command(&self.etcd, &[]);
        cmd.args(&self.etcdctl_flags).args(args);
        cmd
    }

    /// The candidates' keys and values under `<election>/`, oldest first.
    pub fn candidates(&self) -> Vec<(String, String)> {
        keys_in(self.etcdctl_command(&[]), &self.election)
    }

    /// The candidates' ids, oldest first (the order of the queue).
    pub fn candidate_ids(&self) -> Vec<String> {
        self.candidates().into_iter().map(|(_, v)| v).collect()
    }

    /// The key of the candidate `id` under `<election>/`, if it has one.
    pub fn key_of(&self, id: &str) -> Option<String> {
        let keys = self.candidates().into_iter();
        keys.filter(|(_, v)| v == id).map(|(k, _)| k).next()
    }

    /// Waits until exactly these ids (any order) campaign or lead in etcd.
    pub fn wait_candidates(&self, ids: &[&str], timeout: Duration) {
        let mut want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        want.sort();
        let mut last = Vec::new();
        let ok = wait_until(timeout, Duration::from_millis(50), || {
            let mut got = self.candidate_ids();
            got.sort();
            last = got;
            last == want
        });
        assert!(
            ok,
            "candidates in etcd: want {want:?}, have {last:?} after {timeout:?}"
        );
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        eprintln!("===== {}: timeline =====", self.name);
        for line in self.timeline.borrow().iter() {
            eprintln!("{line}");
        }
        for (id, path) in self.logs.borrow().iter() {
            eprintln!(
                "===== {id}: {} =====\n{}",
                path.display(),
                file_tail(path, LOG_TAIL)
            );
        }
        if let Ok(text) = std::fs::read_to_string(&self.records) {
            eprintln!("===== runs =====");
            match records::parse(&text) {
                Ok(runs) => runs.iter().for_each(|r| {
                    eprintln!(
                        "{r:?} (start mono={:.3}s, last seen mono={:.3}s)",
                        secs(r.start_ns),
                        secs(r.last_seen_ns)
                    )
                }),
                Err(e) => eprintln!("records unreadable: {e}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Launching a process
// ---------------------------------------------------------------------------

/// Where a started process's stderr goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stderr {
    /// To `<id>.log` in the scene's dir (printed if the test fails). The default.
    Log,
    /// fd 2 closed before exec.
    Closed,
    /// A pipe: read it through `Lr::take_stderr`.
    Piped,
}

struct Candidate {
    endpoints: String,
    opts: Vec<OsString>,
    command: Vec<OsString>,
}

/// A process to start in a scene: made by `Scene::leaderrun` or `Scene::command`.
pub struct Launch<'s> {
    scene: &'s Scene,
    id: String,
    cmd: Command,
    candidate: Option<Candidate>,
    stderr: Stderr,
    ignored: Vec<Signal>,
    limits: Vec<(Resource, u64, u64)>,
    stdout: Option<Stdio>,
}

impl Launch<'_> {
    /// More arguments: leaderrun options before `--` for a candidate, else appended.
    pub fn args<S: AsRef<OsStr>>(mut self, args: &[S]) -> Self {
        match &mut self.candidate {
            Some(c) => c.opts.extend(args.iter().map(|a| a.as_ref().to_owned())),
            None => {
                self.cmd.args(args);
            }
        }
        self
    }

    /// A candidate's `--endpoints` (default: the scene's etcd).
    pub fn endpoints(mut self, endpoints: &str) -> Self {
        self.candidate_mut().endpoints = endpoints.to_string();
        self
    }

    /// A candidate's command (after `--`).
    pub fn command<S: AsRef<OsStr>>(mut self, cmd: &[S]) -> Self {
        self.candidate_mut().command = cmd.iter().map(|a| a.as_ref().to_owned()).collect();
        self
    }

    /// A candidate's command: `fenced_child <records> extra...` (the default, with no extra).
    pub fn fenced(self, extra: &[&str]) -> Self {
        let cmd = self.scene.fenced(extra);
        self.command(&cmd)
    }

    /// A candidate's command: `/bin/sh -c script`.
    pub fn sh(self, script: &str) -> Self {
        self.command(&sh(script))
    }

    /// Sets an environment variable of the process.
    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    /// Removes an environment variable from the process.
    pub fn env_remove(mut self, key: &str) -> Self {
        self.cmd.env_remove(key);
        self
    }

    pub fn stderr(mut self, stderr: Stderr) -> Self {
        self.stderr = stderr;
        self
    }

    /// Starts the process with these signals ignored (SIG_IGN survives exec, as with nohup).
    pub fn ignore_signals(mut self, signals: &[Signal]) -> Self {
        self.ignored.extend_from_slice(signals);
        self
    }

    /// Starts the process with these resource limits (resource, soft, hard), as `ulimit` sets
    /// them.
    pub fn limits(mut self, limits: &[(Resource, u64, u64)]) -> Self {
        self.limits.extend_from_slice(limits);
        self
    }

    /// Its stdout goes to `stdout` (a pipe nobody reads, say), not to `<id>.out`.
    pub fn stdout(mut self, stdout: impl Into<Stdio>) -> Self {
        self.stdout = Some(stdout.into());
        self
    }

    /// Starts it and waits for its exit (SIGKILLed after `timeout`): its status, and what it
    /// wrote to `<id>.out` and `<id>.log` (stdout and stderr, unless told otherwise).
    pub fn run(self, timeout: Duration) -> Output {
        let mut lr = self.spawn();
        let status = lr.wait_exit(timeout).unwrap_or_else(|| lr.kill());
        Output {
            status,
            stdout: std::fs::read(&lr.out).unwrap_or_default(),
            stderr: std::fs::read(&lr.log).unwrap_or_default(),
        }
    }

    fn candidate_mut(&mut self) -> &mut Candidate {
        self.candidate
            .as_mut()
            .expect("only a candidate (Scene::leaderrun) has endpoints and a command")
    }

    /// Starts it: stdin from /dev/null, stdout to `<id>.out`, stderr as set.
    pub fn spawn(mut self) -> Lr {
        let scene = self.scene;
        let id = self.id.clone();
        if let Some(c) = &self.candidate {
            self.cmd
                .args([OsStr::new("--endpoints"), c.endpoints.as_ref()])
                .args(["--election", &scene.election, "--id", &id])
                .args(&c.opts)
                .arg("--")
                .args(&c.command);
        }
        let log = scene.path(&format!("{id}.log"));
        let out = scene.path(&format!("{id}.out"));
        let out_file = File::create(&out).expect("create out");
        self.cmd.stdin(Stdio::null());
        match self.stdout.take() {
            Some(stdout) => self.cmd.stdout(stdout),
            None => self.cmd.stdout(out_file),
        };
        match self.stderr {
            Stderr::Log => {
                self.cmd.stderr(File::create(&log).expect("create log"));
                scene.logs.borrow_mut().push((id.clone(), log.clone()));
            }
            Stderr::Piped => {
                self.cmd.stderr(Stdio::piped());
            }
            Stderr::Closed => {
                self.cmd.stderr(Stdio::null());
            }
        }
        scene
            .logs
            .borrow_mut()
            .push((format!("{id} (stdout)"), out.clone()));
        let ignored = std::mem::take(&mut self.ignored);
        let limits = std::mem::take(&mut self.limits);
        let close_stderr = self.stderr == Stderr::Closed;
        // SAFETY: only async-signal-safe calls (sigaction, setrlimit, close) between fork and
        // exec.
        unsafe {
            self.cmd.pre_exec(move || {
                for &sig in &ignored {
                    nix::sys::signal::signal(sig, SigHandler::SigIgn)?;
                }
                for &(resource, soft, hard) in &limits {
                    setrlimit(resource, soft, hard)?;
                }
                if close_stderr && close(2) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        scene.mark(&format!("start {id}: {:?}", self.cmd));
        Lr {
            id,
            log,
            out,
            started: Instant::now(),
            guard: ChildGuard::spawn(&mut self.cmd),
        }
    }
}

extern "C" {
    fn close(fd: std::os::raw::c_int) -> std::os::raw::c_int;
}

// ---------------------------------------------------------------------------
// A started process
// ---------------------------------------------------------------------------

/// A process started in a scene (leaderrun or another); SIGKILLed and reaped on drop (a
/// leaderrun's child dies with it).
pub struct Lr {
    pub id: String,
    /// `<id>.log`: its stderr (unless started with another `Stderr`).
    pub log: PathBuf,
    /// `<id>.out`: its stdout.
    pub out: PathBuf,
    started: Instant,
    guard: ChildGuard,
}

impl Lr {
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// Sends a signal, without waiting.
    pub fn signal(&self, sig: Signal) {
        self.guard.signal(sig)
    }

    /// Waits up to `timeout` for exit; None if still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.guard.wait_timeout(timeout)
    }

    /// Waits for exit; panics if it is still running after `timeout`.
    pub fn expect_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.expect_exit_timed(timeout).0
    }

    /// Waits for exit (panics if it is still running after `timeout`) and asserts the exit
    /// code, saying `why` it should be that.
    pub fn expect_exit_code(&mut self, timeout: Duration, code: i32, why: &str) -> ExitStatus {
        let status = self.expect_exit(timeout);
        assert_eq!(status.code(), Some(code), "{}: {why}: {status}", self.id);
        status
    }

    /// Like `expect_exit`, also returning how long after its spawn it exited (to within the
    /// 5 ms poll).
    pub fn expect_exit_timed(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        let id = self.id.clone();
        let status = self
            .wait_exit(timeout)
            .unwrap_or_else(|| panic!("{id} still running after {timeout:?}"));
        (status, self.started.elapsed())
    }

    /// Non-blocking exit check.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.guard.try_wait()
    }

    pub fn is_running(&mut self) -> bool {
        self.try_wait().is_none()
    }

    /// SIGKILL (after SIGCONT) and reap; returns the status.
    pub fn kill(&mut self) -> ExitStatus {
        self.guard.kill()
    }

    /// Its stderr pipe (started with `Stderr::Piped`), once.
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.guard.child_mut().stderr.take()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its log once it holds `needle` (or after `timeout`, as it is then): its lines are
    /// written by a thread of their own, a little after what they tell (a child's start).
    pub fn log_with(&self, needle: &str, timeout: Duration) -> String {
        poll_for(timeout, || self.log_text(), |log| log.contains(needle)).unwrap_or_else(|l| l)
    }

    pub fn out_text(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits until its stdout has at least `n` lines; returns them all. Panics, showing them,
    /// after `timeout`.
    pub fn wait_out_lines(&self, n: usize, timeout: Duration) -> Vec<String> {
        poll_for(timeout, || lines(&self.out), |shown| shown.len() >= n).unwrap_or_else(|shown| {
            panic!(
                "{} printed {shown:?}, not {n} lines, after {timeout:?}",
                self.id
            )
        })
    }

    /// Panics, showing the log, if the log contains `needle`.
    pub fn assert_log_lacks(&self, needle: &str) {
        let log = self.log_text();
        assert!(
            !log.contains(needle),
            "{}'s log has {needle:?}:\n{log}",
            self.id
        );
    }

    /// The WARN and ERROR lines of its log.
    pub fn warnings(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .map(str::to_string)
            .collect()
    }
}
