//! Singleton jobs (`--no-wait`, `--wait-timeout`, `--run-id`), the restart
//! policy (`--on-exit restart`) and `leaderrun leader`, against real etcd.
//!
//! Every test starts its own etcd. Each leaderrun's stderr goes to `<id>.log`
//! and its stdout to `<id>.out` in the test's temp dir; a failing test prints
//! the tail of every one of them (and the fenced children's runs, if any).

mod common;

use std::cell::RefCell;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use common::{
    assert_no_overlap, etcdctl_at, fenced_child_path, file_tail, run_with_timeout, wait_until,
    ChildGuard, Ending, Etcd, Records, Run, TempDir,
};
use nix::sys::signal::Signal;

const SEC: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);
const POLL: Duration = Duration::from_millis(20);
const LOG_TAIL: usize = 30;

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/// leaderrun with no LEADERRUN_* variables from the test's environment.
fn leaderrun() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_leaderrun"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("LEADERRUN_") {
            c.env_remove(k);
        }
    }
    c
}

/// One test's world: its temp dir, the election name, the etcd endpoints,
/// and the logs to print if the test fails.
struct Scene {
    dir: TempDir,
    election: String,
    etcd: String,
    logs: RefCell<Vec<(String, PathBuf)>>,
    /// A fenced_child record file, printed on failure when it exists.
    records: PathBuf,
}

/// A running leaderrun (or other process); SIGKILLed on drop.
struct Lr {
    id: String,
    log: PathBuf,
    out: PathBuf,
    started: Instant,
    guard: ChildGuard,
}

impl Scene {
    fn new(etcd: &str, election: &str) -> Scene {
        let dir = TempDir::new("leaderrun-jobs");
        let records = dir.join("records");
        Scene {
            dir,
            election: election.to_string(),
            etcd: etcd.to_string(),
            logs: RefCell::new(Vec::new()),
            records,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `leaderrun --endpoints E --election <election> --id ID opts... -- cmd...`.
    fn spawn(&self, id: &str, opts: &[&str], cmd: &[OsString]) -> Lr {
        let mut c = leaderrun();
        c.args(["--endpoints", &self.etcd, "--election", &self.election])
            .args(["--id", id])
            .args(opts)
            .arg("--")
            .args(cmd);
        self.start(id, &mut c)
    }

    /// A candidate whose command is `/bin/sh -c script`.
    fn spawn_sh(&self, id: &str, opts: &[&str], script: &str) -> Lr {
        self.spawn(id, opts, &["/bin/sh".into(), "-c".into(), script.into()])
    }

    /// A candidate whose command is `fenced_child <records> extra...`.
    fn spawn_fenced(&self, id: &str, opts: &[&str], extra: &[&str]) -> Lr {
        let mut cmd: Vec<OsString> = vec![fenced_child_path().into(), self.records.clone().into()];
        cmd.extend(extra.iter().map(OsString::from));
        self.spawn(id, opts, &cmd)
    }

    /// Spawns `c` with stdout to `<id>.out` and stderr to `<id>.log`.
    fn start(&self, id: &str, c: &mut Command) -> Lr {
        let log = self.path(&format!("{id}.log"));
        let out = self.path(&format!("{id}.out"));
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
            out,
            started: Instant::now(),
            guard: ChildGuard::spawn(c),
        }
    }

    /// A candidate that leads (its child touches a file, then sleeps): waits
    /// until its child runs.
    fn holder(&self, id: &str) -> Lr {
        let leading = self.path(&format!("{id}.leading"));
        let lr = self.spawn_sh(
            id,
            &[],
            &format!("touch '{}'; exec sleep 60", leading.display()),
        );
        assert!(
            wait_until(10 * SEC, POLL, || leading.exists()),
            "{id} did not lead within 10 s"
        );
        lr
    }

    /// `leaderrun leader --endpoints E --election <election> extra...`, bounded.
    fn ask_leader(&self, extra: &[&str]) -> Output {
        let mut c = leaderrun();
        c.args([
            "leader",
            "--endpoints",
            &self.etcd,
            "--election",
            &self.election,
        ])
        .args(extra);
        run_with_timeout(&mut c, 15 * SEC)
    }

    /// The candidates' keys and values under `<election>/`, oldest first.
    fn candidates(&self) -> Vec<(String, String)> {
        let prefix = format!("{}/", self.election);
        let text = etcdctl_ok(
            &self.etcd,
            &["get", "--prefix", &prefix, "--sort-by", "CREATE"],
        );
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
        if let Ok(text) = std::fs::read_to_string(&self.records) {
            eprintln!("===== runs =====");
            match common::records::parse(&text) {
                Ok(runs) => runs.iter().for_each(|r| eprintln!("{r:?}")),
                Err(e) => eprintln!("records unreadable: {e}"),
            }
        }
    }
}

impl Lr {
    fn signal(&self, sig: Signal) {
        self.guard.signal(sig)
    }

