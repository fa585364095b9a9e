//! leaderrun's behaviour against real etcd: election, handover, fencing, faults.
//!
//! Every test starts its own etcd, runs `leaderrun` instances whose child is
//! `examples/fenced_child` (each records its lifetime in one shared file), and
//! checks the records: who ran, when, with which fencing revision, and that no
//! two children ever overlapped. Each leaderrun's stderr goes to `<id>.log` in
//! the test's temp dir; a failing test prints every log's tail and the runs.

mod common;

use std::cell::RefCell;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{
    assert_no_overlap, busiest_member, etcdctl_at, fenced_child_path, file_tail, mono_now_ns,
    move_raft_leader, wait_until, ChildGuard, Ending, Etcd, EtcdCluster, FaultProxy, Mode, Records,
    Run, TempDir,
};
use nix::sys::signal::Signal;

const SEC: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);
const POLL: Duration = Duration::from_millis(20);
const LOG_TAIL: usize = 30;
/// How recently a fenced child must have written to count as running now
/// (it writes every 5 ms; this leaves room for a loaded machine).
const FRESH: Duration = Duration::from_millis(500);

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// ns from `t0` to `t`, or 0 if `t` is earlier.
fn since(t0: u64, t: u64) -> u64 {
    t.saturating_sub(t0)
}

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/// One test's world: its temp dir, the shared record file, the election name,
/// the etcd endpoints etcdctl uses, and the logs to print if the test fails.
struct Scene {
    dir: TempDir,
    records: PathBuf,
    election: String,
    etcd: String,
    logs: RefCell<Vec<(String, PathBuf)>>,
}

/// A running leaderrun; SIGKILLed on drop (its child dies with it).
struct Lr {
    id: String,
    log: PathBuf,
    guard: ChildGuard,
}

impl Scene {
    fn new(etcd_endpoints: &str) -> Scene {
        let dir = TempDir::new("leaderrun-core");
        let records = dir.join("records");
        Scene {
            dir,
            records,
            election: "svc".to_string(),
            etcd: etcd_endpoints.to_string(),
            logs: RefCell::new(Vec::new()),
        }
    }

    /// `fenced_child <records> extra...`.
    fn fenced(&self, extra: &[&str]) -> Vec<OsString> {
        let mut cmd = vec![fenced_child_path().into(), self.records.clone().into()];
        cmd.extend(extra.iter().map(OsString::from));
        cmd
    }

    /// A candidate on this scene's etcd running a fenced child.
    fn candidate(&self, id: &str, opts: &[&str], child: &[&str]) -> Lr {
        self.spawn(id, &self.etcd, opts, &self.fenced(child))
    }

