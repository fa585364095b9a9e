//! Fault injection: leaderrun against real etcd processes whose links, members and leases are
//! broken on purpose. Every scenario checks, from the fenced children's own records, that no two
//! children ever ran at once, plus its own expectation (how fast, or that nothing moved at all).
//!
//! Measured figures (failover gaps, stop latencies, recovery times) are printed with
//! `eprintln!`: run `cargo test --test faults -- --nocapture` to see them.
//!
//! Each leaderrun's stderr goes to `<id>.log` in the test's temp dir; a failing test prints
//! every log's tail, the timeline of injected faults (wall clock and CLOCK_MONOTONIC, to line
//! the logs up with the records) and the runs.

mod common;

use std::cell::RefCell;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    assert_no_overlap, busiest_member, etcdctl_at, fenced_child_path, file_tail, mono_now_ns,
    move_raft_leader, wait_until, ChildGuard, Ending, Etcd, EtcdCluster, FaultProxy, Mode, Records,
    Run, TempDir,
};
use nix::sys::signal::Signal;

const SEC: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);
const POLL: Duration = Duration::from_millis(20);
const LOG_TAIL: usize = 40;
/// How recently a fenced child must have written to count as running now
/// (it writes every 5 ms; this leaves room for a loaded machine).
const FRESH: Duration = Duration::from_millis(500);