    /// Waits for exit; panics if still running after `timeout`. Returns the
    /// status and how long after its spawn it exited (to within the poll).
    fn expect_exit(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        let id = self.id.clone();
        let status = self
            .guard
            .wait_timeout(timeout)
            .unwrap_or_else(|| panic!("{id} still running after {timeout:?}"));
        (status, self.started.elapsed())
    }

    fn is_running(&mut self) -> bool {
        self.guard.try_wait().is_none()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn out_text(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

fn etcdctl_ok(endpoints: &str, args: &[&str]) -> String {
    let out = etcdctl_at(endpoints, args);
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lines of a file (none if it does not exist).
fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn revision(run: &Run) -> i64 {
    run.revision
        .as_deref()
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("run without a numeric LEADERRUN_REVISION: {run:?}"))
}

/// A script that appends the candidate's id to `marker`, then `rest`.
fn record_id(marker: &Path, rest: &str) -> String {
    format!("echo \"$LEADERRUN_ID\" >> '{}'; {rest}", marker.display())
}

// ---------------------------------------------------------------------------
// Singleton jobs: --no-wait and --wait-timeout
// ---------------------------------------------------------------------------

#[test]
fn no_wait_exits_75_at_once_while_another_leads_and_runs_the_command_when_nobody_does() {
    let etcd = Etcd::single();
    let scene = Scene::new(&etcd.endpoints(), "job");
    let mut holder = scene.holder("holder");

    let marker = scene.path("ran-while-led");
    let mut b = scene.spawn_sh(
        "B",
        &["--no-wait"],
        &format!("touch '{}'", marker.display()),
    );
    let (status, took) = b.expect_exit(10 * SEC);
    assert_eq!(status.code(), Some(75), "--no-wait while led: {status}");
    assert!(took < 3 * SEC, "--no-wait took {took:?} to give up");
    assert!(!marker.exists(), "the command ran although another led");
    assert!(
        b.log_text().contains("holder"),
        "the log does not name the leader"
    );
    // It withdrew: only the holder is left in the election.
    scene.wait_candidates(&["holder"], 5 * SEC);

    holder.signal(Signal::SIGTERM);
    let (status, _) = holder.expect_exit(10 * SEC);
    assert_eq!(status.code(), Some(143), "the holder's sleep was TERMed");
    scene.wait_candidates(&[], 5 * SEC);

    let marker = scene.path("ran-alone");
    let mut c = scene.spawn_sh(
        "C",
        &["--no-wait"],
        &format!("touch '{}'; exit 4", marker.display()),
    );
    let (status, took) = c.expect_exit(10 * SEC);
    assert_eq!(
        status.code(),
        Some(4),
        "--no-wait with nobody leading must run the command and exit with its status"
    );
    assert!(marker.exists(), "the command did not run");
    assert!(took < 5 * SEC, "took {took:?}");
    scene.wait_candidates(&[], 5 * SEC);
}

#[test]
fn wait_timeout_exits_75_after_the_timeout_without_running_the_command() {
    let etcd = Etcd::single();
    let scene = Scene::new(&etcd.endpoints(), "job");
    let _holder = scene.holder("holder");

    let marker = scene.path("ran");
    let mut b = scene.spawn_sh(
        "B",
        &["--wait-timeout", "2s"],
        &format!("touch '{}'", marker.display()),
    );
    let (status, took) = b.expect_exit(15 * SEC);
    assert_eq!(status.code(), Some(75), "{status}");
    assert!(
        took >= 1500 * MS && took <= 6 * SEC,
        "--wait-timeout 2s gave up after {took:?}"
    );
    assert!(!marker.exists(), "the command ran although another led");
    scene.wait_candidates(&["holder"], 5 * SEC);
}

#[test]
fn two_no_wait_candidates_started_together_run_the_command_once() {
    let etcd = Etcd::single();
    for round in 0..5 {
        let scene = Scene::new(&etcd.endpoints(), &format!("race{round}"));
        let marker = scene.path("ran");
        // README: with --no-wait, the loser of a simultaneous start exits 75
        // at once. A short job, as cron jobs often are: the loser must not
        // run it after the winner is done.
        let script = record_id(&marker, "sleep 0.5");
        let mut a = scene.spawn_sh("A", &["--no-wait"], &script);
        let mut b = scene.spawn_sh("B", &["--no-wait"], &script);
        let (sa, ta) = a.expect_exit(15 * SEC);
        let (sb, tb) = b.expect_exit(15 * SEC);
        let ran = lines(&marker);
        let summary =
            format!("round {round}: ran by {ran:?}; A: {sa} after {ta:?}; B: {sb} after {tb:?}");
        assert_eq!(ran.len(), 1, "{summary}");
        let mut codes = [sa.code(), sb.code()];
        codes.sort();
        assert_eq!(codes, [Some(0), Some(75)], "{summary}");
        let loser_took = if sa.code() == Some(75) { ta } else { tb };
        assert!(loser_took < 3 * SEC, "the loser waited: {summary}");
        scene.wait_candidates(&[], 5 * SEC);
    }
}

// ---------------------------------------------------------------------------
// Singleton jobs: --run-id
// ---------------------------------------------------------------------------

/// `(granted, remaining)` TTL in seconds of the lease that holds `key`.
fn key_lease_ttl(etcd: &str, key: &str) -> (i64, i64) {
    let json = etcdctl_ok(etcd, &["get", "-w", "json", key]);
    let v: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("bad JSON {json:?}: {e}"));
    let lease = v["kvs"][0]["lease"]
        .as_i64()
        .unwrap_or_else(|| panic!("{key} has no lease: {json}"));
    assert_ne!(lease, 0, "{key} has no lease: {json}");
    let text = etcdctl_ok(etcd, &["lease", "timetolive", &format!("{lease:x}")]);
    // "lease 694d... granted with TTL(3600s), remaining(3599s)" (etcdctl 3.4;
    // later versions say "remaining TTL(3599s)").
    let number_after = |tags: &[&str]| -> i64 {
        let rest = tags
            .iter()
            .find_map(|tag| text.split(tag).nth(1))
            .unwrap_or_else(|| panic!("none of {tags:?} in {text:?}"));
        rest.split('s')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("cannot read {tags:?} in {text:?}"))
    };
    (
        number_after(&["granted with TTL("]),
        number_after(&["remaining(", "remaining TTL("]),
    )
}

#[test]
fn run_id_runs_once_per_id_and_a_late_host_exits_0_naming_who_ran_it() {
    let etcd = Etcd::single();
    let scene = Scene::new(&etcd.endpoints(), "nightly");
    let marker = scene.path("ran");
    let script = record_id(&marker, "true");
    let opts = ["--run-id", "R1", "--run-id-ttl", "1h"];

    let mut h1 = scene.spawn_sh("host1", &opts, &script);
    let (status, _) = h1.expect_exit(15 * SEC);
    assert_eq!(status.code(), Some(0), "{status}");
    assert_eq!(lines(&marker), ["host1"]);

    // A late host: the run is recorded, it exits 0 without running.
    let mut h2 = scene.spawn_sh("host2", &opts, &script);
    let (status, took) = h2.expect_exit(15 * SEC);
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(took < 5 * SEC, "took {took:?}");
    assert_eq!(lines(&marker), ["host1"], "host2 ran the recorded run");
    let log = h2.log_text();
    assert!(
        log.contains("id=host1") && log.contains("revision="),
        "host2's log does not say who ran R1:\n{log}"
    );

    // The record: outside the election prefix, naming host1, with its own
    // lease of --run-id-ttl.
    let key = "leaderrun.runs/nightly/R1";
    let value = etcdctl_ok(&scene.etcd, &["get", key, "--print-value-only"]);
    assert!(
        value.starts_with("id=host1 revision=") && value.contains(" at="),
        "{key} = {value:?}"
    );
    let runs_keys = etcdctl_ok(
        &scene.etcd,
        &["get", "--prefix", "leaderrun.runs/", "--keys-only"],
    );
    let runs_keys: Vec<&str> = runs_keys.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(runs_keys, [key]);
    let under_name = etcdctl_ok(&scene.etcd, &["get", "--prefix", "nightly/", "--keys-only"]);
    assert!(
        under_name.trim().is_empty(),
        "keys left under nightly/ (candidates resign; records live elsewhere): {under_name:?}"
    );
    let (granted, remaining) = key_lease_ttl(&scene.etcd, key);
    assert_eq!(granted, 3600, "--run-id-ttl 1h");
    assert!(
        remaining <= 3600 && remaining > 3500,
        "remaining TTL {remaining}s"
    );

    // Another run id runs again.
    let mut h3 = scene.spawn_sh("host2", &["--run-id", "R2"], &script);
    let (status, _) = h3.expect_exit(15 * SEC);
    assert_eq!(status.code(), Some(0), "{status}");
    assert_eq!(lines(&marker), ["host1", "host2"]);
    let value = etcdctl_ok(
        &scene.etcd,
        &["get", "leaderrun.runs/nightly/R2", "--print-value-only"],
    );
    assert!(value.starts_with("id=host2 "), "{value:?}");
    let (granted, _) = key_lease_ttl(&scene.etcd, "leaderrun.runs/nightly/R2");
    assert_eq!(granted, 86400, "--run-id-ttl defaults to 24h");
}

#[test]
fn run_id_on_three_hosts_started_together_runs_once() {
    let etcd = Etcd::single();
    for round in 0..2 {
        let scene = Scene::new(&etcd.endpoints(), "nightly");
        let marker = scene.path("ran");
        let script = record_id(&marker, "sleep 0.3");
        let run_id = format!("day-{round}");
        let opts = ["--run-id", run_id.as_str()];
        let mut hosts: Vec<Lr> = ["h1", "h2", "h3"]
            .iter()
            .map(|id| scene.spawn_sh(id, &opts, &script))
            .collect();
        let mut statuses = Vec::new();
        for h in &mut hosts {
            let (status, took) = h.expect_exit(20 * SEC);
            statuses.push((h.id.clone(), status.code(), took));
        }
        let ran = lines(&marker);
        assert_eq!(ran.len(), 1, "round {round}: ran by {ran:?}; {statuses:?}");
        assert!(
            statuses.iter().all(|(_, code, _)| *code == Some(0)),
            "round {round}: {statuses:?}"
        );
        // The others say who ran it.
        for h in hosts.iter().filter(|h| h.id != ran[0]) {
            let log = h.log_text();
            assert!(
                log.contains(&format!("id={}", ran[0])),
                "round {round}: {} does not name {}:\n{log}",
                h.id,
                ran[0]
            );
        }
        scene.wait_candidates(&[], 5 * SEC);
    }
}

// ---------------------------------------------------------------------------
// Restart policy
// ---------------------------------------------------------------------------

#[test]
fn on_exit_restart_restarts_in_place_with_growing_backoff() {
    let etcd = Etcd::single();
    let scene = Scene::new(&etcd.endpoints(), "svc");
    let mut a = scene.spawn_fenced(
        "A",
        &["--on-exit", "restart"],
        &["--exit-after", "200", "--exit-code", "3"],
    );
    let runs = scene.wait_runs(15 * SEC, "three starts of A's child", |runs| {
        runs.len() >= 3
    });
    assert!(a.is_running(), "leaderrun exited instead of restarting");
    let rev = revision(&runs[0]);
    for r in &runs {
        assert_eq!(r.id.as_deref(), Some("A"), "{r:?}");
        assert_eq!(
            revision(r),
            rev,
            "a restart in place keeps the token: {r:?}"
        );
    }
    assert_eq!(runs[0].ending, Ending::Exit);
    assert_eq!(runs[1].ending, Ending::Exit);
    let gap1 = runs[1].start_ns.saturating_sub(runs[0].last_seen_ns);
    let gap2 = runs[2].start_ns.saturating_sub(runs[1].last_seen_ns);
    assert!(
        gap1 >= 800 * MS.as_nanos() as u64,
        "first restart after {:.3}s (backoff 1 s)",
        secs(gap1)
    );
    assert!(
        gap2 > gap1,
        "restart gaps do not grow: {:.3}s then {:.3}s",
        secs(gap1),
        secs(gap2)
    );
    assert!(
        gap2 >= 1600 * MS.as_nanos() as u64,
        "second restart after {:.3}s (backoff 2 s)",
        secs(gap2)
    );
    // Leadership was kept all along: still one key, still A's.
    let keys = scene.candidates();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0].1, "A");
    assert!(a.is_running());
    assert_no_overlap(&runs);