    /// `leaderrun --endpoints E --election <election> --id ID opts... -- cmd...`,
    /// with no LEADERRUN_* variables inherited from the test environment.
    fn spawn(&self, id: &str, endpoints: &str, opts: &[&str], cmd: &[OsString]) -> Lr {
        let mut c = Command::new(env!("CARGO_BIN_EXE_leaderrun"));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("LEADERRUN_") {
                c.env_remove(k);
            }
        }
        c.args(["--endpoints", endpoints, "--election", &self.election])
            .args(["--id", id])
            .args(opts)
            .arg("--")
            .args(cmd);
        self.start(id, &mut c)
    }

    /// Spawns `c` with stdout to `<id>.out` and stderr to `<id>.log`.
    fn start(&self, id: &str, c: &mut Command) -> Lr {
        let log = self.dir.join(&format!("{id}.log"));
        let out = self.dir.join(&format!("{id}.out"));
        let err_file = std::fs::File::create(&log).expect("create log");
        let out_file = std::fs::File::create(&out).expect("create out");
        c.stdin(Stdio::null()).stdout(out_file).stderr(err_file);
        self.logs.borrow_mut().push((id.to_string(), log.clone()));
        self.logs
            .borrow_mut()
            .push((format!("{id} (stdout)"), out.clone()));
        Lr {
            id: id.to_string(),
            log,
            guard: ChildGuard::spawn(c),
        }
    }

    fn runs(&self) -> Vec<Run> {
        Records::read(&self.records)
    }

    /// Waits until `pred(runs)` holds, else panics naming `what`.
    fn wait_runs(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl FnMut(&[Run]) -> bool,
    ) -> Vec<Run> {
        Records::wait_for(&self.records, timeout, pred)
            .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for: {what}"))
    }

    /// Waits until candidate `id` has a child running (its n-th run, 1-based,
    /// counting its runs in start order); returns that run.
    fn wait_leading(&self, id: &str, nth: usize, timeout: Duration) -> Run {
        let runs = self.wait_runs(timeout, &format!("run #{nth} of {id}'s child"), |runs| {
            runs_of(runs, id).len() >= nth
        });
        runs_of(&runs, id)[nth - 1].clone()
    }

    /// The candidates' keys and values under `<election>/`, oldest first.
    fn candidates(&self) -> Vec<(String, String)> {
        let prefix = format!("{}/", self.election);
        let out = etcdctl_at(
            &self.etcd,
            &[
                "--command-timeout",
                "2s",
                "get",
                "--prefix",
                &prefix,
                "--sort-by",
                "CREATE",
            ],
        );
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

    /// Waits until exactly these ids (any order) campaign or lead in etcd.
    fn wait_candidates(&self, ids: &[&str], timeout: Duration) {
        let mut want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        want.sort();
        let mut last = Vec::new();
        let ok = wait_until(timeout, Duration::from_millis(50), || {
            let mut got: Vec<String> = self.candidates().into_iter().map(|(_, v)| v).collect();
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
        for (id, path) in self.logs.borrow().iter() {
            eprintln!(
                "===== {id}: {} =====\n{}",
                path.display(),
                file_tail(path, LOG_TAIL)
            );
        }
        match common::records::parse(&std::fs::read_to_string(&self.records).unwrap_or_default()) {
            Ok(runs) => {
                eprintln!("===== runs =====");
                for r in runs {
                    eprintln!("{r:?}");
                }
            }
            Err(e) => eprintln!("records unreadable: {e}"),
        }
    }
}

impl Lr {
    fn pid(&self) -> u32 {
        self.guard.pid()
    }

    fn signal(&self, sig: Signal) {
        self.guard.signal(sig)
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.guard.wait_timeout(timeout)
    }

    /// Waits for exit; panics if it is still running after `timeout`.
    fn expect_exit(&mut self, timeout: Duration) -> ExitStatus {
        let id = self.id.clone();
        self.wait_exit(timeout)
            .unwrap_or_else(|| panic!("leaderrun {id} still running after {timeout:?}"))
    }

    fn is_running(&mut self) -> bool {
        self.guard.try_wait().is_none()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `id`'s runs, in start order.
fn runs_of<'a>(runs: &'a [Run], id: &str) -> Vec<&'a Run> {
    runs.iter()
        .filter(|r| r.id.as_deref() == Some(id))
        .collect()
}

fn revision(run: &Run) -> i64 {
    run.revision
        .as_deref()
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("run without a numeric LEADERRUN_REVISION: {run:?}"))
}

/// The run of this pid, re-read from the file.
fn current(scene: &Scene, pid: u32) -> Run {
    scene
        .runs()
        .into_iter()
        .rev()
        .find(|r| r.pid == pid)
        .unwrap_or_else(|| panic!("no run with pid {pid}"))
}

/// The child is running now: no end line and a recent alive line.
fn running_now(run: &Run) -> bool {
    run.ending == Ending::Killed && run.seen_within(mono_now_ns(), FRESH)
}

/// Waits until the child `pid` has run for `age` (by its own records), then
/// returns all runs: an overlap with an older child still running shows up.
fn after_running(scene: &Scene, pid: u32, age: Duration) -> Vec<Run> {
    let age = age.as_nanos() as u64;
    scene.wait_runs(
        5 * SEC,
        &format!("child {pid} to run for {age} ns"),
        |runs| {
            runs.iter()
                .any(|r| r.pid == pid && r.last_seen_ns >= r.start_ns + age)
        },
    )
}

/// Lease ids etcd holds now (`etcdctl lease list`).
fn leases(etcd: &Etcd) -> Vec<String> {
    let out = etcd.etcdctl_ok(&["lease", "list"]);
    out.lines()
        .skip(1)
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

/// True if `cond` holds at every poll for the whole `window`.
fn holds_for(window: Duration, mut cond: impl FnMut() -> bool) -> bool {
    !wait_until(window, POLL, || !cond())
}

/// A process that exists and is not a zombie. (Orphans are reaped by PID 1,
/// which may take a while: a zombie is dead for our purposes.)
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !(state.starts_with('Z') || state.starts_with('X'))
        }
    }
}

fn file_has(path: &Path, needle: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| t.contains(needle))
}

// ---------------------------------------------------------------------------
// 1. One leader, one standby
// ---------------------------------------------------------------------------

#[test]
fn one_candidate_leads_and_a_second_one_waits() {
    let etcd = Etcd::single();
    let scene = Scene::new(&etcd.endpoints());
    let mut a = scene.candidate("A", &["--ttl", "3"], &[]);
    let run_a = scene.wait_leading("A", 1, 10 * SEC);
    assert!(run_a.revision.is_some(), "LEADERRUN_REVISION missing");

    let mut b = scene.candidate("B", &["--ttl", "3", "--log-format", "json"], &[]);
    scene.wait_candidates(&["A", "B"], 10 * SEC);
    // Longer than a TTL: keepalives, not luck, keep A leading.
    let quiet = holds_for(4 * SEC, || {
        let runs = scene.runs();
        runs_of(&runs, "B").is_empty() && running_now(&current(&scene, run_a.pid))
    });
    assert!(quiet, "B's child started, or A's stopped, while A led");
    assert!(a.is_running() && b.is_running());
    let runs = scene.runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let json = b.log_text();
    assert!(
        !json.is_empty() && json.lines().all(|l| l.starts_with('{') && l.ends_with('}')),
        "--log-format json wrote non-JSON lines:\n{json}"
    );
}

// ---------------------------------------------------------------------------
// 2. SIGTERM to the leader
// ---------------------------------------------------------------------------