fn ns(d: Duration) -> u64 {
    d.as_nanos() as u64
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn ms_of(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// ns from `t0` to `t`, or 0 if `t` is earlier.
fn since(t0: u64, t: u64) -> u64 {
    t.saturating_sub(t0)
}

/// Wall clock as the logs print it (UTC, seconds within the day), for the timeline.
fn wall() -> String {
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

// ---------------------------------------------------------------------------
// Harness (after tests/core.rs)
// ---------------------------------------------------------------------------

/// One test's world: its temp dir, the shared record file, the election name,
/// the etcd endpoints etcdctl uses, the logs to print if the test fails, and
/// a timeline of what the test did.
struct Scene {
    name: &'static str,
    dir: TempDir,
    records: PathBuf,
    election: String,
    etcd: String,
    logs: RefCell<Vec<(String, PathBuf)>>,
    timeline: RefCell<Vec<String>>,
}

/// A running leaderrun; SIGKILLed on drop (its child dies with it).
struct Lr {
    id: String,
    log: PathBuf,
    guard: ChildGuard,
}

impl Scene {
    fn new(name: &'static str, etcd_endpoints: &str) -> Scene {
        let dir = TempDir::new("leaderrun-faults");
        let records = dir.join("records");
        let scene = Scene {
            name,
            dir,
            records,
            election: "svc".to_string(),
            etcd: etcd_endpoints.to_string(),
            logs: RefCell::new(Vec::new()),
            timeline: RefCell::new(Vec::new()),
        };
        scene.mark("scene set up");
        scene
    }

    /// Notes an event on the timeline (printed on failure), with both clocks.
    fn mark(&self, what: &str) -> u64 {
        let mono = mono_now_ns();
        self.timeline
            .borrow_mut()
            .push(format!("{} mono={:.3}s {what}", wall(), secs(mono)));
        mono
    }

    /// Prints a measured figure, tagged with the test's name.
    fn report(&self, what: &str) {
        eprintln!("[faults::{}] {what}", self.name);
        self.mark(&format!("measured: {what}"));
    }

    /// `fenced_child <records> extra...`.
    fn fenced(&self, extra: &[&str]) -> Vec<OsString> {
        let mut cmd = vec![fenced_child_path().into(), self.records.clone().into()];
        cmd.extend(extra.iter().map(OsString::from));
        cmd
    }

    /// A candidate on this scene's etcd endpoints running a fenced child.
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
        let log = self.dir.join(&format!("{id}.log"));
        let err_file = std::fs::File::create(&log).expect("create log");
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err_file);
        self.logs.borrow_mut().push((id.to_string(), log.clone()));
        self.mark(&format!(
            "start leaderrun {id} --endpoints {endpoints} {opts:?}"
        ));
        Lr {
            id: id.to_string(),
            log,
            guard: ChildGuard::spawn(&mut c),
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

    /// Waits until candidate `id` has a child running (its n-th run, 1-based).
    fn wait_leading(&self, id: &str, nth: usize, timeout: Duration) -> Run {
        let runs = self.wait_runs(timeout, &format!("run #{nth} of {id}'s child"), |runs| {
            runs_of(runs, id).len() >= nth
        });
        runs_of(&runs, id)[nth - 1].clone()
    }

    /// Waits for the `n`-th run overall (1-based) and returns it.
    fn wait_nth_run(&self, n: usize, timeout: Duration, what: &str) -> Run {
        let runs = self.wait_runs(timeout, what, |runs| runs.len() >= n);
        runs[n - 1].clone()
    }

    /// The child `pid` as recorded now.
    fn current(&self, pid: u32) -> Run {
        self.runs()
            .into_iter()
            .rev()
            .find(|r| r.pid == pid)
            .unwrap_or_else(|| panic!("no run with pid {pid}"))
    }

    /// Waits until the child `pid` wrote its end line (or, with `killed_ok`, stopped writing
    /// for a while); returns its run.
    fn wait_ended(&self, pid: u32, timeout: Duration, killed_ok: bool) -> Run {
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
                "--order",
                "ASCEND",
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

    /// Waits until the child `pid` has run for `age` (by its own records), then returns all
    /// runs: an overlap with an older child still running shows up.
    fn after_running(&self, pid: u32, age: Duration) -> Vec<Run> {
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
        match common::records::parse(&std::fs::read_to_string(&self.records).unwrap_or_default()) {
            Ok(runs) => {
                eprintln!("===== runs =====");
                for r in runs {
                    eprintln!(
                        "{r:?} (start mono={:.3}s, last seen mono={:.3}s)",
                        secs(r.start_ns),
                        secs(r.last_seen_ns)
                    );
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

    /// Waits for exit; panics if it is still running after `timeout`.
    fn expect_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let id = self.id.clone();
        self.guard
            .wait_timeout(timeout)
            .unwrap_or_else(|| panic!("leaderrun {id} still running after {timeout:?}"))
    }

    fn is_running(&mut self) -> bool {
        self.guard.try_wait().is_none()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The WARN and ERROR lines of its log.
    fn warnings(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .map(str::to_string)
            .collect()
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

/// The child is running now: no end line and a recent alive line.
fn running_now(run: &Run) -> bool {
    run.ending == Ending::Killed && run.seen_within(mono_now_ns(), FRESH)
}

/// True if `cond` holds at every poll for the whole `window`.
fn holds_for(window: Duration, mut cond: impl FnMut() -> bool) -> bool {
    !wait_until(window, POLL, || !cond())
}

/// Holds for `window` that `pid` is the only child and it runs; panics naming `what`.
fn only_child_runs_for(scene: &Scene, pid: u32, window: Duration, what: &str) {
    let mut last = Vec::new();
    let ok = holds_for(window, || {
        last = scene.runs();
        last.len() == 1 && last[0].pid == pid && running_now(&last[0])
    });
    assert!(
        ok,
        "{what}: the child {pid} stopped or another child started: {last:?}"
    );
}

/// The one run that is running now, if exactly one is.
fn the_running(runs: &[Run]) -> Option<Run> {
    let now = mono_now_ns();
    let running: Vec<&Run> = runs
        .iter()
        .filter(|r| r.ending == Ending::Killed && r.seen_within(now, FRESH))
        .collect();
    (running.len() == 1).then(|| running[0].clone())
}

// ---------------------------------------------------------------------------
// Cluster helpers (after tests/core.rs)
// ---------------------------------------------------------------------------

/// `etcdctl put key` with a value of `len` bytes, given on stdin (too long for an argument).
fn put_big(endpoint: &str, key: &str, len: usize) {
    use std::io::Write;
    let mut child = Command::new(std::env::var("ETCDCTL_BIN").unwrap_or_else(|_| "etcdctl".into()))
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            endpoint,
            "--command-timeout",
            "10s",
            "put",
            key,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn etcdctl");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(&vec![b'x'; len]).expect("write the value");
    drop(stdin);
    let out = child.wait_with_output().expect("etcdctl put");
    assert!(
        out.status.success(),
        "etcdctl put {key} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// 1. The leader's link blackholed
// ---------------------------------------------------------------------------

/// Each candidate reaches etcd through its own proxy, so whoever leads can be cut off. Three
/// rounds: the leader's link goes dark, its child must end (gracefully: stop signal at
/// `D - m - G`) before the lease can expire, and the standby's start after that.
#[test]
fn leader_link_blackholed_stops_the_child_before_the_standby_starts() {
    leader_link_cut("blackhole", Mode::Blackhole, 3);
}

/// The same with every connection of the leader reset, and new ones reset at once (a firewall
/// rejecting, a proxy restarting): errors come fast instead of silence.
#[test]
fn leader_link_reset_stops_the_child_before_the_standby_starts() {
    leader_link_cut("reset", Mode::Reset, 2);
}

/// `rounds` failovers, each by cutting the current leader's link with `mode` (TTL 3).
fn leader_link_cut(name: &'static str, mode: Mode, rounds: usize) {
    const TTL: u32 = 3;
    let etcd = Etcd::single();
    let scene = Scene::new(name, &etcd.endpoints());
    let proxies = [
        FaultProxy::start(etcd.client_addr()),
        FaultProxy::start(etcd.client_addr()),
    ];
    let ids = ["A", "B"];
    let ttl = TTL.to_string();
    let mut lrs: Vec<Lr> = (0..2)
        .map(|i| {
            let lr = scene.spawn(
                ids[i],
                &proxies[i].endpoint(),
                &["--ttl", &ttl],
                &scene.fenced(&[]),
            );
            if i == 0 {
                scene.wait_leading("A", 1, 10 * SEC);
            }
            lr
        })
        .collect();
    scene.wait_candidates(&ids, 10 * SEC);

    let mut gaps = Vec::new();
    for round in 0..rounds {
        let runs = scene.runs();
        assert_eq!(runs.len(), round + 1, "{runs:?}");
        let old = runs.last().unwrap().clone();
        assert!(running_now(&scene.current(old.pid)), "{old:?}");
        let leader = ids
            .iter()
            .position(|id| old.id.as_deref() == Some(id))
            .unwrap();
        let t0 = scene.mark(&format!(
            "round {round}: {mode:?} on {}'s link",
            ids[leader]
        ));
        proxies[leader].set_mode(mode);

        let new = scene.wait_nth_run(
            round + 2,
            (TTL + 8) * SEC,
            "the standby's child after the cut",
        );
        assert_no_overlap(&scene.after_running(new.pid, 300 * MS));
        let ended = scene.current(old.pid);
        assert_eq!(
            new.id.as_deref(),
            Some(ids[1 - leader]),
            "the cut-off leader's candidate ran again: {new:?}"
        );
        assert_eq!(
            ended.ending,
            Ending::Term,
            "the old child should get the stop signal in time and stop by itself: {ended:?}"
        );
        // No keepalive sent after t0 was answered: D <= t0 + TTL.
        let old_end = since(t0, ended.last_seen_ns);
        assert!(
            old_end < ns(TTL * SEC),
            "round {round}: the old child ran until t0+{:.3}s, past its lease deadline",
            secs(old_end)
        );
        assert!(new.start_ns > ended.last_seen_ns, "{ended:?} {new:?}");
        // The old lease was renewed at most one keepalive interval (TTL/5) before t0.
        let new_start = since(t0, new.start_ns);
        assert!(
            new_start > ns(TTL * SEC - TTL * SEC / 5) - ns(200 * MS),
            "round {round}: the standby started {:.3}s after the cut, before the old lease \
             could expire",
            secs(new_start)
        );
        assert!(
            revision(&new) > revision(&old),
            "fencing token did not grow: {old:?} then {new:?}"
        );
        let gap = new.start_ns - ended.last_seen_ns;
        gaps.push(gap);
        scene.report(&format!(
            "round {round}: cut at t0; old child ended t0+{:.3}s, new child started t0+{:.3}s; \
             failover (old end -> new start) {:.0} ms",
            secs(old_end),
            secs(new_start),
            ms_of(gap)
        ));

        scene.mark(&format!("round {round}: heal {}'s link", ids[leader]));
        proxies[leader].set_mode(Mode::Pass);
        scene.wait_candidates(&ids, 20 * SEC);
        assert!(running_now(&scene.current(new.pid)), "{new:?}");
    }
    let runs = scene.runs();
    assert_eq!(runs.len(), rounds + 1, "{runs:?}");
    assert_no_overlap(&runs);
    for lr in &mut lrs {
        assert!(lr.is_running(), "{} exited", lr.id);
        assert!(
            lr.log_text().contains("WARN"),
            "{} logged no warning about its cut:\n{}",
            lr.id,
            lr.log_text()
        );
    }
    gaps.sort();
    scene.report(&format!(
        "failover gaps (ms): {:?}",
        gaps.iter().map(|g| ms_of(*g).round()).collect::<Vec<_>>()
    ));
}

/// Short blips (blackholed for less than one keepalive interval, then healed; the proxy resets
/// the connections that lost bytes) cost at most one keepalive: the child must not stop.
#[test]
fn link_blips_shorter_than_a_keepalive_interval_do_not_fail_over() {
    const TTL: u32 = 3;
    let etcd = Etcd::single();
    let scene = Scene::new("blips", &etcd.endpoints());
    let proxy = FaultProxy::start(etcd.client_addr());
    let mut a = scene.spawn(
        "A",
        &proxy.endpoint(),
        &["--ttl", &TTL.to_string()],
        &scene.fenced(&[]),
    );
    let run = scene.wait_leading("A", 1, 10 * SEC);
    let _b = scene.candidate("B", &["--ttl", &TTL.to_string()], &[]);
    scene.wait_candidates(&["A", "B"], 10 * SEC);

    // k = 600 ms at TTL 3; blips of 400 ms at varied phases, 2.5 s apart (a full recovery
    // of the deadline in between).
    for (round, offset) in [0u64, 170, 340, 510].into_iter().enumerate() {
        std::thread::sleep(Duration::from_millis(offset));
        scene.mark(&format!("blip {round}: blackhole 400 ms"));
        proxy.set_mode(Mode::Blackhole);
        std::thread::sleep(400 * MS);
        proxy.set_mode(Mode::Pass);
        scene.mark(&format!("blip {round}: healed"));
        only_child_runs_for(&scene, run.pid, 2500 * MS, &format!("blip {round}"));
    }
    assert!(a.is_running());
    scene.report(&format!("A's warnings: {:#?}", a.warnings()));
    assert!(
        !a.log_text().contains("leadership lost"),
        "{}",
        a.log_text()
    );
}

// ---------------------------------------------------------------------------
// 2. A slow link
// ---------------------------------------------------------------------------

/// 200 ms each way (400 ms round trip) is less than the keepalive interval (1 s at TTL 5) and
/// within the round-trip allowance budget: leadership must hold, with no restart and no
/// "leadership lost".
#[test]
fn slow_link_200ms_each_way_does_not_fail_over() {
    const TTL: u32 = 5;
    let etcd = Etcd::single();
    let scene = Scene::new("latency", &etcd.endpoints());
    let proxy = FaultProxy::start(etcd.client_addr());
    let a = scene.spawn(
        "A",
        &proxy.endpoint(),
        &["--ttl", &TTL.to_string()],
        &scene.fenced(&[]),
    );
    let run_a = scene.wait_leading("A", 1, 10 * SEC);
    let _b = scene.candidate("B", &["--ttl", &TTL.to_string()], &[]);
    scene.wait_candidates(&["A", "B"], 10 * SEC);

    scene.mark("link slowed: 200 ms each way");
    proxy.set_mode(Mode::Latency(200 * MS));
    only_child_runs_for(&scene, run_a.pid, 12 * SEC, "with 200 ms latency each way");

    // The latency really applied: a request through the proxy takes >= 2 x 200 ms.
    let t = Instant::now();
    let out = etcdctl_at(
        &proxy.endpoint(),
        &["--command-timeout", "5s", "get", "probe"],
    );
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "etcdctl through the slow proxy failed"
    );
    assert!(took >= 400 * MS, "the proxy did not delay: {took:?}");
    scene.report(&format!(
        "a request through the slowed link took {took:?} (etcdctl, including connection setup)"
    ));

    proxy.set_mode(Mode::Pass);
    only_child_runs_for(&scene, run_a.pid, SEC, "after the link healed");
    let warnings = a.warnings();
    scene.report(&format!("A's warnings: {warnings:#?}"));
    assert!(
        !warnings.iter().any(|l| l.contains("leadership lost")),
        "leadership lost on a link with 200 ms latency each way:\n{}",
        warnings.join("\n")
    );
    let runs = scene.runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
}

// ---------------------------------------------------------------------------
// 3. A 3-member cluster loses members
// ---------------------------------------------------------------------------

/// The member carrying the streams dies, then every member is killed and restarted in turn
/// (the raft leadership moved away first: losing the raft leader is the next test). While a
/// quorum lives the child keeps running: the streams move to another member before the deadline.
#[test]
fn cluster_members_killed_in_turn_do_not_restart_the_child() {
    const TTL: u32 = 5;
    let mut cluster = EtcdCluster::start(3);
    let scene = Scene::new("members", &cluster.endpoints());
    let mut a = scene.candidate("A", &["--ttl", &TTL.to_string()], &[]);
    let run = scene.wait_leading("A", 1, 10 * SEC);
    let _b = scene.candidate("B", &["--ttl", &TTL.to_string()], &[]);
    scene.wait_candidates(&["A", "B"], 10 * SEC);

    let victim = busiest_member(&cluster, a.pid(), 3 * SEC);
    let leader = cluster.wait_leader(10 * SEC);
    if leader == victim {
        move_raft_leader(&mut cluster, leader, (victim + 1) % 3);
    }
    scene.mark(&format!("kill member m{victim} (carries A's keepalives)"));
    cluster.kill(victim);
    only_child_runs_for(
        &scene,
        run.pid,
        (TTL + 1) * SEC,
        &format!("member m{victim} (A's streams) killed"),
    );
    assert!(
        a.log_text().contains("keepalive stream"),
        "the keepalive stream never moved: the test did not exercise the failover"
    );
    cluster.restart(victim);
    scene.mark(&format!("member m{victim} back"));

    for i in 0..cluster.size() {
        let leader = cluster.wait_leader(10 * SEC);
        if leader == i {
            move_raft_leader(&mut cluster, leader, (i + 1) % 3);
        }
        scene.mark(&format!("kill member m{i}"));
        cluster.kill(i);
        only_child_runs_for(&scene, run.pid, 3 * SEC, &format!("member m{i} killed"));
        cluster.restart(i);
        scene.mark(&format!("member m{i} back"));
        only_child_runs_for(&scene, run.pid, SEC, &format!("member m{i} restarted"));
    }
    let runs = scene.runs();
    assert_eq!(runs.len(), 1, "the child was restarted: {runs:?}");
    assert!(a.is_running());
    scene.wait_candidates(&["A", "B"], 10 * SEC);
    scene.report(&format!("A's warnings: {:#?}", a.warnings()));
}

/// The member carrying the leader's streams hangs (SIGSTOP: its sockets stay open and answer
/// nothing, like a stalled VM or a dead network path) while the raft leadership is elsewhere.
/// A quorum lives on; the stuck keepalive stream must be replaced on another member before the
/// deadline, so the child keeps running. Three rounds (thawed in between).
#[test]
fn cluster_member_carrying_the_streams_hangs_without_restarting_the_child() {
    const TTL: u32 = 5;
    let mut cluster = EtcdCluster::start(3);
    let scene = Scene::new("member-hangs", &cluster.endpoints());
    let mut a = scene.candidate("A", &["--ttl", &TTL.to_string()], &[]);
    let run = scene.wait_leading("A", 1, 10 * SEC);
    let _b = scene.candidate("B", &["--ttl", &TTL.to_string()], &[]);
    scene.wait_candidates(&["A", "B"], 10 * SEC);

    for round in 0..3 {
        let victim = busiest_member(&cluster, a.pid(), 3 * SEC);
        let leader = cluster.wait_leader(10 * SEC);
        if leader == victim {
            move_raft_leader(&mut cluster, leader, (victim + 1) % 3);
        }
        scene.mark(&format!(
            "round {round}: freeze member m{victim} (carries A's keepalives)"
        ));
        cluster.freeze(victim);
        // Past the lease deadline of any keepalive sent before the freeze.
        only_child_runs_for(
            &scene,
            run.pid,
            (TTL + 1) * SEC,
            &format!("round {round}: member m{victim} (A's streams) frozen"),
        );
        cluster.thaw(victim);
        cluster.wait_healthy(victim, 20 * SEC);
        scene.mark(&format!("round {round}: m{victim} thawed"));
    }
    assert_eq!(scene.runs().len(), 1);
    assert!(a.is_running());
    scene.report(&format!("A's warnings: {:#?}", a.warnings()));
}

/// The raft leader dies (three times, restarted in between). A quorum remains; the keepalives stall
/// only while the two others elect a new leader (etcd's election timeout is 1 s). The child
/// must keep running.
#[test]
fn raft_leader_killed_does_not_restart_the_child() {
    // A raft election takes up to two election timeouts (2 s with etcd's defaults), during
    // which no keepalive is answered; the default TTL leaves T - m - G = 6 s for it (TTL 5
    // leaves 2.5 s, too little: docs/SAFETY.md).
    const TTL: u32 = 10;
    let mut cluster = EtcdCluster::start(3);
    let scene = Scene::new("raft-leader", &cluster.endpoints());
    let mut a = scene.candidate("A", &["--ttl", &TTL.to_string()], &[]);
    let run = scene.wait_leading("A", 1, 10 * SEC);
    let _b = scene.candidate("B", &["--ttl", &TTL.to_string()], &[]);
    scene.wait_candidates(&["A", "B"], 10 * SEC);

    for round in 0..3 {
        let leader = cluster.wait_leader(10 * SEC);
        let t0 = scene.mark(&format!("round {round}: kill the raft leader m{leader}"));
        cluster.kill(leader);
        let next = cluster.wait_leader(10 * SEC);
        scene.report(&format!(
            "round {round}: m{next} is raft leader {:.3}s after m{leader} died",
            secs(since(t0, mono_now_ns()))
        ));
        // Past the lease deadline of any keepalive sent before the kill.
        only_child_runs_for(
            &scene,
            run.pid,
            (TTL + 1) * SEC,
            &format!("round {round}: raft leader m{leader} killed"),
        );
        cluster.restart(leader);
        scene.mark(&format!("round {round}: m{leader} back"));
    }
    assert_eq!(scene.runs().len(), 1);
    assert!(a.is_running());
    scene.report(&format!("A's warnings: {:#?}", a.warnings()));
}

// ---------------------------------------------------------------------------
// 4. The whole cluster frozen
// ---------------------------------------------------------------------------

/// Every member SIGSTOPped for longer than the TTL: the leader's child stops before its lease
/// deadline (no keepalive can be answered after the freeze), nobody starts while frozen, and
/// after the thaw a child runs again within about a TTL.
#[test]
fn whole_cluster_frozen_longer_than_the_ttl_stops_the_child_then_recovers() {
    const TTL: u32 = 3;
    let mut cluster = EtcdCluster::start(3);
    let scene = Scene::new("cluster-frozen", &cluster.endpoints());
    let ttl = TTL.to_string();
    let mut a = scene.candidate("A", &["--ttl", &ttl], &[]);
    scene.wait_leading("A", 1, 10 * SEC);
    let mut b = scene.candidate("B", &["--ttl", &ttl], &[]);
    scene.wait_candidates(&["A", "B"], 10 * SEC);

    for round in 0..2 {
        let runs = scene.runs();
        let old = the_running(&runs).unwrap_or_else(|| panic!("no single child: {runs:?}"));
        scene.mark(&format!("round {round}: freezing all members"));
        for i in 0..3 {
            cluster.freeze(i);
        }
        // An answer to a keepalive sent before this instant may still have come back.
        let t0 = scene.mark(&format!("round {round}: all members frozen"));
        let ended = scene.wait_ended(old.pid, (TTL + 2) * SEC, false);
        let end = since(t0, ended.last_seen_ns);
        scene.report(&format!(
            "round {round}: the child ended {:.3}s after the freeze ({:?})",
            secs(end),
            ended.ending
        ));
        assert!(
            end < ns(TTL * SEC),
            "round {round}: the child ran until freeze+{:.3}s, past any lease deadline",
            secs(end)
        );
        assert_eq!(ended.ending, Ending::Term, "{ended:?}");
        // Frozen past the TTL: nobody may start a child.
        let quiet_until = t0 + ns((TTL + 2) * SEC);
        assert!(
            holds_for(
                Duration::from_nanos(since(mono_now_ns(), quiet_until)),
                || scene.runs().len() == round + 1
            ),
            "a child started while the whole cluster was frozen"
        );
        let t1 = scene.mark(&format!("round {round}: thawing all members"));
        for i in 0..3 {
            cluster.thaw(i);
        }
        let next = scene.wait_nth_run(round + 2, (2 * TTL + 7) * SEC, "a child after the thaw");
        let back = since(t1, next.start_ns);
        scene.report(&format!(
            "round {round}: a child ({}) runs again {:.3}s after the thaw",
            next.id.as_deref().unwrap_or("?"),
            secs(back)
        ));
        assert!(
            back < ns((TTL + 5) * SEC),
            "round {round}: no child for {:.3}s after the thaw",
            secs(back)
        );
        assert!(revision(&next) > revision(&old), "{old:?} then {next:?}");
        assert_no_overlap(&scene.after_running(next.pid, 300 * MS));
        scene.wait_candidates(&["A", "B"], 20 * SEC);
        for i in 0..3 {
            cluster.wait_healthy(i, 20 * SEC);
        }
    }
    assert_no_overlap(&scene.runs());
    assert!(a.is_running() && b.is_running());
}

// ---------------------------------------------------------------------------
// 5. A child that ignores the stop signal, with the link cut
// ---------------------------------------------------------------------------

/// The child ignores SIGTERM; the leader's link goes dark. SIGKILL must land at `D - m`,
/// before the lease can expire and before the standby starts. Two rounds, alternating leaders.
#[test]
fn child_ignoring_sigterm_with_the_link_cut_is_killed_before_the_lease_can_expire() {
    const TTL: u32 = 3;
    let etcd = Etcd::single();
    let scene = Scene::new("ignore-term", &etcd.endpoints());
    let proxies = [
        FaultProxy::start(etcd.client_addr()),
        FaultProxy::start(etcd.client_addr()),
    ];
    let ids = ["A", "B"];
    let ttl = TTL.to_string();
    let cmd = scene.fenced(&["--ignore-term"]);
    let _a = scene.spawn("A", &proxies[0].endpoint(), &["--ttl", &ttl], &cmd);
    scene.wait_leading("A", 1, 10 * SEC);
    let _b = scene.spawn("B", &proxies[1].endpoint(), &["--ttl", &ttl], &cmd);
    scene.wait_candidates(&ids, 10 * SEC);

    for round in 0..2 {
        let runs = scene.runs();
        let old = runs.last().unwrap().clone();
        let leader = ids
            .iter()
            .position(|id| old.id.as_deref() == Some(id))
            .unwrap();
        let t0 = scene.mark(&format!("round {round}: blackhole {}'s link", ids[leader]));
        proxies[leader].set_mode(Mode::Blackhole);
        let new = scene.wait_nth_run(round + 2, (TTL + 8) * SEC, "the standby's child");
        assert_no_overlap(&scene.after_running(new.pid, 300 * MS));
        let killed = scene.current(old.pid);
        assert_eq!(killed.ending, Ending::Killed, "{killed:?}");
        assert!(
            killed.terms_ignored >= 1,
            "no stop signal before SIGKILL: {killed:?}"
        );
        let last = since(t0, killed.last_seen_ns);
        assert!(
            last < ns(TTL * SEC),
            "round {round}: the child was alive at cut+{:.3}s, past its lease deadline",
            secs(last)
        );
        assert!(
            killed.last_seen_ns < new.start_ns,
            "{killed:?} still alive when {new:?} started"
        );
        scene.report(&format!(
            "round {round}: SIGKILLed child last alive at cut+{:.3}s, standby's child started \
             at cut+{:.3}s (gap {:.0} ms)",
            secs(last),
            secs(since(t0, new.start_ns)),
            ms_of(new.start_ns - killed.last_seen_ns)
        ));
        proxies[leader].set_mode(Mode::Pass);
        scene.wait_candidates(&ids, 20 * SEC);
    }
    assert_no_overlap(&scene.runs());
}

// ---------------------------------------------------------------------------
// 6. An operator revokes the leader's lease
// ---------------------------------------------------------------------------

/// `etcdctl lease revoke $LEADERRUN_LEASE` deletes the leader key: the child must stop at once
/// and the candidate campaign again with a fresh lease (here it is alone, so it wins again).
#[test]
fn revoking_the_leaders_lease_by_hand_stops_the_child_and_it_campaigns_again() {
    let etcd = Etcd::single();
    let scene = Scene::new("lease-revoke", &etcd.endpoints());
    let a = scene.candidate("A", &["--ttl", "10"], &[]);
    scene.wait_leading("A", 1, 10 * SEC);

    for round in 0..3 {
        let run = scene.wait_leading("A", round + 1, 10 * SEC);
        let keys = scene.candidates();
        assert_eq!(keys.len(), 1, "{keys:?}");
        let lease = keys[0]
            .0
            .rsplit('/')
            .next()
            .expect("key NAME/<lease>")
            .to_string();
        assert!(
            a.log_text()
                .contains(&format!("leading: child started key=svc/{lease}")),
            "the leader key is not svc/<LEADERRUN_LEASE> ({lease}):\n{}",
            a.log_text()
        );
        let t0 = scene.mark(&format!("round {round}: etcdctl lease revoke {lease}"));
        etcd.etcdctl_ok(&["lease", "revoke", &lease]);
        let ended = scene.wait_ended(run.pid, 5 * SEC, false);
        assert_eq!(ended.ending, Ending::Term, "{ended:?}");
        let stop = since(t0, ended.last_seen_ns);
        assert!(
            stop < ns(2 * SEC),
            "round {round}: the child stopped {:.3}s after the revoke",
            secs(stop)
        );
        let next = scene.wait_leading("A", round + 2, 10 * SEC);
        assert!(revision(&next) > revision(&run), "{run:?} then {next:?}");
        assert!(next.start_ns > ended.last_seen_ns);
        scene.report(&format!(
            "round {round}: child stopped {:.0} ms after `lease revoke` (etcdctl start-up \
             included), led again {:.0} ms after it",
            ms_of(stop),
            ms_of(since(t0, next.start_ns))
        ));
        let keys = scene.candidates();
        assert!(
            keys.len() == 1 && !keys[0].0.ends_with(&lease),
            "not a fresh lease after the revoke: {keys:?}"
        );
    }
    assert_no_overlap(&scene.runs());
}

// ---------------------------------------------------------------------------
// 7. etcd down when the candidates start
// ---------------------------------------------------------------------------

/// Two candidates start while the only etcd member is down: they wait (warning), start
/// nothing, and one of them leads soon after etcd comes up.
#[test]
fn candidates_started_while_etcd_is_down_wait_then_one_leads() {
    const TTL: u32 = 3;
    let mut etcd = Etcd::single();
    let scene = Scene::new("etcd-down", &etcd.endpoints());
    etcd.kill();
    scene.mark("etcd killed before the candidates start");
    let ttl = TTL.to_string();
    let mut a = scene.candidate("A", &["--ttl", &ttl], &[]);
    let mut b = scene.candidate("B", &["--ttl", &ttl], &[]);
    assert!(
        wait_until(10 * SEC, POLL, || a.log_text().contains("WARN")
            && b.log_text().contains("WARN")),
        "no warning while etcd is down"
    );
    assert!(
        holds_for(3 * SEC, || scene.runs().is_empty()),
        "a child started without etcd"
    );
    assert!(a.is_running() && b.is_running(), "a candidate gave up");

    etcd.restart();
    let t1 = scene.mark("etcd up and healthy");
    let first = scene.wait_nth_run(1, 15 * SEC, "a leader once etcd is up");
    let took = since(t1, first.start_ns);
    scene.report(&format!(
        "{} leads {:.3}s after etcd became healthy",
        first.id.as_deref().unwrap_or("?"),
        secs(took)
    ));
    // Retries back off to at most TTL/2 (1.5 s): then one grant, one campaign.
    assert!(
        took < ns(TTL * SEC + 2 * SEC),
        "the first child started {:.3}s after etcd came up",
        secs(took)
    );
    scene.wait_candidates(&["A", "B"], 10 * SEC);
    only_child_runs_for(&scene, first.pid, 2 * SEC, "after etcd came up");
}

/// The same with etcd reachable but answering nothing (its link blackholed: a hung member or
/// a dead network path), then healed.
#[test]
fn candidates_started_while_etcd_hangs_wait_then_one_leads() {
    const TTL: u32 = 3;
    let etcd = Etcd::single();
    let scene = Scene::new("etcd-hung", &etcd.endpoints());
    let proxy = FaultProxy::start(etcd.client_addr());
    proxy.set_mode(Mode::Blackhole);
    scene.mark("link blackholed before the candidates start");
    let ttl = TTL.to_string();
    let cmd = scene.fenced(&[]);
    let mut a = scene.spawn("A", &proxy.endpoint(), &["--ttl", &ttl], &cmd);
    let mut b = scene.spawn("B", &proxy.endpoint(), &["--ttl", &ttl], &cmd);
    assert!(
        wait_until(10 * SEC, POLL, || a.log_text().contains("WARN")
            && b.log_text().contains("WARN")),
        "no warning while etcd hangs"
    );
    assert!(
        holds_for(3 * SEC, || scene.runs().is_empty()),
        "a child started without etcd"
    );
    assert!(a.is_running() && b.is_running(), "a candidate gave up");

    let t1 = scene.mark("link healed");
    proxy.set_mode(Mode::Pass);
    let first = scene.wait_nth_run(1, 20 * SEC, "a leader once the link healed");
    let took = since(t1, first.start_ns);
    scene.report(&format!(
        "{} leads {:.3}s after the link healed",
        first.id.as_deref().unwrap_or("?"),
        secs(took)
    ));
    assert!(
        took < ns(TTL * SEC + 5 * SEC),
        "the first child started {:.3}s after the link healed",
        secs(took)
    );
    scene.wait_candidates(&["A", "B"], 10 * SEC);
    only_child_runs_for(&scene, first.pid, 2 * SEC, "after the link healed");
}

// ---------------------------------------------------------------------------
// 8. A campaign abandoned on a hung member
// ---------------------------------------------------------------------------

/// B's campaign is pending on member m0 when m0 hangs. B's client gives up on the call (HTTP/2
/// keepalive) and campaigns again elsewhere; the abandoned request stays in m0. When m0 resumes,
/// etcd's server-side campaign finds its caller's context cancelled and cleans up by resigning:
/// it deletes `NAME/<lease>` if that key still has the create revision the abandoned request
/// saw. Had B campaigned again with the same lease (same key, same revision) and won meanwhile,
/// that would delete the leader's key: a takeover nobody asked for. Whoever leads must keep
/// leading, and no child may overlap (the children ignore SIGTERM, so an overlap would last a
/// whole stop timeout).
#[test]
fn a_campaign_abandoned_on_a_hung_member_does_not_unseat_the_leader_later() {
    const TTL: u32 = 5;
    let mut cluster = EtcdCluster::start(3);
    // m0 hangs below: keep etcd's raft leadership elsewhere.
    if cluster.wait_leader(10 * SEC) == 0 {
        move_raft_leader(&mut cluster, 0, 1);
    }
    let ttl = TTL.to_string();
    // A and C use m1 and m2 only; B reaches each member through a proxy of its own.
    let scene = Scene::new(
        "abandoned-campaign",
        &format!("{},{}", cluster.endpoint(1), cluster.endpoint(2)),
    );
    let mut a = scene.candidate("A", &["--ttl", &ttl], &[]);
    scene.wait_leading("A", 1, 10 * SEC);
    let proxies: Vec<FaultProxy> = (0..3)
        .map(|m| FaultProxy::start(cluster.client_addr(m)))
        .collect();
    // m1's and m2's proxies refuse at first, so that B's campaign can only be pending on m0.
    proxies[1].set_mode(Mode::Reset);
    proxies[2].set_mode(Mode::Reset);
    let b_endpoints: Vec<String> = proxies.iter().map(FaultProxy::endpoint).collect();
    let b = scene.spawn(
        "B",
        &b_endpoints.join(","),
        &["--ttl", &ttl],
        &scene.fenced(&["--ignore-term"]),
    );
    scene.wait_candidates(&["A", "B"], 30 * SEC);
    proxies[1].set_mode(Mode::Pass);
    proxies[2].set_mode(Mode::Pass);
    let c = scene.candidate("C", &["--ttl", &ttl], &["--ignore-term"]);
    scene.wait_candidates(&["A", "B", "C"], 10 * SEC);

    let failures = |b: &Lr| b.log_text().matches("campaign failed").count();
    let before = failures(&b);
    scene.mark("freeze m0: B's campaign is pending there");
    cluster.freeze(0);
    // B's client drops the silent connection (HTTP/2 ping every 5 s, 3 s timeout) and campaigns
    // again; a retry that lands on m0 again fails the same way. Once no failure came for longer
    // than one takes, B campaigns on a live member.
    assert!(
        wait_until(15 * SEC, POLL, || failures(&b) > before),
        "B's campaign on the frozen m0 never failed:\n{}",
        b.log_text()
    );
    let mut seen = failures(&b);
    let mut quiet_since = Instant::now();
    let quiet = wait_until(60 * SEC, 100 * MS, || {
        let now = failures(&b);
        if now != seen {
            seen = now;
            quiet_since = Instant::now();
        }
        quiet_since.elapsed() >= 10 * SEC
    });
    assert!(quiet, "B's campaign kept failing:\n{}", b.log_text());
    scene.wait_candidates(&["A", "B", "C"], 10 * SEC);
    scene.mark("B campaigns on a live member; m0 holds the abandoned call");
    // Writes m0 must replay when it resumes, before it learns that A's key is gone (which would
    // let the abandoned campaign finish instead of cleaning up).
    for i in 0..8 {
        put_big(&cluster.endpoint(1), &format!("filler/{i}"), 1 << 20);
    }

    // A steps down; the next in line leads (B, unless B lost its place or its start hit m0).
    a.signal(Signal::SIGTERM);
    a.expect_exit(10 * SEC);
    let next = scene.wait_nth_run(2, 10 * SEC, "the next leader after A");
    assert_no_overlap(&scene.after_running(next.pid, 300 * MS));

    scene.mark("thaw m0");
    cluster.thaw(0);
    let led_on = holds_for(2 * TTL * SEC, || {
        let runs = scene.runs();
        runs.len() == 2 && running_now(&scene.current(next.pid))
    });
    scene.report(&format!(
        "{} led after A; it led on after m0 resumed: {led_on}; B's warnings: {:#?}",
        next.id.as_deref().unwrap_or("?"),
        b.warnings()
    ));
    assert_no_overlap(&scene.runs());
    for lr in [&b, &c] {
        assert!(
            !lr.log_text().contains("leader key deleted"),
            "{}'s leader key was deleted with no fault but a member that hung and resumed:\n{}",
            lr.id,
            lr.log_text()
        );
    }
    assert!(led_on, "{:?} stopped leading after m0 resumed", next.id);
}