    a.signal(Signal::SIGTERM);
    let (status, _) = a.expect_exit(10 * SEC);
    assert!(
        matches!(status.code(), Some(0) | Some(3)),
        "the child's status (0 on TERM, 3 on its own exit): {status}"
    );
}

#[test]
fn on_exit_restart_resigns_after_the_restart_limit_and_the_standby_takes_over() {
    let etcd = Etcd::single();
    let scene = Scene::new(&etcd.endpoints(), "svc");
    let mut a = scene.spawn_fenced(
        "A",
        &[
            "--on-exit",
            "restart",
            "--restart-limit",
            "2",
            "--restart-window",
            "30s",
        ],
        &["--exit-after", "500", "--exit-code", "5"],
    );
    scene.wait_runs(10 * SEC, "A's child to start", |runs| !runs.is_empty());
    let _b = scene.spawn_fenced("B", &[], &[]);
    scene.wait_candidates(&["A", "B"], 10 * SEC);

    let runs = scene.wait_runs(15 * SEC, "B's child to start", |runs| {
        runs.iter().any(|r| r.id.as_deref() == Some("B"))
    });
    let (of_a, of_b): (Vec<&Run>, Vec<&Run>) =
        runs.iter().partition(|r| r.id.as_deref() == Some("A"));
    assert_eq!(of_a.len(), 2, "A's child ran {} times, limit 2", of_a.len());
    assert_eq!(revision(of_a[0]), revision(of_a[1]), "{of_a:?}");
    assert!(of_a.iter().all(|r| r.ending == Ending::Exit), "{of_a:?}");
    assert_eq!(of_b.len(), 1);
    assert!(
        revision(of_b[0]) > revision(of_a[1]),
        "B's token {} not above A's {}",
        revision(of_b[0]),
        revision(of_a[1])
    );
    assert!(
        a.log_text().contains("too many exits"),
        "A's log does not say why it resigned"
    );
    // A campaigns again, as a standby behind B.
    scene.wait_candidates(&["A", "B"], 10 * SEC);
    assert!(a.is_running(), "A exited instead of campaigning again");
    assert_no_overlap(&scene.runs());
    assert_eq!(
        scene
            .runs()
            .iter()
            .filter(|r| r.id.as_deref() == Some("A"))
            .count(),
        2,
        "A ran again while B led"
    );
}