#[test]
fn sigterm_to_the_leader_hands_over_well_under_the_ttl() {
    let etcd = Etcd::single();
    let scene = Scene::new(&etcd.endpoints());
    let mut a = scene.candidate("A", &["--ttl", "10"], &[]);
    let run_a = scene.wait_leading("A", 1, 10 * SEC);
    // B's child ignores SIGTERM: its turn shows the stop timeout and SIGKILL.
    let mut b = scene.candidate(
        "B",
        &["--ttl", "10", "--stop-timeout", "1s"],
        &["--ignore-term"],
    );
    scene.wait_candidates(&["A", "B"], 10 * SEC);

    let t0 = mono_now_ns();
    a.signal(Signal::SIGTERM);
    let run_b = scene.wait_leading("B", 1, 8 * SEC);
    let handover = since(t0, run_b.start_ns);
    assert!(
        handover < 3 * SEC.as_nanos() as u64,
        "handover took {:.3}s",
        secs(handover)
    );
    let status = a.expect_exit(5 * SEC);
    assert_eq!(
        status.code(),
        Some(0),
        "A's child exited 0 on SIGTERM: {status}"
    );
    assert_eq!(current(&scene, run_a.pid).ending, Ending::Term);

    // Second round: a child that ignores the stop signal is SIGKILLed after
    // --stop-timeout; leaderrun exits 128+9 and the next leader starts after.
    let _c = scene.candidate("C", &["--ttl", "10"], &[]);
    scene.wait_candidates(&["B", "C"], 10 * SEC);
    let t1 = mono_now_ns();
    b.signal(Signal::SIGTERM);
    let run_c = scene.wait_leading("C", 1, 10 * SEC);
    let handover = since(t1, run_c.start_ns);
    assert!(
        (900 * MS.as_nanos() as u64..5 * SEC.as_nanos() as u64).contains(&handover),
        "C started {:.3}s after SIGTERM to B (stop timeout 1 s)",
        secs(handover)
    );
    let status = b.expect_exit(5 * SEC);
    assert_eq!(
        status.code(),
        Some(137),
        "B's child was SIGKILLed: {status}"
    );
    let killed = current(&scene, run_b.pid);
    assert_eq!(killed.ending, Ending::Killed, "{killed:?}");
    assert!(killed.terms_ignored >= 1, "{killed:?}");
    assert_no_overlap(&scene.runs());
}

// ---------------------------------------------------------------------------
// 3. The child's own exit
// ---------------------------------------------------------------------------

#[test]
fn child_exit_with_on_exit_exit_ends_leaderrun_with_its_code() {
    let etcd = Etcd::single();
    let scene = Scene::new(&etcd.endpoints());
    let mut a = scene.candidate(
        "A",
        &["--ttl", "10", "--on-exit", "exit"],
        &["--exit-after", "2500", "--exit-code", "7"],
    );
    let run_a = scene.wait_leading("A", 1, 10 * SEC);
    let _b = scene.candidate("B", &["--ttl", "10"], &[]);
    scene.wait_candidates(&["A", "B"], 10 * SEC);
    assert!(
        running_now(&current(&scene, run_a.pid)),
        "A's child ended before B was a standby: the test's timing is too tight"
    );

    let status = a.expect_exit(10 * SEC);
    assert_eq!(
        status.code(),
        Some(7),
        "leaderrun must exit with its child's code: {status}"
    );
    let ended = current(&scene, run_a.pid);
    assert_eq!(ended.ending, Ending::Exit);
    let run_b = scene.wait_leading("B", 1, 5 * SEC);
    let gap = since(ended.last_seen_ns, run_b.start_ns);
    assert!(
        gap < 2 * SEC.as_nanos() as u64,
        "B started {:.3}s after A's child exited",
        secs(gap)
    );
    assert_no_overlap(&scene.runs());
}

#[test]
fn child_exit_with_on_exit_recampaign_makes_the_leader_a_standby() {
    let etcd = Etcd::single();
    let scene = Scene::new(&etcd.endpoints());
    let mut a = scene.candidate(
        "A",
        &["--ttl", "10", "--on-exit", "recampaign"],
        &["--exit-after", "2500", "--exit-code", "3"],
    );
    let first = scene.wait_leading("A", 1, 10 * SEC);
    let mut b = scene.candidate("B", &["--ttl", "10"], &[]);
    scene.wait_candidates(&["A", "B"], 10 * SEC);
    assert!(
        running_now(&current(&scene, first.pid)),
        "A's child ended too early"
    );

    // A's child exits by itself: B takes over at once; A stays, as a standby.
    let run_b = scene.wait_leading("B", 1, 10 * SEC);
    let ended = current(&scene, first.pid);
    assert_eq!(ended.ending, Ending::Exit);
    let gap = since(ended.last_seen_ns, run_b.start_ns);
    assert!(
        gap < 2 * SEC.as_nanos() as u64,
        "B started {:.3}s after A's child exited",
        secs(gap)
    );
    scene.wait_candidates(&["A", "B"], 10 * SEC);
    assert!(a.is_running(), "A exited instead of recampaigning");
    assert_eq!(
        runs_of(&scene.runs(), "A").len(),
        1,
        "A ran again while B led"
    );

    // B stops: A wins again, with a newer fencing token.
    b.signal(Signal::SIGTERM);
    assert_eq!(b.expect_exit(5 * SEC).code(), Some(0));
    let second = scene.wait_leading("A", 2, 5 * SEC);
    assert!(
        revision(&second) > revision(&run_b),
        "{second:?} after {run_b:?}"
    );
    assert!(a.is_running());
    assert_no_overlap(&scene.runs());
}

// ---------------------------------------------------------------------------
// 4. The leader cut off from etcd
// ---------------------------------------------------------------------------

#[test]
fn leader_cut_off_from_etcd_stops_its_child_before_the_standby_starts() {
    let etcd = Etcd::single();
    let scene = Scene::new(&etcd.endpoints());
    let proxy = FaultProxy::start(etcd.client_addr());
    let mut a = scene.spawn("A", &proxy.endpoint(), &["--ttl", "3"], &scene.fenced(&[]));
    let run_a = scene.wait_leading("A", 1, 10 * SEC);
    let mut b = scene.candidate("B", &["--ttl", "3"], &[]);
    scene.wait_candidates(&["A", "B"], 10 * SEC);

    let t0 = mono_now_ns();
    proxy.set_mode(Mode::Blackhole);
    let run_b = scene.wait_leading("B", 1, 3 * SEC + 5 * SEC);
    assert_no_overlap(&after_running(&scene, run_b.pid, 300 * MS));
    let ended = current(&scene, run_a.pid);
    assert_ne!(
        ended.ending,
        Ending::Killed,
        "A's child has no end line: {ended:?}"
    );
    assert_eq!(
        ended.ending,
        Ending::Term,
        "A's child should get the stop signal in time"
    );
    // Its lease lives at most until t0 + TTL (no keepalive got through after t0).
    let a_end = since(t0, ended.last_seen_ns);
    assert!(
        a_end < 3 * SEC.as_nanos() as u64,
        "A's child ran until t0+{:.3}s",
        secs(a_end)
    );
    let b_start = since(t0, run_b.start_ns);
    assert!(
        b_start > 2 * SEC.as_nanos() as u64,
        "B started {:.3}s after the cut: before A's lease could expire",
        secs(b_start)
    );
    assert_no_overlap(&scene.runs());
    assert!(
        a.is_running(),
        "A exited while cut off; it must keep trying"
    );

    // The link comes back: A rejoins as a standby and B keeps leading.
    proxy.set_mode(Mode::Pass);
    scene.wait_candidates(&["A", "B"], 20 * SEC);
    assert!(running_now(&current(&scene, run_b.pid)));
    assert_eq!(runs_of(&scene.runs(), "A").len(), 1);
    assert!(b.is_running());
    assert!(
        a.log_text().contains("WARN"),
        "A logged no warning about the cut:\n{}",
        a.log_text()
    );
    assert_no_overlap(&scene.runs());
}

// ---------------------------------------------------------------------------
// 5. SIGKILL of the leading leaderrun
// ---------------------------------------------------------------------------

#[test]
fn sigkill_of_the_leader_takes_its_child_down_and_the_standby_waits_the_ttl() {
    let etcd = Etcd::single();
    let scene = Scene::new(&etcd.endpoints());
    let mut a = scene.candidate("A", &["--ttl", "3"], &[]);
    let run_a = scene.wait_leading("A", 1, 10 * SEC);
    let _b = scene.candidate("B", &["--ttl", "3"], &[]);
    scene.wait_candidates(&["A", "B"], 10 * SEC);
    assert!(process_alive(run_a.pid));

    let t0 = mono_now_ns();
    a.guard.kill();
    assert!(
        wait_until(SEC, 5 * MS, || !process_alive(run_a.pid)),
        "A's child {} outlived A by more than 1 s",
        run_a.pid
    );
    let run_b = scene.wait_leading("B", 1, 3 * SEC + 5 * SEC);
    assert_no_overlap(&after_running(&scene, run_b.pid, 300 * MS));
    let b_start = since(t0, run_b.start_ns);
    // A's lease was renewed at most one keepalive interval (0.6 s) before the kill.
    assert!(
        b_start > 2 * SEC.as_nanos() as u64,
        "B started {:.3}s after A was killed: before A's lease expired",
        secs(b_start)
    );
    let dead = current(&scene, run_a.pid);
    assert!(
        since(t0, dead.last_seen_ns) < SEC.as_nanos() as u64,
        "{dead:?}"
    );
    assert_no_overlap(&scene.runs());
}

#[test]
fn sigkill_of_the_leader_takes_the_childs_whole_group_down() {
    // The command forks: a shell that runs the real program as its child
    // (the `; true` stops the shell from exec'ing it). A SIGKILLed leaderrun
    // cannot stop anything itself; its parent-death signal reaches the shell
    // only. The program must die too, or it runs on next to the new leader's.
    let etcd = Etcd::single();
    let scene = Scene::new(&etcd.endpoints());
    let fenced: Vec<String> = scene
        .fenced(&[])
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let wrapper: Vec<OsString> = vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("{} {}; true", fenced[0], fenced[1]).into(),
    ];
    let mut a = scene.spawn("A", &scene.etcd, &["--ttl", "3"], &wrapper);
    let run_a = scene.wait_leading("A", 1, 10 * SEC);
    let _b = scene.candidate("B", &["--ttl", "3"], &[]);
    scene.wait_candidates(&["A", "B"], 10 * SEC);

    a.guard.kill();
    let died = wait_until(SEC, 5 * MS, || !process_alive(run_a.pid));
    let run_b = scene.wait_leading("B", 1, 3 * SEC + 5 * SEC);
    let runs = after_running(&scene, run_b.pid, 300 * MS);
    assert!(
        died,
        "A's command forked a program ({}) that outlived the SIGKILLed leaderrun",
        run_a.pid
    );
    assert_no_overlap(&runs);
}

// ---------------------------------------------------------------------------
// 6. An operator deletes the leader key
// ---------------------------------------------------------------------------