#[test]
fn sigterm_during_the_restart_backoff_exits_at_once_with_the_last_status() {
    let etcd = Etcd::single();
    let scene = Scene::new(&etcd.endpoints(), "svc");
    let marker = scene.path("ran");
    let mut a = scene.spawn_sh(
        "A",
        &["--on-exit", "restart"],
        &format!("echo run >> '{}'; exit 9", marker.display()),
    );
    // Second exit: the next restart is 2 s away.
    let restarting = "restarting the child in place";
    assert!(
        wait_until(15 * SEC, 5 * MS, || a
            .log_text()
            .matches(restarting)
            .count()
            >= 2),
        "no second restart scheduled"
    );
    let t0 = Instant::now();
    a.signal(Signal::SIGTERM);
    let (status, _) = a.expect_exit(10 * SEC);
    let took = t0.elapsed();
    assert_eq!(status.code(), Some(9), "the last child's status: {status}");
    assert!(
        took < 1200 * MS,
        "took {took:?} to exit during a 2 s backoff"
    );
    assert_eq!(lines(&marker).len(), 2, "the child started again");
    scene.wait_candidates(&[], 5 * SEC);
}

// ---------------------------------------------------------------------------
// `leaderrun leader`
// ---------------------------------------------------------------------------

#[test]
fn leader_reports_no_leader_with_exit_3() {
    let etcd = Etcd::single();
    let scene = Scene::new(&etcd.endpoints(), "empty");
    let out = scene.ask_leader(&[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out), "no leader\n");
    let out = scene.ask_leader(&["--format", "json"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out), "null\n");
}