#[test]
fn deleting_the_leader_key_stops_the_child_and_the_candidate_campaigns_again() {
    let etcd = Etcd::single();
    let scene = Scene::new(&etcd.endpoints());
    let mut a = scene.candidate("A", &["--ttl", "10"], &[]);
    let first = scene.wait_leading("A", 1, 10 * SEC);
    let keys = scene.candidates();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key = keys[0].0.clone();

    let t0 = mono_now_ns();
    etcd.etcdctl_ok(&["del", &key]);
    let ended = scene
        .wait_runs(5 * SEC, "A's first child to end", |runs| {
            runs.iter()
                .any(|r| r.pid == first.pid && r.ending != Ending::Killed)
        })
        .into_iter()
        .find(|r| r.pid == first.pid)
        .unwrap();
    assert_eq!(ended.ending, Ending::Term);
    let took = since(t0, ended.last_seen_ns);
    assert!(
        took < 2 * SEC.as_nanos() as u64,
        "child stopped {:.3}s after the delete",
        secs(took)
    );

    let second = scene.wait_leading("A", 2, 10 * SEC);
    assert!(
        revision(&second) > revision(&first),
        "{second:?} after {first:?}"
    );
    assert!(a.is_running());
    assert_no_overlap(&scene.runs());
}

// ---------------------------------------------------------------------------
// 7. Taking turns with `etcdctl elect`
// ---------------------------------------------------------------------------

fn etcdctl_cmd(endpoints: &str, args: &[&str]) -> Command {
    let mut c = Command::new(std::env::var("ETCDCTL_BIN").unwrap_or_else(|_| "etcdctl".into()));
    c.env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoints])
        .args(args);
    c
}

#[test]
fn leaderrun_and_etcdctl_elect_take_turns() {
    let etcd = Etcd::single();
    let scene = Scene::new(&etcd.endpoints());
    let name = scene.election.clone();

    // etcdctl elect leads first.
    let first = scene.start(
        "etcdctl-first",
        &mut etcdctl_cmd(&scene.etcd, &["elect", &name, "first"]),
    );
    let first_out = scene.dir.join("etcdctl-first.out");
    assert!(
        wait_until(10 * SEC, POLL, || file_has(&first_out, "first")),
        "etcdctl elect did not win an empty election"
    );
    let mut a = scene.candidate("lr-A", &["--ttl", "3"], &[]);
    scene.wait_candidates(&["first", "lr-A"], 10 * SEC);
    assert!(
        holds_for(2 * SEC, || scene.runs().is_empty()),
        "leaderrun's child started while etcdctl elect led"
    );

    // SIGINT makes etcdctl elect resign: leaderrun wins at once.
    let t0 = mono_now_ns();
    first.signal(Signal::SIGINT);
    let run = scene.wait_leading("lr-A", 1, 5 * SEC);
    let took = since(t0, run.start_ns);
    assert!(
        took < 3 * SEC.as_nanos() as u64,
        "leaderrun won {:.3}s after etcdctl resigned",
        secs(took)
    );

    // `etcdctl elect -l` shows leaderrun's id as the leader.
    let observer = scene.start(
        "etcdctl-observe",
        &mut etcdctl_cmd(&scene.etcd, &["elect", "-l", &name]),
    );
    let observe_out = scene.dir.join("etcdctl-observe.out");
    assert!(
        wait_until(5 * SEC, POLL, || file_has(&observe_out, "lr-A")),
        "etcdctl elect -l did not show lr-A"
    );
    drop(observer);
    let shown = std::fs::read_to_string(&observe_out).unwrap();
    let lines: Vec<&str> = shown.lines().collect();
    assert!(
        lines.len() >= 2 && lines[0].starts_with(&format!("{name}/")) && lines[1] == "lr-A",
        "etcdctl elect -l printed {shown:?}"
    );

    // Now etcdctl elect waits for leaderrun.
    let mut second = scene.start(
        "etcdctl-v2",
        &mut etcdctl_cmd(&scene.etcd, &["elect", &name, "v2"]),
    );
    let second_out = scene.dir.join("etcdctl-v2.out");
    scene.wait_candidates(&["lr-A", "v2"], 10 * SEC);
    assert!(
        holds_for(2 * SEC, || !file_has(&second_out, "v2")),
        "etcdctl elect won while leaderrun led"
    );
    a.signal(Signal::SIGTERM);
    assert!(
        wait_until(5 * SEC, POLL, || file_has(&second_out, "v2")),
        "etcdctl elect did not win after leaderrun's SIGTERM"
    );
    // leaderrun resigned only after its child was gone.
    assert_eq!(current(&scene, run.pid).ending, Ending::Term);
    assert_eq!(a.expect_exit(5 * SEC).code(), Some(0));
    assert!(
        second.is_running(),
        "etcdctl elect v2 should hold the leadership"
    );
}

// ---------------------------------------------------------------------------
// 8. The fencing token
// ---------------------------------------------------------------------------

#[test]
fn leaderrun_revision_grows_strictly_from_one_leader_to_the_next() {
    let etcd = Etcd::single();
    let scene = Scene::new(&etcd.endpoints());
    let mut all: Vec<Lr> = Vec::new();
    // One at a time, so they line up in this order.
    for (n, id) in ["c0", "c1", "c2"].into_iter().enumerate() {
        all.push(scene.candidate(id, &["--ttl", "3"], &[]));
        scene.wait_candidates(&["c0", "c1", "c2"][..=n], 10 * SEC);
    }
    scene.wait_leading("c0", 1, 10 * SEC);

    let handovers = 5;
    for round in 0..handovers {
        let runs = scene.wait_runs(5 * SEC, "a leader", |runs| runs.len() == round + 1);
        let leader_id = runs.last().unwrap().id.clone().unwrap();
        let idx = all.iter().position(|l| l.id == leader_id).unwrap();
        let mut leader = all.remove(idx);
        let t0 = mono_now_ns();
        leader.signal(Signal::SIGTERM);
        let next = scene.wait_runs(5 * SEC, "the next leader", |runs| runs.len() == round + 2);
        let took = since(t0, next.last().unwrap().start_ns);
        assert!(
            took < 3 * SEC.as_nanos() as u64,
            "round {round}: handover {:.3}s",
            secs(took)
        );
        assert_eq!(leader.expect_exit(5 * SEC).code(), Some(0));
        // Restart a candidate in its place.
        let id = format!("c{}", round + 3);
        all.push(scene.candidate(&id, &["--ttl", "3"], &[]));
        let ids: Vec<String> = all.iter().map(|l| l.id.clone()).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        scene.wait_candidates(&ids, 10 * SEC);
    }
    let runs = scene.runs();
    assert_eq!(runs.len(), handovers + 1, "{runs:?}");
    let revs: Vec<i64> = runs.iter().map(revision).collect();
    assert!(
        revs.windows(2).all(|w| w[0] < w[1]),
        "revisions not strictly growing: {revs:?}"
    );
    assert_no_overlap(&runs);
}

// ---------------------------------------------------------------------------
// 9. Signals passed to the child's group
// ---------------------------------------------------------------------------

#[test]
fn sighup_and_usr1_reach_the_childs_whole_group() {
    let etcd = Etcd::single();
    let scene = Scene::new(&etcd.endpoints());
    let got = scene.dir.join("signals");
    let ready = scene.dir.join("ready");
    // A shell with a background subshell: both in the child's process group.
    // Both loops end once the temp dir is gone, so a failed test leaks nothing.
    let script = format!(
        "(trap 'echo hup-grandchild >> {got}' HUP; while [ -e {dir} ]; do sleep 0.1; done) & \
         trap 'echo hup-child >> {got}' HUP; trap 'echo usr1-child >> {got}' USR1; \
         echo ready > {ready}; while [ -e {dir} ]; do sleep 0.1; done",
        got = got.display(),
        ready = ready.display(),
        dir = scene.dir.path().display(),
    );
    let cmd: Vec<OsString> = vec!["/bin/sh".into(), "-c".into(), script.into()];
    let mut a = scene.spawn("A", &scene.etcd, &["--ttl", "3"], &cmd);
    assert!(
        wait_until(10 * SEC, POLL, || ready.exists()),
        "the child never started"
    );

    a.signal(Signal::SIGHUP);
    assert!(
        wait_until(5 * SEC, POLL, || file_has(&got, "hup-child")
            && file_has(&got, "hup-grandchild")),
        "SIGHUP did not reach the child's group; got {:?}",
        std::fs::read_to_string(&got).unwrap_or_default()
    );
    a.signal(Signal::SIGUSR1);
    assert!(
        wait_until(5 * SEC, POLL, || file_has(&got, "usr1-child")),
        "SIGUSR1 did not reach the child"
    );
    assert!(
        a.is_running(),
        "leaderrun died of a signal meant for its child"
    );

    // SIGTERM kills the shell (no trap for it): 128 + 15.
    a.signal(Signal::SIGTERM);
    let status = a.expect_exit(10 * SEC);
    assert_eq!(status.code(), Some(143), "{status}");
}

// ---------------------------------------------------------------------------
// 10. A standby told to stop
// ---------------------------------------------------------------------------

#[test]
fn a_standby_exits_0_at_once_on_sigterm_or_sigint() {
    let etcd = Etcd::single();
    let scene = Scene::new(&etcd.endpoints());
    let mut a = scene.candidate("A", &["--ttl", "10"], &[]);
    let run_a = scene.wait_leading("A", 1, 10 * SEC);
    let mut b = scene.candidate("B", &["--ttl", "10"], &[]);
    let mut c = scene.candidate("C", &["--ttl", "10"], &[]);
    scene.wait_candidates(&["A", "B", "C"], 10 * SEC);

    // Signals meant for a child do nothing to a standby (it has no child).
    for sig in [Signal::SIGHUP, Signal::SIGUSR1, Signal::SIGUSR2] {
        b.signal(sig);
    }
    assert!(
        holds_for(SEC, || b.is_running()),
        "a standby died of HUP/USR1/USR2"
    );
    scene.wait_candidates(&["A", "B", "C"], 2 * SEC);

    for (standby, sig) in [(&mut b, Signal::SIGTERM), (&mut c, Signal::SIGINT)] {
        let t0 = Instant::now();
        standby.signal(sig);
        let status = standby.expect_exit(5 * SEC);
        let took = t0.elapsed();
        assert_eq!(status.code(), Some(0), "{} on {sig}: {status}", standby.id);
        assert!(
            took < 2 * SEC,
            "{} took {took:?} to exit on {sig}",
            standby.id
        );
    }
    // Their keys and leases are gone at once (revoked, not left to expire),
    // and A leads on.
    scene.wait_candidates(&["A"], 2 * SEC);
    let mut left = Vec::new();
    assert!(
        wait_until(2 * SEC, POLL, || {
            left = leases(&etcd);
            left.len() == 1
        }),
        "the standbys' leases were not revoked: {left:?}"
    );
    assert!(running_now(&current(&scene, run_a.pid)));
    assert!(a.is_running());
    assert_eq!(scene.runs().len(), 1);
}

// ---------------------------------------------------------------------------
// 11. etcd down at start-up
// ---------------------------------------------------------------------------