/// A candidate whose child writes its LEADERRUN_KEY, _REVISION and _LEASE to
/// `<id>.env` (one per line), then sleeps. Returns once the file is there.
fn env_reporter(scene: &Scene, id: &str) -> (Lr, [String; 3]) {
    let env = scene.path(&format!("{id}.env"));
    let lr = scene.spawn_sh(
        id,
        &[],
        &format!(
            "printf '%s\\n' \"$LEADERRUN_KEY\" \"$LEADERRUN_REVISION\" \"$LEADERRUN_LEASE\" > '{0}.tmp' && mv '{0}.tmp' '{0}'; exec sleep 60",
            env.display()
        ),
    );
    let mut got = Vec::new();
    assert!(
        wait_until(10 * SEC, POLL, || {
            got = lines(&env);
            got.len() == 3
        }),
        "{id} did not lead within 10 s"
    );
    (lr, [got[0].clone(), got[1].clone(), got[2].clone()])
}

#[test]
fn leader_prints_the_leading_candidate_as_text_and_json_like_etcdctl() {
    let etcd = Etcd::single();
    let scene = Scene::new(&etcd.endpoints(), "web");
    let (_alpha, [key, rev, lease]) = env_reporter(&scene, "alpha");
    let _beta = scene.spawn_sh("beta", &[], "exec sleep 60");
    scene.wait_candidates(&["alpha", "beta"], 10 * SEC);

    let out = scene.ask_leader(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(
        stdout_of(&out),
        format!("id=alpha key={key} revision={rev} lease={lease}\n")
    );
    assert_eq!(key, format!("web/{lease}"));

    let out = scene.ask_leader(&["--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    assert_eq!(text.lines().count(), 1, "{text:?}");
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON: {text:?}: {e}"));
    assert_eq!(v["id"], "alpha", "{text}");
    assert_eq!(v["key"], key.as_str(), "{text}");
    assert_eq!(v["revision"].as_i64(), rev.parse().ok(), "{text}");
    assert_eq!(v["lease"], lease.as_str(), "{text}");

    // etcdctl elect -l: the key, then the value.
    let mut c = Command::new(std::env::var("ETCDCTL_BIN").unwrap_or_else(|_| "etcdctl".into()));
    c.env("ETCDCTL_API", "3")
        .args(["--endpoints", &scene.etcd, "elect", "-l", "web"]);
    let observer = scene.start("etcdctl-observe", &mut c);
    let mut shown = Vec::new();
    assert!(
        wait_until(10 * SEC, POLL, || {
            shown = lines(&observer.out);
            shown.len() >= 2
        }),
        "etcdctl elect -l printed {shown:?}"
    );
    drop(observer);
    assert_eq!(shown[..2], [key.clone(), "alpha".to_string()], "{shown:?}");
}

#[test]
fn leader_watch_prints_a_line_at_each_change_until_sigint() {
    let etcd = Etcd::single();
    let scene = Scene::new(&etcd.endpoints(), "web");
    let (mut alpha, [key_a, rev_a, _]) = env_reporter(&scene, "alpha");
    let _beta = scene.spawn_sh("beta", &[], "exec sleep 60");
    scene.wait_candidates(&["alpha", "beta"], 10 * SEC);

    let mut c = leaderrun();
    c.args([
        "leader",
        "--endpoints",
        &scene.etcd,
        "--election",
        "web",
        "--watch",
    ]);
    let mut watch = scene.start("watch", &mut c);
    let mut shown = Vec::new();
    assert!(
        wait_until(10 * SEC, POLL, || {
            shown = lines(&watch.out);
            !shown.is_empty()
        }),
        "--watch printed nothing"
    );
    assert!(
        shown[0].starts_with(&format!("id=alpha key={key_a} revision={rev_a} ")),
        "{shown:?}"
    );

    let t0 = Instant::now();
    alpha.signal(Signal::SIGTERM);
    assert!(
        wait_until(5 * SEC, POLL, || {
            shown = lines(&watch.out);
            shown.len() >= 2
        }),
        "--watch printed no new leader within 5 s: {shown:?}"
    );
    let took = t0.elapsed();
    assert!(shown[1].starts_with("id=beta key=web/"), "{shown:?}");
    let rev_b: i64 = shown[1]
        .split_whitespace()
        .find_map(|f| f.strip_prefix("revision="))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no revision in {:?}", shown[1]));
    assert!(rev_b > rev_a.parse::<i64>().unwrap(), "{shown:?}");
    assert!(took < 5 * SEC);
    let (status, _) = alpha.expect_exit(10 * SEC);
    assert_eq!(status.code(), Some(143));

    assert!(watch.is_running(), "--watch ended by itself");
    watch.signal(Signal::SIGINT);
    let (status, _) = watch.expect_exit(5 * SEC);
    assert_eq!(status.code(), Some(0), "--watch on SIGINT: {status}");
    assert_eq!(lines(&watch.out).len(), 2, "{:?}", watch.out_text());
}

#[test]
fn leader_without_election_is_a_usage_error() {
    let mut c = leaderrun();
    c.args(["leader", "--endpoints", "127.0.0.1:9"]);
    let out = run_with_timeout(&mut c, 10 * SEC);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(err.contains("--election"), "{err:?}");
    assert!(stdout_of(&out).is_empty(), "{:?}", stdout_of(&out));
}