#[test]
fn a_candidate_started_while_etcd_is_down_waits_then_leads() {
    let mut etcd = Etcd::single();
    let scene = Scene::new(&etcd.endpoints());
    etcd.kill();
    let mut a = scene.candidate("A", &["--ttl", "3"], &[]);
    let mut quitter = scene.candidate("Q", &["--ttl", "3"], &[]);
    assert!(
        wait_until(10 * SEC, POLL, || a.log_text().contains("WARN")
            && quitter.log_text().contains("WARN")),
        "no warning while etcd is down"
    );
    // A candidate still waiting for etcd exits 0 at once on SIGTERM.
    let t0 = Instant::now();
    quitter.signal(Signal::SIGTERM);
    let status = quitter.expect_exit(5 * SEC);
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(t0.elapsed() < 2 * SEC, "took {:?}", t0.elapsed());
    assert!(
        holds_for(2 * SEC, || scene.runs().is_empty()),
        "a child started without etcd"
    );
    assert!(a.is_running(), "leaderrun gave up while etcd was down");

    etcd.restart();
    let run = scene.wait_leading("A", 1, 15 * SEC);
    assert!(revision(&run) > 0);
    assert!(a.is_running());
}

// ---------------------------------------------------------------------------
// 12. A 3-member cluster loses a member
// ---------------------------------------------------------------------------

#[test]
fn losing_one_cluster_member_does_not_restart_the_child() {
    let mut cluster = EtcdCluster::start(3);
    let scene = Scene::new(&cluster.endpoints());
    let mut a = scene.candidate("A", &["--ttl", "3"], &[]);
    let run = scene.wait_leading("A", 1, 10 * SEC);

    // Kill the member carrying A's keepalive stream (not the raft leader:
    // move the raft leadership away first if needed), so that the stream
    // must be re-established on another member within the lease budget.
    let victim = busiest_member(&cluster, a.pid(), 2 * SEC);
    let leader = cluster.wait_leader(10 * SEC);
    if leader == victim {
        let to = (victim + 1) % cluster.size();
        move_raft_leader(&mut cluster, leader, to);
    }
    cluster.kill(victim);
    // Twice the TTL: a lease that was not kept alive would have been lost.
    assert!(
        holds_for(6 * SEC, || running_now(&current(&scene, run.pid))),
        "the child stopped after member {victim} died"
    );
    let runs = scene.runs();
    assert_eq!(runs.len(), 1, "the child was restarted: {runs:?}");
    assert_eq!(runs[0].pid, run.pid);
    assert!(a.is_running());
    assert!(
        a.log_text().contains("keepalive stream"),
        "the keepalive stream never moved: the test did not exercise the failover"
    );
}

// ---------------------------------------------------------------------------
// Extra: the deadline with a child that ignores the stop signal, and the
// phantom-leadership trap
// ---------------------------------------------------------------------------

#[test]
fn leader_cut_off_with_a_child_ignoring_sigterm_kills_it_before_the_lease_expires() {
    let etcd = Etcd::single();
    let scene = Scene::new(&etcd.endpoints());
    let proxy = FaultProxy::start(etcd.client_addr());
    let cmd = scene.fenced(&["--ignore-term"]);
    let mut a = scene.spawn("A", &proxy.endpoint(), &["--ttl", "3"], &cmd);
    let run_a = scene.wait_leading("A", 1, 10 * SEC);
    let _b = scene.candidate("B", &["--ttl", "3"], &[]);
    scene.wait_candidates(&["A", "B"], 10 * SEC);

    let t0 = mono_now_ns();
    proxy.set_mode(Mode::Blackhole);
    let run_b = scene.wait_leading("B", 1, 3 * SEC + 5 * SEC);
    assert_no_overlap(&after_running(&scene, run_b.pid, 300 * MS));
    let killed = current(&scene, run_a.pid);
    assert_eq!(killed.ending, Ending::Killed, "{killed:?}");
    assert!(
        killed.terms_ignored >= 1,
        "no stop signal before SIGKILL: {killed:?}"
    );
    // SIGKILL at D - m, D <= t0 + TTL.
    let a_end = since(t0, killed.last_seen_ns);
    assert!(
        a_end < 3 * SEC.as_nanos() as u64,
        "A's child ran until t0+{:.3}s",
        secs(a_end)
    );
    assert!(!process_alive(run_a.pid));
    assert!(since(t0, run_b.start_ns) > 2 * SEC.as_nanos() as u64);
    assert_no_overlap(&scene.runs());
    assert!(a.is_running());
}

#[test]
fn a_frozen_standby_whose_lease_expired_does_not_lead_after_it_thaws() {
    let etcd = Etcd::single();
    let scene = Scene::new(&etcd.endpoints());
    let mut a = scene.candidate("A", &["--ttl", "3"], &[]);
    scene.wait_leading("A", 1, 10 * SEC);
    let mut b = scene.candidate("B", &["--ttl", "3"], &[]);
    scene.wait_candidates(&["A", "B"], 10 * SEC);
    let _c = scene.candidate("C", &["--ttl", "3"], &[]);
    scene.wait_candidates(&["A", "B", "C"], 10 * SEC);

    // B freezes while its campaign is pending; its lease expires, its key goes.
    b.signal(Signal::SIGSTOP);
    scene.wait_candidates(&["A", "C"], 3 * SEC + 5 * SEC);
    // A resigns: the server answers both pending campaigns, B's included
    // although B's key is gone (etcd issue 19597: phantom leadership).
    a.signal(Signal::SIGTERM);
    assert_eq!(a.expect_exit(5 * SEC).code(), Some(0));
    let run_c = scene.wait_leading("C", 1, 5 * SEC);
    b.signal(Signal::SIGCONT);
    assert!(
        holds_for(3 * SEC, || runs_of(&scene.runs(), "B").is_empty()),
        "B started a child after its lease expired, while C leads"
    );
    assert!(running_now(&current(&scene, run_c.pid)));
    // B campaigns again with a fresh lease, as a standby behind C.
    scene.wait_candidates(&["B", "C"], 10 * SEC);
    assert!(b.is_running());
    assert_no_overlap(&scene.runs());
}

#[test]
fn a_standby_whose_key_was_deleted_never_leads_out_of_turn_and_gets_back_in_line() {
    let etcd = Etcd::single();
    let scene = Scene::new(&etcd.endpoints());
    let mut a = scene.candidate("A", &["--ttl", "10"], &[]);
    scene.wait_leading("A", 1, 10 * SEC);
    let mut b = scene.candidate("B", &["--ttl", "10"], &[]);
    scene.wait_candidates(&["A", "B"], 10 * SEC);
    let _c = scene.candidate("C", &["--ttl", "10"], &[]);
    scene.wait_candidates(&["A", "B", "C"], 10 * SEC);

    // B's key goes, its lease stays. B's pending campaign alone would wait on for the keys
    // created before its old one, and be told "elected" when A resigns although C is first
    // (phantom leadership). B must not lead out of turn, and must get back in line.
    let (b_key, _) = scene
        .candidates()
        .into_iter()
        .find(|(_, v)| v == "B")
        .expect("B's key");
    etcd.etcdctl_ok(&["del", &b_key]);
    a.signal(Signal::SIGTERM);
    assert_eq!(a.expect_exit(5 * SEC).code(), Some(0));
    let run_c = scene.wait_leading("C", 1, 5 * SEC);
    assert!(
        holds_for(3 * SEC, || runs_of(&scene.runs(), "B").is_empty()),
        "B started a child out of turn while C leads"
    );
    assert!(running_now(&current(&scene, run_c.pid)));
    // B is back in line, behind C, whether it noticed the deletion at once (its key watch) or
    // only when A resigned (its campaign's "elected" failed verification).
    scene.wait_candidates(&["B", "C"], 10 * SEC);
    assert!(b.is_running());
    assert_no_overlap(&scene.runs());
}

#[test]
fn etcd_frozen_longer_than_the_ttl_stops_the_leaders_child_and_nobody_overlaps() {
    let mut etcd = Etcd::single();
    let scene = Scene::new(&etcd.endpoints());
    let mut a = scene.candidate("A", &["--ttl", "3"], &[]);
    let run_a = scene.wait_leading("A", 1, 10 * SEC);
    let mut b = scene.candidate("B", &["--ttl", "3"], &[]);
    scene.wait_candidates(&["A", "B"], 10 * SEC);

    let t0 = mono_now_ns();
    etcd.freeze();
    let ended = scene
        .wait_runs(5 * SEC, "A's child to stop while etcd is frozen", |runs| {
            runs.iter()
                .any(|r| r.pid == run_a.pid && r.ending != Ending::Killed)
        })
        .into_iter()
        .find(|r| r.pid == run_a.pid)
        .unwrap();
    assert_eq!(ended.ending, Ending::Term);
    let a_end = since(t0, ended.last_seen_ns);
    assert!(
        a_end < 3 * SEC.as_nanos() as u64,
        "A's child ran until t0+{:.3}s",
        secs(a_end)
    );
    // Past the TTL, frozen: nobody may run a child.
    assert!(
        holds_for(2 * SEC, || scene.runs().len() == 1),
        "a child started while etcd was frozen"
    );
    assert!(a.is_running() && b.is_running());

    etcd.thaw();
    let runs = scene.wait_runs(20 * SEC, "a leader after the thaw", |runs| runs.len() >= 2);
    let next = runs.last().unwrap().clone();
    assert!(
        revision(&next) > revision(&run_a),
        "{next:?} after {run_a:?}"
    );
    assert_no_overlap(&after_running(&scene, next.pid, 300 * MS));
    // Exactly one child runs, and both candidates are back.
    scene.wait_candidates(&["A", "B"], 15 * SEC);
    assert!(
        holds_for(SEC, || {
            let runs = scene.runs();
            runs.iter().filter(|r| running_now(r)).count() == 1 && runs.len() == 2
        }),
        "not exactly one child after the thaw"
    );
    assert!(a.is_running() && b.is_running());
}

#[test]
fn an_etcd_that_refuses_us_is_a_fatal_error() {
    // etcd 3.4 grants leases without authentication; the election service refuses the campaign
    // with an `Unknown` status that wraps "user name is empty". That must end leaderrun (exit 1),
    // not be retried for ever.
    let etcd = Etcd::single();
    etcd.etcdctl_ok(&["user", "add", "root:secret"]);
    etcd.etcdctl_ok(&["auth", "enable"]);
    let scene = Scene::new(&etcd.endpoints());
    let mut a = scene.candidate("A", &["--ttl", "3"], &[]);
    let status = a.expect_exit(10 * SEC);
    assert_eq!(status.code(), Some(1), "{status}");
    assert!(
        file_has(&a.log, "user name is empty"),
        "the log should say why"
    );
    assert!(scene.runs().is_empty(), "the child must not have started");
}
