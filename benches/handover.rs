//! Measures (never asserts) leaderrun against `etcdctl lock` on a throwaway loopback etcd:
//!
//!   child-exit handover  two candidates; the leader's child exits on its own after ~300 ms;
//!                        gap from the old child's end to the new child's start
//!                        (leaderrun --on-exit exit, and `etcdctl lock NAME -- CHILD`)
//!   SIGTERM handover     SIGTERM to the leading leaderrun; same gap. For `etcdctl lock`, shows
//!                        what SIGTERM does to it and its child.
//!   supervisor SIGKILLed kill -9 to the leading leaderrun (its guardian kills the child's group,
//!                        then revokes the lease); time from the kill to the standby's child start,
//!                        p50 / p99. For `etcdctl lock`, the standby waits out the TTL, and the
//!                        killed one's child runs on (counted)
//!   peak RSS             VmHWM of a leading leaderrun and a leading `etcdctl lock` after ~5 s of
//!                        leading (keepalives flowing)
//!   status endpoint      VmHWM of a leading leaderrun with --status-addr, its /metrics scraped
//!                        every second and its /leader asked 100 times a second (a new connection
//!                        each, as a load balancer's check) for the same ~5 s; /leader's latency
//!                        (connect to the server's close) p50 / p99
//!   health failover      a leader with --health-cmd (every 500 ms, 2 failures in a row, 500 ms
//!                        timeout) whose check starts failing at a recorded instant; time from
//!                        that instant to the standby's child start, p50 / p99. `etcdctl lock` has
//!                        no health checks.
//!   scale (--candidates) N candidates queued on one election (TTL 10 s, the default), then N
//!                        `etcdctl lock` waiters on one lock, one tool at a time, a fresh etcd
//!                        for each N: over an idle window, etcd's received gRPC messages per
//!                        second (its /metrics), the candidates' CPU (% of one core) and RSS;
//!                        then, with both tools' N queued, child-exit and SIGTERM handovers, the
//!                        tools taking turns: p50, p90 and max of each tool's pooled runs
//!   storm (--only storm) N leaderruns started at once on one election (TTL 10 s), then etcd
//!                        SIGKILLed under them and started again on its data, after 3 s (within
//!                        the TTL: leases and keys survive) and after 25 s (past the candidates'
//!                        deadlines: every one begins anew at once): seconds until the N keys
//!                        are in etcd with one child running, steady for 1 s; leaderruns that
//!                        exited; overlapping children. `etcdctl lock` is not started (its
//!                        waiters hang on a dead etcd and keep the child of a cut-off holder).
//!   hook overhead        two candidates, the child-exit and the SIGTERM handover with
//!                        `--on-promote true --on-demote true` on both, against the same without
//!                        hooks, the four kinds taking turns: p50 / p90 and the difference of p50;
//!                        and in the same turns the child-exit handover with three candidates,
//!                        all of priority 0, against the same with the third (C, queued last)
//!                        of `--priority 5`, which the second passes and which takes over: p50 /
//!                        p90 and the ratio of p50
//!   hot promotion        (--candidates) N `leaderrun --hot-standby` candidates (TTL 10 s), each
//!                        child a small Rust replica (examples/hot_child.rs) that runs in every
//!                        role; `leaderrun resign` makes the leader step down: gap from the old
//!                        child's record of becoming standby (just before its confirmation) to the
//!                        new child's record of reading ROLE=leader. Beside it, in turns on the
//!                        same etcd, N `etcdctl lock` waiters' child-exit gap; p50 / p90 / max,
//!                        and where the time goes on leaderrun's side, from its logs
//!
//! Usage: cargo bench --bench handover -- [--tls] [--runs N] [--candidates N[,N...]]
//!                                        [--only roles|scale|handovers|storm] [--trace]
//!
//!   --runs N          N runs per figure (default 7)
//!   --tls             also measure the two-candidate figures over mutual TLS, interleaved with
//!                     the plain runs, and print both tables: a second throwaway etcd serves https
//!                     on 127.0.0.1 with --client-cert-auth, certificates made at run time
//!                     (tests/common/tls.rs, ECDSA P-256); leaderrun and `etcdctl lock` both use
//!                     --cacert/--cert/--key.
//!   --candidates N    add the scale rows for N candidates (2 to 1000; a list 3,100,200 or the
//!                     option repeated); plain etcd only. Without it, only the two-candidate rows.
//!                     The hot promotion rows are measured at the same N.
//!   --only roles      only the hook overhead and the hot promotion rows (the latter at each
//!                     --candidates N, default 3)
//!   --only scale      only the scale rows (idle figures and handovers) at each --candidates N
//!   --only handovers  only the handovers at scale, without the idle figures
//!   --only storm      only the storm rows at each --candidates N (default 1000)
//!   --trace           at scale, leaderrun logs at debug and each handover is printed with its
//!                     steps from both supervisors' logs (a slow one beside a fast one)
//!
//! The candidates are the release build of leaderrun (cargo bench's profile inherits release)
//! and `etcdctl lock` (ETCDCTL_BIN, else on PATH) on etcd (ETCD_BIN, else on PATH); the child of
//! both is the test harness's fenced child (examples/fenced_child.rs), whose records carry
//! CLOCK_MONOTONIC stamps, so the gaps compare clocks of one kind across processes. Only
//! 127.0.0.1 is used.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use common::bench::{
    cpu_ns, end_ns, etcd_msgs, example_path, fmt2, med_min_max, median, mib, p50_p90_max, pct, pss,
    ratio, rss, status_field, stop_all_on_signal, Follow, Journal,
};
use common::{
    etcdctl_command, fenced_child_path, free_port, guardian_of, mono_now_ns, overlapping, ppid,
    process_alive, run_with_timeout, signal_pid, Certs, Etcd, EtcdOptions, Lr, Run, Scene, MS, SEC,
};

/// leaderrun --ttl and etcdctl lock --ttl: the same session TTL for both.
const TTL: u64 = 5;
/// How long the leader's child lives in the child-exit figure.
const CHILD_MS: u64 = 300;
/// How long each leads before its VmHWM is read.
const RSS_LEAD: Duration = Duration::from_secs(5);
/// A standby must have been queued this long before a handover is timed. etcd (3.4) delivers
/// the first events to a watch that starts at a past revision (as every queued campaign's and
/// `etcdctl lock`'s wait-for-my-predecessor watch does) from a loop that runs every 100 ms; a
/// handover in the first ~100 ms after the standby queued is seen up to 100 ms late, whatever
/// the tool. The SIGTERM runs wait this long; child-exit runs where the child happened to end
/// sooner after the standby queued are discarded and retried.
const SETTLE: Duration = Duration::from_millis(300);
const MIN_QUEUED_MS: u64 = 150;
/// The health check of the health failover: every 500 ms, unhealthy after 2 failures in a row.
const HEALTH: [&str; 6] = [
    "--health-interval",
    "500ms",
    "--health-retries",
    "2",
    "--health-timeout",
    "500ms",
];
/// leaderrun's default TTL: the idle figures at scale are quoted at it (etcdctl lock the same).
const SCALE_TTL: u64 = 10;
/// The idle window: several keepalive intervals, so that their phases matter little.
const IDLE: Duration = Duration::from_secs(30);
/// After the last candidate queued, before the idle window opens.
const IDLE_SETTLE: Duration = Duration::from_secs(3);
/// The largest --candidates.
const MAX_CANDIDATES: usize = 1000;
/// Candidates started at once; each batch is queued in etcd before the next.
const BATCH: usize = 20;
/// The scale runs' children lead through a whole N (queueing 500 may take minutes): past the
/// fenced child's default cap of 600 s. (It also ends when its record file goes.)
const SCALE_CHILD: [&str; 2] = ["--max-lifetime-ms", "3600000"];
/// The hooks of the hook overhead rows: each a `sh -c true`, so that what is measured is
/// leaderrun's cost of running one, not the hook's.
const HOOKS: [&str; 4] = ["--on-promote", "true", "--on-demote", "true"];

fn say(what: &str) {
    println!("bench: {what}");
}

/// ms from `a` to `b` (CLOCK_MONOTONIC ns), negative if `b` is earlier.
fn ms(a: u64, b: u64) -> f64 {
    (b as f64 - a as f64) / 1e6
}

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

struct Opts {
    runs: usize,
    tls: bool,
    scale: Vec<usize>,
    only: Option<Only>,
    trace: bool,
}

/// `--trace`: leaderrun candidates at scale log at debug, and each of their handovers is
/// printed with its timeline from the two supervisors' logs.
static TRACE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn tracing_on() -> bool {
    TRACE.load(std::sync::atomic::Ordering::Relaxed)
}

/// `--only`: one part of the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Only {
    /// The hook overhead and the hot promotion rows.
    Roles,
    /// The scale rows (idle figures and handovers) at each --candidates N.
    Scale,
    /// The scale rows' handovers alone, without the idle figures.
    Handovers,
    /// N started at once, etcd killed and started again under them.
    Storm,
}

fn usage() -> ! {
    let doc = include_str!("handover.rs");
    for line in doc.lines().take_while(|l| l.starts_with("//!")) {
        println!(
            "{}",
            line.trim_start_matches("//!")
                .strip_prefix(' ')
                .unwrap_or("")
        );
    }
    std::process::exit(0);
}

fn bad(msg: &str) -> ! {
    eprintln!("bench: {msg}");
    std::process::exit(2);
}

fn parse_args() -> Opts {
    let mut opts = Opts {
        runs: 7,
        tls: false,
        scale: Vec::new(),
        only: None,
        trace: false,
    };
    let only = |v: Option<&str>| match v {
        Some("roles") => Only::Roles,
        Some("scale") => Only::Scale,
        Some("handovers") => Only::Handovers,
        Some("storm") => Only::Storm,
        _ => bad("--only takes: roles, scale, handovers, storm"),
    };
    let runs = |v: Option<String>| -> usize {
        match v.as_deref().map(str::parse::<usize>) {
            Some(Ok(n)) if (1..=99).contains(&n) => n,
            _ => bad("--runs takes 1..99"),
        }
    };
    let candidates = |v: Option<String>, scale: &mut Vec<usize>| {
        let v = v.unwrap_or_default();
        for n in v.split(',') {
            match n.parse::<usize>() {
                Ok(n) if (2..=MAX_CANDIDATES).contains(&n) => scale.push(n),
                Ok(n) => bad(&format!("--candidates takes 2..{MAX_CANDIDATES}, not {n}")),
                Err(_) => bad(&format!(
                    "--candidates takes numbers 2..{MAX_CANDIDATES}, comma-separated, not '{v}'"
                )),
            }
        }
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            // cargo bench passes it to every bench target.
            "--bench" => {}
            "--runs" => opts.runs = runs(args.next()),
            "--tls" => opts.tls = true,
            "--trace" => opts.trace = true,
            "--candidates" => candidates(args.next(), &mut opts.scale),
            "--only" => opts.only = Some(only(args.next().as_deref())),
            "-h" | "--help" => usage(),
            _ => {
                if let Some(v) = a.strip_prefix("--runs=") {
                    opts.runs = runs(Some(v.into()));
                } else if let Some(v) = a.strip_prefix("--candidates=") {
                    candidates(Some(v.into()), &mut opts.scale);
                } else if let Some(v) = a.strip_prefix("--only=") {
                    opts.only = Some(only(Some(v)));
                } else {
                    bad(&format!("unknown argument '{a}' (see --help)"));
                }
            }
        }
    }
    opts
}

// ---------------------------------------------------------------------------
// An etcd and the candidates on it
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tool {
    Lr,
    Lk,
    /// leaderrun --hot-standby, its child examples/hot_child.rs journaling to `journal`.
    Hot,
}

impl Tool {
    fn who(self) -> &'static str {
        match self {
            Tool::Lr => "leaderrun",
            Tool::Lk => "etcdctl lock",
            Tool::Hot => "leaderrun --hot-standby",
        }
    }
}

/// The hot child's binary, built once (cargo bench builds no example).
fn hot_child() -> &'static std::path::Path {
    static PATH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| example_path("hot_child"))
}

/// One throwaway etcd (plain, or mutual TLS) and how both tools connect to it.
struct Mode {
    tls: bool,
    /// Whether lines name their mode (only with --tls).
    tagged: bool,
    /// --cacert/--cert/--key over TLS, the same for leaderrun and etcdctl.
    flags: Vec<String>,
    etcd: Etcd,
    /// Dropped after etcd (fields drop in order): its files are etcd's.
    _certs: Option<Certs>,
}

impl Mode {
    fn plain(tagged: bool) -> Mode {
        Mode {
            tls: false,
            tagged,
            flags: Vec::new(),
            etcd: Etcd::single(),
            _certs: None,
        }
    }

    fn tls() -> Mode {
        let certs = Certs::generate();
        let etcd = Etcd::start_with(EtcdOptions {
            tls: Some(&certs),
            client_cert_auth: true,
            ..Default::default()
        });
        Mode {
            tls: true,
            tagged: true,
            // The fixture's own client certificate: signed by the CA etcd trusts.
            flags: etcd.etcdctl_flags(),
            etcd,
            _certs: Some(certs),
        }
    }

    fn tag(&self) -> &'static str {
        match (self.tagged, self.tls) {
            (false, _) => "",
            (true, false) => "[plain] ",
            (true, true) => "[TLS] ",
        }
    }

    /// A scene (temp dir, record file) for one election on this etcd.
    fn scene(&self, election: &str) -> Scene {
        Scene::with_election(&self.etcd.endpoints(), election)
    }

    /// A candidate of `tool` in `scene` whose command is the fenced child with `child`'s
    /// options; leaderrun gets `--ttl ttl --on-exit exit` and `extra`.
    fn start(
        &self,
        tool: Tool,
        scene: &Scene,
        id: &str,
        ttl: u64,
        child: &[&str],
        extra: &[String],
    ) -> Lr {
        let ttl = ttl.to_string();
        match tool {
            Tool::Lr => scene
                .leaderrun(id)
                .args(&self.flags)
                .args(&["--ttl", &ttl, "--on-exit", "exit"])
                .args(extra)
                .fenced(child)
                .spawn(),
            Tool::Hot => {
                let journal = scene.path("journal");
                scene
                    .leaderrun(id)
                    .args(&self.flags)
                    .args(&["--ttl", &ttl, "--hot-standby"])
                    .args(extra)
                    .command(&[hot_child().as_os_str(), journal.as_os_str()])
                    .spawn()
            }
            Tool::Lk => {
                let cmd = etcdctl_command(&self.etcd.endpoints(), &[]);
                scene
                    .command(id, cmd)
                    .args(&self.flags)
                    .args(&["lock", "--ttl", &ttl, &scene.election, "--"])
                    .args(&scene.fenced(child))
                    .spawn()
            }
        }
    }

    /// How many keys are under `election/` (both tools' candidates keep one each).
    fn keys(&self, election: &str) -> usize {
        let prefix = format!("{election}/");
        let mut cmd = etcdctl_command(&self.etcd.endpoints(), &[]);
        cmd.args(&self.flags).args([
            "--command-timeout=3s",
            "get",
            "--prefix",
            &prefix,
            "--keys-only",
        ]);
        let out = run_with_timeout(&mut cmd, 10 * SEC);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .count()
    }

    /// Polls (an etcdctl each: never while a handover is measured) until `election/` holds
    /// `count` keys.
    fn wait_keys(&self, election: &str, count: usize, timeout: Duration, poll: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.keys(election) >= count {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(poll);
        }
    }
}

/// SIGTERM, up to 3 s, then SIGKILL; reaped.
fn stop(lr: &mut Lr) {
    if lr.try_wait().is_some() {
        return;
    }
    lr.signal(Signal::SIGTERM);
    if lr.wait_exit(3 * SEC).is_none() {
        lr.kill();
    }
}

/// SIGTERM to the children that have not ended (`etcdctl lock` lets go only when its child
/// ends; a SIGKILLed `etcdctl lock` leaves its child behind).
fn stop_children(follow: &mut Follow) {
    for r in follow.poll().to_vec() {
        if end_ns(&r).is_none() && process_alive(r.pid) {
            signal_pid(r.pid, Signal::SIGTERM);
        }
    }
}

// ---------------------------------------------------------------------------
// Two candidates: one handover
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    ExitLr,
    ExitLock,
    TermLr,
    KillLr,
    KillLock,
    HealthLr,
    /// ExitLr and TermLr with HOOKS on both candidates.
    ExitHooks,
    TermHooks,
    /// ExitLr with a third candidate C queued after B; all of priority 0.
    ExitThree,
    /// ExitThree with C of `--priority 5`: B passes it, and C takes over.
    ExitPrio,
}

const KINDS: [Kind; 6] = [
    Kind::ExitLr,
    Kind::ExitLock,
    Kind::TermLr,
    Kind::KillLr,
    Kind::KillLock,
    Kind::HealthLr,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::ExitLr => "exit-lr",
            Kind::ExitLock => "exit-lock",
            Kind::TermLr => "term-lr",
            Kind::KillLr => "kill-lr",
            Kind::KillLock => "kill-lock",
            Kind::HealthLr => "health-lr",
            Kind::ExitHooks => "exit-hooks",
            Kind::TermHooks => "term-hooks",
            Kind::ExitThree => "exit-three",
            Kind::ExitPrio => "exit-priority",
        }
    }

    fn tool(self) -> Tool {
        match self {
            Kind::ExitLock | Kind::KillLock => Tool::Lk,
            _ => Tool::Lr,
        }
    }
}

/// The two-candidate figures of one mode.
#[derive(Default)]
struct Figures {
    /// By kind: the gap (ms) of each kept run.
    ms: HashMap<&'static str, Vec<f64>>,
    /// SIGTERM to the old child's end (the SIGTERM handover).
    term_stop: Vec<f64>,
    /// The leader's exit status after SIGTERM.
    term_status: Vec<String>,
    /// By kind (kill-lr, kill-lock): the old child still there when the standby's started.
    old_running: HashMap<&'static str, Vec<bool>>,
    /// The old child's end to the new child's start, in the health failover.
    health_gap: Vec<f64>,
    discarded: usize,
    term_lock: String,
    hwm_lr: u64,
    hwm_lk: u64,
    hwm_http: u64,
    /// /leader's latencies (ms) at 100 requests/s.
    leader_lat: Vec<f64>,
}

impl Figures {
    fn of(&self, kind: Kind) -> &[f64] {
        self.ms.get(kind.name()).map_or(&[], Vec::as_slice)
    }

    fn done(&self, kind: Kind) -> usize {
        self.of(kind).len()
    }

    fn last(&self, kind: Kind) -> String {
        self.of(kind)
            .last()
            .map_or(String::new(), |v| format!("{v:.2}"))
    }

    fn old_running(&self, kind: Kind) -> usize {
        self.old_running
            .get(kind.name())
            .map_or(0, |v| v.iter().filter(|&&r| r).count())
    }
}

/// A handover's two candidates and the file their children record in; stopped on drop,
/// whichever way the run ended.
struct Pair {
    a: Lr,
    b: Option<Lr>,
    /// The third candidate of ExitThree and ExitPrio.
    c: Option<Lr>,
    follow: Follow,
}

impl Drop for Pair {
    fn drop(&mut self) {
        stop_children(&mut self.follow);
        for lr in [&mut self.c, &mut self.b].into_iter().flatten() {
            stop(lr);
        }
        stop(&mut self.a);
    }
}

/// The second child (the standby's) has started.
fn b_started(runs: &[Run]) -> bool {
    runs.len() >= 2
}

/// One handover of `kind`: adds its figures to `f`, or says why the run is discarded.
fn handover(m: &Mode, kind: Kind, attempt: usize, f: &mut Figures) -> Result<(), String> {
    let name = format!("{}-{attempt}", kind.name());
    let scene = m.scene(&name);
    let tool = kind.tool();
    let exit_after = CHILD_MS.to_string();
    let child_a: Vec<&str> = match kind {
        Kind::ExitLr | Kind::ExitLock | Kind::ExitHooks | Kind::ExitThree | Kind::ExitPrio => {
            vec!["--exit-after", &exit_after]
        }
        _ => Vec::new(),
    };
    // The check fails once the file <id>.sick exists: the instant it is made is the failure's.
    let sick = |id: &str| scene.path(&format!("{id}.sick"));
    let health = |id: &str| -> Vec<String> {
        if matches!(kind, Kind::ExitHooks | Kind::TermHooks) {
            return HOOKS.iter().map(|s| s.to_string()).collect();
        }
        if kind != Kind::HealthLr {
            return Vec::new();
        }
        let mut opts = vec![
            "--health-cmd".to_string(),
            format!("test ! -e '{}'", sick(id).display()),
        ];
        opts.extend(HEALTH.iter().map(|s| s.to_string()));
        opts
    };
    let a = m.start(tool, &scene, "A", TTL, &child_a, &health("A"));
    let mut p = Pair {
        a,
        b: None,
        c: None,
        follow: Follow::new(scene.records.clone()),
    };
    if !p.follow.wait(10 * SEC, |r| !r.is_empty()) {
        return Err("leader's child did not start in 10 s".into());
    }
    // Only now the standby: no race for the first turn.
    p.b = Some(m.start(tool, &scene, "B", TTL, &[], &health("B")));
    if !m.wait_keys(&name, 2, 5 * SEC, 20 * MS) {
        return Err("standby not queued in 5 s".into());
    }
    if matches!(kind, Kind::ExitThree | Kind::ExitPrio) {
        let priority: Vec<String> = match kind {
            Kind::ExitPrio => vec!["--priority".into(), "5".into()],
            _ => Vec::new(),
        };
        p.c = Some(m.start(tool, &scene, "C", TTL, &[], &priority));
        if !m.wait_keys(&name, 3, 5 * SEC, 20 * MS) {
            return Err("third candidate not queued in 5 s".into());
        }
    }
    let queued = mono_now_ns();
    let child_a = p.follow.runs()[0].pid;

    if kind == Kind::HealthLr {
        thread::sleep(SETTLE);
        let t_fail = mono_now_ns();
        std::fs::write(sick("A"), b"").expect("create the health check's file");
        // Detection takes 2 to 3 intervals (the failure falls anywhere in one); then a handover.
        if !p.follow.wait(15 * SEC, b_started) {
            return Err("no health failover in 15 s".into());
        }
        let runs = p.follow.runs();
        f.ms.entry(kind.name())
            .or_default()
            .push(ms(t_fail, runs[1].start_ns));
        if let Some(end) = end_ns(&runs[0]) {
            f.health_gap.push(ms(end, runs[1].start_ns));
        }
        return Ok(());
    }

    let mut t_kill = 0;
    let term = matches!(kind, Kind::TermLr | Kind::TermHooks);
    if term || matches!(kind, Kind::KillLr | Kind::KillLock) {
        thread::sleep(SETTLE);
        t_kill = mono_now_ns();
        let sig = if term {
            Signal::SIGTERM
        } else {
            Signal::SIGKILL
        };
        p.a.signal(sig);
    }

    if matches!(kind, Kind::KillLr | Kind::KillLock) {
        // A SIGKILLed child leaves no end line: time the kill to the standby's child start, and
        // look whether the old child is still there when it does.
        if !p.follow.wait(Duration::from_secs(TTL + 10), b_started) {
            return Err("no takeover in TTL + 10 s".into());
        }
        let start_b = p.follow.runs()[1].start_ns;
        f.ms.entry(kind.name())
            .or_default()
            .push(ms(t_kill, start_b));
        f.old_running
            .entry(kind.name())
            .or_default()
            .push(process_alive(child_a));
        p.a.kill();
        return Ok(());
    }

    if !p.follow.wait(10 * SEC, |r| end_ns(&r[0]).is_some()) {
        return Err("old child did not end in 10 s".into());
    }
    if !p.follow.wait(10 * SEC, b_started) {
        return Err("no handover in 10 s".into());
    }
    let runs = p.follow.runs();
    let (end_a, start_b) = (end_ns(&runs[0]).expect("ended"), runs[1].start_ns);
    // Checked once the new child runs: nothing forks during the handover.
    if !term && queued + MIN_QUEUED_MS * 1_000_000 > end_a {
        return Err(format!(
            "standby queued only {:.2} ms before the child ended (want >= {MIN_QUEUED_MS})",
            ms(queued, end_a)
        ));
    }
    let next = if kind == Kind::ExitPrio { "C" } else { "B" };
    if runs[1].id.as_deref() != Some(next) {
        return Err(format!("{:?} took over, not {next}", runs[1].id));
    }
    f.ms.entry(kind.name())
        .or_default()
        .push(ms(end_a, start_b));
    if matches!(kind, Kind::ExitHooks | Kind::TermHooks) {
        // What each hook took by leaderrun's own account: the old leader's demote hook, the
        // new one's promote hook.
        let b = p.b.as_ref().expect("the standby");
        for (lr, hook, key) in [
            (&p.a, "on-demote", "took-demote"),
            (b, "on-promote", "took-promote"),
        ] {
            if let Some(took) = hook_took(&lr.log_text(), hook) {
                f.ms.entry(key).or_default().push(took);
            }
        }
    }
    if term {
        f.term_stop.push(ms(t_kill, end_a));
        let status = p.a.wait_exit(3 * SEC);
        f.term_status.push(match status {
            Some(s) => s.code().map_or(s.to_string(), |c| c.to_string()),
            None => "still running after 3 s".into(),
        });
    }
    Ok(())
}

/// What SIGTERM does to a leading `etcdctl lock` with a queued standby; returns the summary's
/// cell.
fn term_lock(m: &Mode) -> String {
    let tag = m.tag();
    say(&format!(
        "{tag}SIGTERM to a leading `etcdctl lock` (with a queued standby), then 2 s of watching:"
    ));
    let name = "term-lock";
    let scene = m.scene(name);
    let a = m.start(Tool::Lk, &scene, "A", TTL, &[], &[]);
    let mut p = Pair {
        a,
        b: None,
        c: None,
        follow: Follow::new(scene.records.clone()),
    };
    assert!(
        p.follow.wait(10 * SEC, |r| !r.is_empty()),
        "etcdctl lock's child did not start"
    );
    p.b = Some(m.start(Tool::Lk, &scene, "B", TTL, &[], &[]));
    assert!(
        m.wait_keys(name, 2, 5 * SEC, 20 * MS),
        "etcdctl lock standby not queued"
    );
    let child_a = p.follow.runs()[0].pid;
    p.a.signal(Signal::SIGTERM);
    thread::sleep(2 * SEC);
    let lock_proc = if p.a.is_running() {
        "still running"
    } else {
        "exited"
    };
    let runs = p.follow.poll().to_vec();
    let lock_child = match &runs[0] {
        r if end_ns(r).is_some() => format!("ended ({:?})", r.ending).to_lowercase(),
        _ if !process_alive(child_a) => "gone without a trace".into(),
        _ => "STILL RUNNING".into(),
    };
    let lock_standby = if b_started(&runs) {
        "took over"
    } else {
        "did not take over"
    };
    let keys = m.keys(name);
    say(&format!(
        "  etcdctl lock: {lock_proc}; its child (pid {child_a}): {lock_child}; standby: \
         {lock_standby}; keys under {name}/: {keys}"
    ));
    let summary = if lock_child == "STILL RUNNING" {
        "n/a (child keeps running)".to_string()
    } else {
        format!("n/a (child {lock_child})")
    };
    signal_pid(child_a, Signal::SIGTERM);
    let _ = p.a.wait_exit(3 * SEC);
    if p.follow.wait(3 * SEC, b_started) {
        let runs = p.follow.runs();
        if let Some(end) = end_ns(&runs[0]) {
            say(&format!(
                "  after the child itself was stopped, the standby took over {:.2} ms later",
                ms(end, runs[1].start_ns)
            ));
        }
    }
    summary
}

// ---------------------------------------------------------------------------
// Peak RSS and the status endpoint
// ---------------------------------------------------------------------------

/// GET http://addr/path `rate` times a second for `dur`, a new connection each, on a fixed
/// schedule (a late request goes out at once, the schedule is kept): (latency in ms from the
/// connect to the server's close, status code or 0 for none) per request.
fn load(addr: SocketAddr, path: &'static str, rate: u32, dur: Duration) -> Vec<(f64, u16)> {
    let period = SEC / rate;
    let start = Instant::now();
    let n = (dur.as_secs_f64() * f64::from(rate)).round() as u32;
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let at = start + period * i;
        let now = Instant::now();
        if at > now {
            thread::sleep(at - now);
        }
        let t0 = Instant::now();
        let code = common::http::http(addr, "GET", path, 2 * SEC).map_or(0, |a| a.code);
        out.push((t0.elapsed().as_secs_f64() * 1e3, code));
    }
    out
}

/// "200 x500, 0 x2": how many answers of each status code.
fn codes(answers: &[(f64, u16)]) -> String {
    let mut by: Vec<(u16, usize)> = Vec::new();
    for &(_, c) in answers {
        match by.iter_mut().find(|(k, _)| *k == c) {
            Some((_, n)) => *n += 1,
            None => by.push((c, 1)),
        }
    }
    by.sort_unstable();
    let parts: Vec<String> = by.iter().map(|(c, n)| format!("{c} x{n}")).collect();
    parts.join(", ")
}

/// A leaderrun with --status-addr on a free loopback port (a port another process took in
/// between makes leaderrun exit 2 at once: another is tried).
fn lr_http(m: &Mode, scene: &Scene) -> (Lr, u16) {
    for _ in 0..8 {
        let port = free_port();
        let addr = vec!["--status-addr".to_string(), format!("127.0.0.1:{port}")];
        let mut lr = m.start(Tool::Lr, scene, "A", TTL, &[], &addr);
        thread::sleep(Duration::from_millis(300));
        if lr.is_running() {
            return (lr, port);
        }
    }
    panic!("leaderrun --status-addr found no free port");
}

/// The peak RSS section for all modes at once, each on its own etcd.
fn peak_rss(modes: &[Mode], figs: &mut [Figures]) {
    say(&format!(
        "peak RSS: a leading leaderrun and a leading etcdctl lock, both --ttl {TTL}, after {} s \
         of leading",
        RSS_LEAD.as_secs()
    ));
    if modes.len() > 1 {
        say("  (plain and over TLS at the same time, each on its own etcd)");
    }
    say("  and a leading leaderrun --status-addr: /metrics scraped every second, /leader asked 100 times a second");
    struct Leaders {
        scenes: Vec<Scene>,
        lr: Lr,
        lk: Lr,
        http: Lr,
        port: u16,
    }
    let mut all = Vec::new();
    for m in modes {
        let scenes = vec![m.scene("rss-lr"), m.scene("rss-lock"), m.scene("rss-http")];
        let lr = m.start(Tool::Lr, &scenes[0], "A", TTL, &[], &[]);
        let lk = m.start(Tool::Lk, &scenes[1], "A", TTL, &[], &[]);
        let (http, port) = lr_http(m, &scenes[2]);
        all.push(Leaders {
            scenes,
            lr,
            lk,
            http,
            port,
        });
    }
    let mut loaders = Vec::new();
    for (m, l) in modes.iter().zip(&all) {
        for (scene, what) in
            l.scenes
                .iter()
                .zip(["leaderrun", "etcdctl lock", "leaderrun --status-addr"])
        {
            let mut follow = Follow::new(scene.records.clone());
            assert!(
                follow.wait(10 * SEC, |r| !r.is_empty()),
                "{}{what} did not lead",
                m.tag()
            );
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], l.port));
        let metrics = thread::spawn(move || load(addr, "/metrics", 1, RSS_LEAD));
        let leader = thread::spawn(move || load(addr, "/leader", 100, RSS_LEAD));
        loaders.push((metrics, leader));
    }
    thread::sleep(RSS_LEAD);
    for (((m, l), f), (metrics, leader)) in
        modes.iter().zip(&mut all).zip(figs.iter_mut()).zip(loaders)
    {
        let metrics = metrics.join().expect("the /metrics loader");
        let leader = leader.join().expect("the /leader loader");
        let tag = m.tag();
        let kb = |pid: u32, key: &str| status_field(pid, key).unwrap_or(0);
        f.hwm_lr = kb(l.lr.pid(), "VmHWM");
        f.hwm_lk = kb(l.lk.pid(), "VmHWM");
        f.hwm_http = kb(l.http.pid(), "VmHWM");
        say(&format!(
            "  {tag}leaderrun:    VmHWM {} MiB, VmRSS {} MiB, {} threads",
            mib(f.hwm_lr),
            mib(kb(l.lr.pid(), "VmRSS")),
            kb(l.lr.pid(), "Threads")
        ));
        say(&format!(
            "  {tag}etcdctl lock: VmHWM {} MiB, VmRSS {} MiB, {} threads",
            mib(f.hwm_lk),
            mib(kb(l.lk.pid(), "VmRSS")),
            kb(l.lk.pid(), "Threads")
        ));
        say(&format!(
            "  {tag}leaderrun --status-addr, scraped: VmHWM {} MiB, VmRSS {} MiB; status codes \
             of /leader: {}, of /metrics: {}",
            mib(f.hwm_http),
            mib(kb(l.http.pid(), "VmRSS")),
            codes(&leader),
            codes(&metrics)
        ));
        f.leader_lat = leader.iter().map(|&(ms, _)| ms).collect();
    }
    for l in &mut all {
        let mut follow = Follow::new(l.scenes[1].records.clone());
        stop_children(&mut follow);
        stop(&mut l.lr);
        stop(&mut l.lk);
        stop(&mut l.http);
    }
}

// ---------------------------------------------------------------------------
// Scale: N candidates on one election
// ---------------------------------------------------------------------------

/// One tool's N candidates on one election.
struct Queue {
    tool: Tool,
    scene: Scene,
    follow: Follow,
    /// The hot children's journal (Tool::Hot).
    journal: Journal,
    sups: Vec<Lr>,
    last_id: usize,
    /// How many of its keys were in etcd once it was queued (N, or what the tool reached).
    queued: usize,
    stalled: Option<String>,
}

impl Queue {
    /// No candidates yet, on a new scene for `name`.
    fn new(m: &Mode, tool: Tool, name: &str) -> Queue {
        let scene = m.scene(name);
        Queue {
            tool,
            follow: Follow::new(scene.records.clone()),
            journal: Journal::new(scene.path("journal")),
            scene,
            sups: Vec::new(),
            last_id: 0,
            queued: 0,
            stalled: None,
        }
    }

    fn election(&self) -> &str {
        &self.scene.election
    }

    /// One more candidate at the end of the queue.
    fn add(&mut self, m: &Mode) {
        self.last_id += 1;
        let id = format!("c{}", self.last_id);
        let extra = match (self.tool, tracing_on()) {
            (Tool::Lr, true) => vec!["--log-level".to_string(), "debug".to_string()],
            _ => Vec::new(),
        };
        let lr = m.start(self.tool, &self.scene, &id, SCALE_TTL, &SCALE_CHILD, &extra);
        self.sups.push(lr);
    }

    fn pids(&mut self) -> Vec<u32> {
        self.sups
            .iter_mut()
            .filter_map(|s| s.is_running().then(|| s.pid()))
            .collect()
    }

    /// Reaps the supervisor `pid` that ended (or is ending) and forgets it.
    fn reap(&mut self, pid: u32) {
        if let Some(i) = self.sups.iter().position(|s| s.pid() == pid) {
            let mut s = self.sups.remove(i);
            if s.wait_exit(5 * SEC).is_none() {
                s.kill();
            }
        }
    }

    /// The running child first (etcdctl lock lets go only when it ends), then SIGTERM to every
    /// supervisor at once; up to 10 s for all, then SIGKILL to the rest; reaped.
    fn stop(&mut self) {
        if let Some(c) = self.follow.holder() {
            signal_pid(c.pid, Signal::SIGTERM);
        }
        for s in &self.sups {
            s.signal(Signal::SIGTERM);
        }
        let deadline = Instant::now() + 10 * SEC;
        while Instant::now() < deadline && self.sups.iter_mut().any(|s| s.is_running()) {
            thread::sleep(50 * MS);
        }
        let mut killed = 0;
        for s in &mut self.sups {
            if s.is_running() {
                s.kill();
                killed += 1;
            }
        }
        if killed > 0 {
            say(&format!(
                "    {killed} did not stop within 10 s of SIGTERM: SIGKILLed"
            ));
        }
        self.sups.clear();
    }
}

/// N candidates of `tool` on `name`: the first alone (it leads), the others in batches, each
/// queued in etcd before the next.
fn queue(m: &Mode, tool: Tool, name: &str, n: usize) -> Queue {
    let t0 = mono_now_ns();
    let mut q = Queue::new(m, tool, name);
    q.add(m);
    let led = match tool {
        Tool::Hot => q
            .journal
            .wait(10 * SEC, |j| j.iter().any(|t| t.role == "leader")),
        _ => q.follow.wait(10 * SEC, |r| !r.is_empty()),
    };
    assert!(
        led,
        "{}: the first candidate's child did not lead in 10 s",
        tool.who()
    );
    while q.last_id < n {
        for _ in 0..BATCH {
            if q.last_id < n {
                q.add(m);
            }
        }
        if !m.wait_keys(name, q.last_id, 60 * SEC, 200 * MS) {
            // What the tool reaches is a figure too: the rows say it, and its handovers at N
            // are not measured.
            let reached = m.keys(name);
            let alive = q.pids().len();
            let why = format!(
                "{reached} of {} started queued within 60 s ({alive} processes running)",
                q.last_id
            );
            say(&format!("    {}: {why}", tool.who()));
            q.queued = reached;
            q.stalled = Some(why);
            return q;
        }
    }
    q.queued = n;
    say(&format!(
        "    {n} queued on {name} in {:.0} ms",
        ms(t0, mono_now_ns())
    ));
    q
}

/// The idle figures of one tool's N queued candidates.
#[derive(Default, Clone)]
struct Idle {
    /// How many were queued (N, or what the tool reached).
    n: usize,
    msgs: f64,
    per: f64,
    cpu: f64,
    etcd_cpu: f64,
    rss: (u64, f64, usize),
    guard_rss: (u64, f64, usize),
    pss: u64,
}

fn idle(m: &Mode, q: &mut Queue, n: usize) -> Idle {
    let sups = q.pids();
    let guards: Vec<u32> = match q.tool {
        Tool::Lr | Tool::Hot => sups.iter().filter_map(|&p| guardian_of(p)).collect(),
        Tool::Lk => Vec::new(),
    };
    let procs: Vec<u32> = sups.iter().chain(&guards).copied().collect();
    let addr = m.etcd.client_addr(0);
    let etcd_pid: Vec<u32> = m.etcd.pid(0).into_iter().collect();
    let msgs = || etcd_msgs(addr).unwrap_or_else(|e| panic!("cannot read etcd's /metrics: {e}"));
    let (t0, m0, c0, e0) = (mono_now_ns(), msgs(), cpu_ns(&procs), cpu_ns(&etcd_pid));
    thread::sleep(IDLE);
    let (t1, m1, c1, e1) = (mono_now_ns(), msgs(), cpu_ns(&procs), cpu_ns(&etcd_pid));
    let s = (t1 - t0) as f64 / 1e9;
    let pct_of_core = |d: u64| 100.0 * d as f64 / 1e9 / s;
    let i = Idle {
        n,
        msgs: (m1 - m0) / s,
        per: (m1 - m0) / s / n as f64,
        cpu: pct_of_core(c1.saturating_sub(c0)),
        etcd_cpu: pct_of_core(e1.saturating_sub(e0)),
        rss: rss(&sups),
        guard_rss: rss(&guards),
        pss: pss(&procs),
    };
    say(&format!(
        "    idle {s:.3} s: etcd received {:.1} msgs/s ({:.3} per candidate), etcd CPU {:.2} %; \
         CPU of the {} processes {:.2} % of one core",
        i.msgs,
        i.per,
        i.etcd_cpu,
        procs.len(),
        i.cpu
    ));
    let guards_text = match q.tool {
        Tool::Lr | Tool::Hot => format!(
            ", {} guardians {} MiB (median {} MiB)",
            i.guard_rss.2,
            mib(i.guard_rss.0),
            mib(i.guard_rss.1 as u64)
        ),
        Tool::Lk => String::new(),
    };
    say(&format!(
        "    RSS: {} supervisors {} MiB (median {} MiB){guards_text}; PSS of all {} MiB",
        i.rss.2,
        mib(i.rss.0),
        mib(i.rss.1 as u64),
        mib(i.pss)
    ));
    i
}

/// Ends the leading child's turn, with the queue settled: `term` false: SIGTERM to the child
/// itself, which records its end and exits 0 (to its supervisor, the child ended on its own);
/// true: SIGTERM to the leading supervisor. The gap (ms) from the old child's end to the new
/// child's start.
fn scale_handover(q: &mut Queue, term: bool) -> Result<Traced, String> {
    let c = q.follow.holder().ok_or("no child running")?;
    let sup = ppid(c.pid).ok_or("the child's supervisor is gone")?;
    let before = q.follow.runs().len();
    let offset = wall_minus_mono();
    signal_pid(if term { sup } else { c.pid }, Signal::SIGTERM);
    // Only the record file is read until the new child runs: nothing forks.
    if !q.follow.wait(10 * SEC, |r| r.len() > before) {
        return Err("no handover in 10 s".into());
    }
    let runs = q.follow.runs();
    let t_end = runs
        .iter()
        .rev()
        .find(|r| r.pid == c.pid)
        .and_then(end_ns)
        .ok_or("the old child left no end line")?;
    let new = runs[runs.len() - 1].clone();
    let gap = ms(t_end, new.start_ns);
    let log_of = |pid: Option<u32>| {
        let pid = pid?;
        q.sups
            .iter()
            .find(|s| s.pid() == pid)
            .map(|s| s.log.clone())
    };
    let new_sup = ppid(new.pid).unwrap_or(0);
    let logs = (log_of(Some(sup)), log_of(Some(new_sup)));
    q.reap(sup);
    let mut traced = Traced {
        gap,
        t_end,
        pids: (sup, new_sup, new.pid),
        steps: Vec::new(),
    };
    if let (true, (Some(old_log), Some(new_log))) = (tracing_on() && q.tool == Tool::Lr, logs) {
        // The log lines are written by a thread of their own, a little after the fact.
        thread::sleep(200 * MS);
        for (who, needle) in TRACED_STEPS {
            let log = if *who == "old" { &old_log } else { &new_log };
            let at = log_mono(log, needle, offset).map(|t| ms(t_end, t));
            traced.steps.push((*needle, at));
        }
        traced.steps.push(("new child started", Some(gap)));
    }
    Ok(traced)
}

/// A handover at scale: its gap, when the old child ended (CLOCK_MONOTONIC ns), and with
/// --trace the steps of it found in the supervisors' logs (ms after the old child's end).
struct Traced {
    gap: f64,
    t_end: u64,
    /// The old supervisor's pid, the new one's and the new child's.
    pids: (u32, u32, u32),
    steps: Vec<(&'static str, Option<f64>)>,
}

/// The log lines of a handover, the old leader's and the new one's (debug level).
const TRACED_STEPS: &[(&str, &str)] = &[
    ("old", "child exited"),
    ("old", "stopping the child, then resigning"),
    ("old", "child's group gone"),
    ("old", "deleting our key"),
    ("new", "our turn"),
    ("new", "spawning the child"),
    ("new", "leading: child started"),
    ("old", "resigned"),
    ("old", "lease revoked"),
];

/// The figures of one N.
#[derive(Default)]
struct Scale {
    idle: HashMap<&'static str, Idle>,
    /// By "lr/exit", "lr/term", "lk/exit": the gaps (ms), pooled over the rounds.
    gaps: HashMap<String, Vec<f64>>,
    stalled: Vec<(Tool, String)>,
    /// By tool: children that started while another was alive, and how many children ran.
    overlaps: HashMap<&'static str, (usize, usize)>,
}

impl Scale {
    /// Counts the overlaps among `q`'s children (once its supervisors are stopped).
    fn count_overlaps(&mut self, q: &mut Queue) {
        let runs = q.follow.poll();
        let found = overlapping(runs).len();
        if found > 0 {
            say(&format!(
                "    {}: {found} children started while another ran",
                q.tool.who()
            ));
        }
        let e = self.overlaps.entry(tool_key(q.tool)).or_default();
        e.0 += found;
        e.1 += runs.len();
    }
}

fn tool_key(t: Tool) -> &'static str {
    match t {
        Tool::Lr => "lr",
        Tool::Lk => "lk",
        Tool::Hot => "hot",
    }
}

fn scale_n(m: &Mode, n: usize, runs: usize, idle_too: bool) -> Scale {
    let mut sc = Scale::default();
    // The idle figures, one tool at a time: only its N candidates on etcd (without them, only
    // etcdctl lock's N are queued here).
    let mut lk_queue = None;
    for tool in [Tool::Lr, Tool::Lk] {
        if !idle_too && tool == Tool::Lr {
            continue;
        }
        let name = format!("scale-{n}-{}", tool_key(tool));
        say(&format!("  {n} x {} on {name}:", tool.who()));
        let mut q = queue(m, tool, &name, n);
        if idle_too {
            thread::sleep(IDLE_SETTLE);
            let queued = q.queued;
            sc.idle.insert(tool_key(tool), idle(m, &mut q, queued));
        }
        // leaderrun's go, so that etcdctl lock's idle window has etcd to itself.
        match tool {
            Tool::Lr | Tool::Hot => {
                q.stop();
                sc.count_overlaps(&mut q);
            }
            Tool::Lk => lk_queue = Some(q),
        }
    }
    // The handovers, the two tools taking turns (so that a slower minute of this shared machine
    // weighs on both alike), each with N queued: leaderrun's N again, on a new election.
    say(&format!(
        "  handovers with {n} queued, leaderrun and etcdctl lock in turn:"
    ));
    let lr_queue = queue(m, Tool::Lr, &format!("scale-{n}-lr-turns"), n);
    thread::sleep(IDLE_SETTLE);
    let mut queues = [lr_queue, lk_queue.expect("etcdctl lock's queue")];
    for k in 1..=runs {
        for q in &mut queues {
            if q.stalled.is_some() {
                continue;
            }
            let kinds: &[(&str, bool)] = match q.tool {
                Tool::Lr => &[("exit", false), ("term", true)],
                Tool::Lk => &[("exit", false)],
                Tool::Hot => &[],
            };
            for &(kind, term) in kinds {
                match scale_handover(q, term) {
                    Ok(t) => {
                        if tracing_on() {
                            say(&format!(
                                "    {} {kind} {k}: {:.2} ms, the old child ended at {} ns \
                                 (supervisors: old {}, new {}; new child {}){}",
                                tool_key(q.tool),
                                t.gap,
                                t.t_end,
                                t.pids.0,
                                t.pids.1,
                                t.pids.2,
                                t.steps
                                    .iter()
                                    .map(|(what, at)| match at {
                                        Some(at) => format!("; {what} {at:+.2}"),
                                        None => String::new(),
                                    })
                                    .collect::<String>()
                            ));
                        }
                        sc.gaps
                            .entry(format!("{}/{kind}", tool_key(q.tool)))
                            .or_default()
                            .push(t.gap)
                    }
                    Err(why) => {
                        // After a failed handover nothing may lead any more: this tool's runs
                        // end there.
                        let what = format!("{kind} handover {k}: {why}");
                        say(&format!("    {}: {what}", tool_key(q.tool)));
                        q.stalled = Some(what);
                        break;
                    }
                }
                // One more at the end of the queue, so that N stay queued.
                q.add(m);
                let name = q.election().to_string();
                if !m.wait_keys(&name, n, 30 * SEC, 200 * MS) {
                    say(&format!(
                        "    {}: not {n} queued again within 30 s",
                        tool_key(q.tool)
                    ));
                }
                thread::sleep(2 * SETTLE);
            }
        }
    }
    for q in &mut queues {
        let kinds: &[&str] = match q.tool {
            Tool::Lr => &["exit", "term"],
            Tool::Lk => &["exit"],
            Tool::Hot => &[],
        };
        for kind in kinds {
            let v = sc
                .gaps
                .get(&format!("{}/{kind}", tool_key(q.tool)))
                .cloned()
                .unwrap_or_default();
            let mut sorted = v.clone();
            sorted.sort_by(f64::total_cmp);
            say(&format!(
                "    {}: {kind} handover with {n} queued, ms (p50 / p90 / max of {}): {}; sorted: {}",
                q.tool.who(),
                v.len(),
                p50_p90_max(&v),
                sorted
                    .iter()
                    .map(|g| format!("{g:.1}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
        if let Some(s) = q.stalled.take() {
            sc.stalled.push((q.tool, s));
        }
        q.stop();
        sc.count_overlaps(q);
    }
    sc
}

// ---------------------------------------------------------------------------
// Storm: N started at once, etcd killed and started again under them
// ---------------------------------------------------------------------------

/// The outages of the storm rows: within the TTL (leases and keys survive; every candidate
/// reconnects at once) and past the candidates' deadlines (every one begins anew at once).
const OUTAGES: [Duration; 2] = [Duration::from_secs(3), Duration::from_secs(25)];
/// How long the N may take to settle after a start or an outage.
const STORM_LIMIT: Duration = Duration::from_secs(180);

/// The figures of one N's storm.
#[derive(Default)]
struct Storm {
    /// What happened, and seconds until settled (None: not within STORM_LIMIT).
    rows: Vec<(String, Option<f64>)>,
    /// leaderruns that exited on their own over the run.
    exited: usize,
    /// Children that started while another ran, and how many children ran.
    overlaps: (usize, usize),
}

/// Seconds until `election/` holds exactly `n` keys and one child runs, and both stay so for a
/// second (looked at every 250 ms; the settled time is the first look of that second); None
/// after STORM_LIMIT.
fn settle(m: &Mode, q: &mut Queue, n: usize, since: u64) -> Option<f64> {
    let deadline = Instant::now() + STORM_LIMIT;
    let mut first: Option<u64> = None;
    while Instant::now() < deadline {
        let now = mono_now_ns();
        let leading = q
            .follow
            .holder()
            .is_some_and(|r| r.seen_within(mono_now_ns(), Duration::from_millis(200)));
        if leading && m.keys(q.election()) == n {
            match first {
                Some(t) if now - t >= 1_000_000_000 => return Some(ms(since, t) / 1e3),
                Some(_) => {}
                None => first = Some(now),
            }
        } else {
            first = None;
        }
        thread::sleep(250 * MS);
    }
    None
}

fn storm_n(n: usize) -> Storm {
    let mut st = Storm::default();
    let mut m = Mode::plain(false);
    let name = format!("storm-{n}");
    say(&format!(
        "  {n} x leaderrun on {name}, started at once, TTL {SCALE_TTL} s:"
    ));
    let mut q = Queue::new(&m, Tool::Lr, &name);
    let t0 = mono_now_ns();
    for _ in 0..n {
        q.add(&m);
    }
    let took = settle(&m, &mut q, n, t0);
    say(&format!("    started at once: settled in {}", secs(took)));
    st.rows.push(("started at once".into(), took));
    for outage in OUTAGES {
        thread::sleep(IDLE_SETTLE);
        let lost_before = lost_leases(&q);
        let leader = q.follow.holder().map(|r| r.pid);
        m.etcd.kill(0);
        thread::sleep(outage);
        m.etcd.restart(0);
        let back = mono_now_ns();
        let took = settle(&m, &mut q, n, back);
        let kept = q.follow.holder().map(|r| r.pid) == leader;
        let what = format!(
            "etcd SIGKILLed, started again {} s later (the leader's child {}; {} leases lost)",
            outage.as_secs(),
            if kept { "kept" } else { "stopped, a new one" },
            lost_leases(&q) - lost_before
        );
        say(&format!("    {what}: settled in {}", secs(took)));
        st.rows.push((what, took));
    }
    let alive = q.pids().len();
    st.exited = q.sups.len() - alive;
    q.stop();
    let runs = q.follow.poll();
    st.overlaps = (overlapping(runs).len(), runs.len());
    say(&format!(
        "    {} exited on their own; {} of {} children started while another ran",
        st.exited, st.overlaps.0, st.overlaps.1
    ));
    st
}

/// How many times the candidates of `q` logged a lost lease (standby or leader), so far.
fn lost_leases(q: &Queue) -> usize {
    q.sups
        .iter()
        .map(|s| {
            s.log_text()
                .lines()
                .filter(|l| l.contains("lost its lease") || l.contains("leadership lost"))
                .count()
        })
        .sum()
}

fn secs(v: Option<f64>) -> String {
    v.map_or(format!("not within {} s", STORM_LIMIT.as_secs()), |s| {
        format!("{s:.1} s")
    })
}

// ---------------------------------------------------------------------------
// Roles: hook overhead, hot promotion
// ---------------------------------------------------------------------------

/// The hook overhead rows: the handovers with and without hooks, two candidates, in turns
/// (so that a slower minute of this shared machine weighs on both alike).
const HOOK_KINDS: [Kind; 6] = [
    Kind::ExitLr,
    Kind::ExitHooks,
    Kind::TermLr,
    Kind::TermHooks,
    Kind::ExitThree,
    Kind::ExitPrio,
];

fn hook_overhead(m: &Mode, runs: usize) -> Figures {
    say(&format!(
        "hook overhead: child-exit and SIGTERM handovers, two candidates, with `{}` on both and \
         without, in turns, {runs} runs each",
        HOOKS.join(" ")
    ));
    let mut f = Figures::default();
    let max_attempts = runs * 2 + 2;
    let mut attempt = 0;
    while HOOK_KINDS.iter().any(|&k| f.done(k) < runs) {
        attempt += 1;
        if attempt > max_attempts {
            say(&format!("giving up after {max_attempts} rounds"));
            break;
        }
        for kind in HOOK_KINDS {
            if f.done(kind) >= runs {
                continue;
            }
            if let Err(why) = handover(m, kind, attempt, &mut f) {
                f.discarded += 1;
                say(&format!("  {} run {attempt} discarded: {why}", kind.name()));
            }
        }
        say(&format!(
            "  round {attempt}: child-exit {} ms, with hooks {} ms | SIGTERM {} ms, with hooks {} ms \
             | 3 candidates {} ms, with priorities {} ms",
            f.last(Kind::ExitLr),
            f.last(Kind::ExitHooks),
            f.last(Kind::TermLr),
            f.last(Kind::TermHooks),
            f.last(Kind::ExitThree),
            f.last(Kind::ExitPrio)
        ));
    }
    f
}

/// The time (ms) of the last `hook done` line of `hook` in a leaderrun's log: its `took_us`.
fn hook_took(log: &str, hook: &str) -> Option<f64> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("hook done") && l.contains(hook))?;
    let took: f64 = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("took_us="))?
        .parse()
        .ok()?;
    Some(took / 1e3)
}

/// The hot promotion rows at one N.
#[derive(Default)]
struct Roles {
    /// The old child's `standby` record to the new child's `leader` record (ms).
    hot: Vec<f64>,
    /// `leaderrun resign` started to the new child's `leader` record (ms).
    resign: Vec<f64>,
    /// etcdctl lock's child-exit gaps (ms), in the same rounds.
    lock: Vec<f64>,
    /// Where the hot gap went, by leaderrun's log lines (ms each, per run): the old child's
    /// standby record to the old leader's log of its confirmation (the datagram's way), that
    /// to the new leader's `leading` (the resign's round trip to etcd, the watch event, the
    /// verify read, the role file and the signal), that to the new child's `leader` record (the
    /// line is written after the signal: the child may read first, a negative figure); and the new leader's `leading` to the old one's
    /// `resigned` (logged once etcd answered its resign).
    parts: [Vec<f64>; 4],
    stalled: Vec<(Tool, String)>,
}

/// CLOCK_REALTIME minus CLOCK_MONOTONIC, in ns: leaderrun's log stamps are wall-clock (to the
/// microsecond), the children's records monotonic.
fn wall_minus_mono() -> i128 {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as i128;
    wall - mono_now_ns() as i128
}

/// The monotonic ns of the last line of `log` that holds `needle` (its RFC 3339 stamp, moved
/// by `offset`).
fn log_mono(log: &std::path::Path, needle: &str, offset: i128) -> Option<u64> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().rev().find(|l| l.contains(needle))?;
    let stamp = line.split_whitespace().next()?;
    let at = humantime::parse_rfc3339_weak(stamp).ok()?;
    let wall = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos() as i128;
    u64::try_from(wall - offset).ok()
}

/// One hot handover: `leaderrun resign`, then the new child's `leader` record. (the gap, the
/// time from resign's start, and the breakdown by the logs, if found).
fn hot_handover(m: &Mode, q: &mut Queue) -> Result<(f64, f64, Option<[f64; 4]>), String> {
    let old = q.journal.leader().ok_or("no hot child leads")?;
    let from = q.journal.poll().len();
    let offset = wall_minus_mono();
    let mut cmd = q.scene.subcommand("resign", &["--timeout", "20s"]);
    cmd.args(&m.flags);
    let t0 = mono_now_ns();
    // The one fork of the run is the trigger's, before the gap opens.
    let out = run_with_timeout(&mut cmd, 30 * SEC);
    if !out.status.success() {
        return Err(format!(
            "leaderrun resign: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let told = |j: &[common::bench::Took]| {
        j[from..]
            .iter()
            .find(|t| t.role == "leader" && t.pid != old)
            .cloned()
    };
    if !q.journal.wait(10 * SEC, |j| told(j).is_some()) {
        return Err("no new hot child told it leads in 10 s".into());
    }
    let j = q.journal.poll();
    let new = told(j).expect("found");
    let demoted = j[from..]
        .iter()
        .find(|t| t.pid == old && t.role == "standby")
        .ok_or("the old child never recorded standby")?
        .ns;
    // The supervisors by their children: each hot child's parent is its leaderrun.
    let log_of = |child: u32| {
        let sup = ppid(child)?;
        q.sups
            .iter()
            .find(|s| s.pid() == sup)
            .map(|s| s.log.clone())
    };
    let parts = (|| {
        let old_log = log_of(old)?;
        let confirmed = log_mono(&old_log, "confirmed its demotion", offset)?;
        let resigned = log_mono(&old_log, "resigned", offset)?;
        let leading = log_mono(&log_of(new.pid)?, "leading: child started", offset)?;
        Some([
            ms(demoted, confirmed),
            ms(confirmed, leading),
            ms(leading, new.ns),
            ms(leading, resigned),
        ])
    })();
    Ok((ms(demoted, new.ns), ms(t0, new.ns), parts))
}

fn roles_n(m: &Mode, n: usize, runs: usize) -> Roles {
    let mut r = Roles::default();
    say(&format!(
        "  {n} x leaderrun --hot-standby and {n} x etcdctl lock, TTL {SCALE_TTL} s, in turns:"
    ));
    let hot = queue(m, Tool::Hot, &format!("roles-{n}-hot"), n);
    let lk = queue(m, Tool::Lk, &format!("roles-{n}-lk"), n);
    thread::sleep(IDLE_SETTLE);
    let mut queues = [hot, lk];
    for k in 1..=runs {
        for q in &mut queues {
            if q.stalled.is_some() {
                continue;
            }
            let result = match q.tool {
                Tool::Hot => hot_handover(m, q).map(|(gap, resign, parts)| {
                    r.hot.push(gap);
                    r.resign.push(resign);
                    if let Some(p) = parts {
                        for (v, x) in r.parts.iter_mut().zip(p) {
                            v.push(x);
                        }
                    }
                    format!("{gap:.2} ms (resign to told: {resign:.2} ms)")
                }),
                _ => scale_handover(q, false).map(|t| {
                    let gap = t.gap;
                    r.lock.push(gap);
                    // One more at the end, so that N stay queued (the old one exited).
                    q.add(m);
                    format!("{gap:.2} ms")
                }),
            };
            match result {
                Ok(what) => say(&format!("    {} {k}: {what}", tool_key(q.tool))),
                Err(why) => {
                    let what = format!("handover {k}: {why}");
                    say(&format!("    {}: {what}", tool_key(q.tool)));
                    q.stalled = Some(what);
                    continue;
                }
            }
            // A resigned leaderrun queues again at the end: N queued again either way.
            let name = q.election().to_string();
            if !m.wait_keys(&name, n, 30 * SEC, 200 * MS) {
                say(&format!(
                    "    {}: not {n} queued again within 30 s",
                    tool_key(q.tool)
                ));
            }
            thread::sleep(2 * SETTLE);
        }
    }
    for q in &mut queues {
        if let Some(s) = q.stalled.take() {
            r.stalled.push((q.tool, s));
        }
        q.stop();
    }
    r
}

// ---------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------

/// N candidates hold one client connection each to etcd, which inherits this process's limit:
/// raise the soft limit of open files to fit the largest N (a log file, a connection, etcd's
/// side of it, and room for etcd's own files).
fn raise_nofile(max_n: usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let want = (max_n * 4 + 1024) as u64;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < want && setrlimit(Resource::RLIMIT_NOFILE, want, hard).is_err() {
        bad(&format!(
            "--candidates {max_n} needs {want} open files; the limit is {soft} (hard limit {hard})"
        ));
    }
}

fn etcd_version() -> String {
    let bin = std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".into());
    let out = Command::new(&bin)
        .arg("--version")
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .find_map(|l| l.strip_prefix("etcd Version: "))
        .unwrap_or("?")
        .to_string()
}

fn cpus() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

/// The roles tables: the hook overhead (if measured), then the hot promotion at each N.
fn print_roles(hooks: Option<&Figures>, roles: &[(usize, Roles)]) {
    if let Some(hooks) = hooks {
        print_hooks(hooks);
    }
    if roles.is_empty() {
        return;
    }
    print_hot(roles);
}

/// The hook overhead table.
fn print_hooks(hooks: &Figures) {
    let row = |a: &str, b: &str, c: &str, d: &str| {
        println!("{}", format!("{a:<44} {b:<26} {c:<40} {d}").trim_end())
    };
    let ms2 = |v: &[f64]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            format!("{} / {} ms", fmt2(median(v)), fmt2(pct(v, 90)))
        }
    };
    let diff = |a: &[f64], b: &[f64]| match (median(a), median(b)) {
        (Some(a), Some(b)) => format!("{:+.2} ms", b - a),
        _ => "-".into(),
    };
    row(
        "hook overhead, 2 candidates (p50/p90)",
        "without hooks",
        &format!("with {}", HOOKS.join(" ")),
        "difference of p50",
    );
    for (what, plain, hooked) in [
        ("child-exit handover", Kind::ExitLr, Kind::ExitHooks),
        ("SIGTERM handover", Kind::TermLr, Kind::TermHooks),
    ] {
        let (a, b) = (hooks.of(plain), hooks.of(hooked));
        row(
            &format!("{what} ({} + {} runs)", a.len(), b.len()),
            &ms2(a),
            &ms2(b),
            &diff(a, b),
        );
    }
    let (a, b) = (hooks.of(Kind::ExitThree), hooks.of(Kind::ExitPrio));
    row(
        &format!(
            "child-exit handover, 3 candidates ({} + {} runs)",
            a.len(),
            b.len()
        ),
        &format!("all priority 0: {}", ms2(a)),
        &format!("C (joined last) --priority 5: {}", ms2(b)),
        &format!("{} (ratio of p50)", ratio(median(b), median(a))),
    );
    let took = |k: &str| hooks.ms.get(k).cloned().unwrap_or_default();
    row(
        "  each hook, by its `hook done` log (p50/p90)",
        "",
        &format!(
            "demote {}, promote {}",
            ms2(&took("took-demote")),
            ms2(&took("took-promote"))
        ),
        "",
    );
}

/// The hot promotion table.
fn print_hot(roles: &[(usize, Roles)]) {
    let row = |a: &str, b: &str, c: &str, d: &str| {
        println!("{}", format!("{a:<44} {b:<26} {c:<40} {d}").trim_end())
    };
    let ms3 = |v: &[f64]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            format!("{} ms", p50_p90_max(v))
        }
    };
    println!();
    row(
        &format!("hot promotion, TTL {SCALE_TTL} s (p50/p90/max)"),
        "leaderrun --hot-standby",
        "etcdctl lock (child-exit)",
        "ratio of p50",
    );
    for (n, r) in roles {
        row(
            &format!(
                "N={n}: promotion gap ({} + {} runs)",
                r.hot.len(),
                r.lock.len()
            ),
            &ms3(&r.hot),
            &ms3(&r.lock),
            &ratio(median(&r.hot), median(&r.lock)),
        );
        for (tool, why) in &r.stalled {
            row(&format!("N={n}: {} STALLED", tool.who()), why, "", "");
        }
        row(
            &format!("N={n}: `leaderrun resign` to told"),
            &ms3(&r.resign),
            "",
            "",
        );
        for (what, v) in [
            "standby record to old's `confirmed`",
            "`confirmed` to new's `leading`",
            "new's `leading` to its child told",
            "(new's `leading` to old's `resigned`)",
        ]
        .iter()
        .zip(&r.parts)
        {
            row(&format!("N={n}:   {what}"), &ms3(v), "", "");
        }
    }
}

fn one(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1} ms"))
}

fn main() {
    // A debug build (cargo test --all-targets builds and scripts/test.sh runs every test-mode
    // executable, this one too) would measure the debug leaderrun beside it: it measures nothing,
    // and says so in the line test runners count.
    if cfg!(debug_assertions) {
        println!(
            "bench: a debug build; the figures come from `cargo bench --bench handover` (release)"
        );
        println!("test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
        return;
    }
    let opts = parse_args();
    TRACE.store(opts.trace, std::sync::atomic::Ordering::Relaxed);
    stop_all_on_signal();
    if let Some(&max_n) = opts.scale.iter().max() {
        raise_nofile(max_n);
    }
    let version = etcd_version();
    // Built now if it is not (cargo bench builds no example), not at the first candidate.
    let child = fenced_child_path();
    let mut modes = vec![Mode::plain(opts.tls)];
    if opts.tls {
        modes.push(Mode::tls());
    }
    say(&format!(
        "etcd {version} on {}; {} CPUs; {} runs per figure; the child: {}",
        modes[0].etcd.endpoints(),
        cpus(),
        opts.runs,
        child.display()
    ));
    if opts.tls {
        say(&format!(
            "and over TLS (mutual): etcd with --client-cert-auth on {}; CA, server and client \
             certificates ECDSA P-256, made with rcgen; leaderrun and etcdctl both with \
             --cacert/--cert/--key",
            modes[1].etcd.endpoints()
        ));
    }
    let mut figs: Vec<Figures> = modes.iter().map(|_| Figures::default()).collect();

    // ---- 1 and 2: handovers, interleaved so that drift hits all kinds (and modes) alike
    // --only: the two-candidate rows only without it; the hook overhead without it or with
    // `roles`; the scale rows without it or with `scale` or `handovers`.
    let all = opts.only.is_none();
    let hooks_too = matches!(opts.only, None | Some(Only::Roles));
    let scale_too = matches!(opts.only, None | Some(Only::Scale | Only::Handovers));
    let idle_too = opts.only != Some(Only::Handovers);
    if all {
        say(&format!(
            "child-exit handover (child lives {CHILD_MS} ms), SIGTERM handover, SIGKILLed \
         supervisor and health failover, {} runs each",
            opts.runs
        ));
    }
    let unfinished = |figs: &[Figures]| {
        all && figs
            .iter()
            .any(|f| KINDS.iter().any(|&k| f.done(k) < opts.runs))
    };
    // Per kind, discarded runs are retried, within a bound.
    let max_attempts = opts.runs * 2 + 2;
    let mut attempt = 0;
    while unfinished(&figs) {
        attempt += 1;
        if attempt > max_attempts {
            say(&format!("giving up after {max_attempts} rounds"));
            break;
        }
        for (m, f) in modes.iter().zip(figs.iter_mut()) {
            for kind in KINDS {
                if f.done(kind) >= opts.runs {
                    continue;
                }
                if let Err(why) = handover(m, kind, attempt, f) {
                    f.discarded += 1;
                    say(&format!(
                        "  {}{} run {attempt} discarded: {why}",
                        m.tag(),
                        kind.name()
                    ));
                }
            }
            say(&format!(
                "  {}round {attempt}: leaderrun exit {} ms | etcdctl lock exit {} ms | leaderrun \
                 SIGTERM {} ms | SIGKILL: leaderrun {} ms, etcdctl lock {} ms | health failover \
                 {} ms",
                m.tag(),
                f.last(Kind::ExitLr),
                f.last(Kind::ExitLock),
                f.last(Kind::TermLr),
                f.last(Kind::KillLr),
                f.last(Kind::KillLock),
                f.last(Kind::HealthLr)
            ));
        }
    }

    // ---- 2b: what SIGTERM does to etcdctl lock
    if all {
        for (m, f) in modes.iter().zip(figs.iter_mut()) {
            f.term_lock = term_lock(m);
        }
    }

    // ---- 3: peak RSS and the status endpoint
    if all {
        peak_rss(&modes, &mut figs);
    }

    // ---- 3b: hook overhead, on the plain etcd
    let hooks = hooks_too.then(|| hook_overhead(&modes[0], opts.runs));

    // ---- 4: scale, on a fresh plain etcd for each N (the ones above stopped): each N starts
    // from the same empty store and no earlier run's leases or watches are in the counts. (On
    // one etcd reused for every N, 200 leaderruns queued just after 100 `etcdctl lock` waiters
    // had been stopped were seen to stall at the first handover: the next in line's campaign,
    // waiting inside etcd's election service, did not return; a stall is reported as such, and
    // that tool's runs end there.)
    let summary_modes: Vec<(bool, &'static str)> = modes.iter().map(|m| (m.tls, m.tag())).collect();
    let etcds = modes.len();
    drop(modes);
    let mut scale: Vec<(usize, Scale)> = Vec::new();
    let mut base = 0.0;
    if scale_too && !opts.scale.is_empty() {
        say(&format!(
            "scale: N candidates on one election, TTL {SCALE_TTL} s, a fresh etcd for each N; \
             idle figures one tool at a time over {} s, then handovers with both tools queued, \
             in turn",
            IDLE.as_secs()
        ));
        let mut m = Some(Mode::plain(false));
        {
            let m = m.as_ref().expect("etcd");
            let addr = m.etcd.client_addr(0);
            let read =
                || etcd_msgs(addr).unwrap_or_else(|e| panic!("cannot read etcd's /metrics: {e}"));
            let (t0, m0) = (mono_now_ns(), read());
            thread::sleep(5 * SEC);
            let (t1, m1) = (mono_now_ns(), read());
            base = (m1 - m0) / ((t1 - t0) as f64 / 1e9);
            say(&format!(
                "  etcd with no candidates: {base:.1} msgs/s received"
            ));
        }
        for (i, &n) in opts.scale.iter().enumerate() {
            if i > 0 {
                // The last N's etcd goes before the next starts.
                drop(m.take());
                m = Some(Mode::plain(false));
            }
            let m = m.as_ref().expect("etcd");
            scale.push((n, scale_n(m, n, opts.runs, idle_too)));
        }
    }

    // ---- 4b: the storm, a fresh plain etcd for each N
    let mut storms: Vec<(usize, Storm)> = Vec::new();
    if opts.only == Some(Only::Storm) {
        say(&format!(
            "storm: N leaderruns started at once on one election (TTL {SCALE_TTL} s), then etcd \
             SIGKILLed and started again under them; a fresh etcd for each N"
        ));
        let ns = if opts.scale.is_empty() {
            vec![MAX_CANDIDATES]
        } else {
            opts.scale.clone()
        };
        for n in ns {
            storms.push((n, storm_n(n)));
        }
    }

    // ---- 5: hot promotion, a fresh plain etcd for each N
    let role_ns = match (opts.only, opts.scale.is_empty()) {
        (Some(Only::Roles), true) => vec![3],
        (None | Some(Only::Roles), false) => opts.scale.clone(),
        _ => Vec::new(),
    };
    let mut roles: Vec<(usize, Roles)> = Vec::new();
    if !role_ns.is_empty() {
        // Built (or found fresh) now, not while the first candidate is awaited.
        hot_child();
        say(&format!(
            "hot promotion: N `leaderrun --hot-standby` candidates (child: examples/hot_child.rs) \
             stepped down by `leaderrun resign`, and N `etcdctl lock` waiters' child-exit \
             handovers, in turns, TTL {SCALE_TTL} s, a fresh etcd for each N"
        ));
        for &n in &role_ns {
            let m = Mode::plain(false);
            roles.push((n, roles_n(&m, n, opts.runs)));
        }
    }

    // ---- summary
    println!();
    let mut tables = Vec::new();
    for (&(tls, tag), f) in summary_modes.iter().zip(&figs) {
        if !all {
            break;
        }
        let e_lr = f.of(Kind::ExitLr);
        let e_lk = f.of(Kind::ExitLock);
        let t_lr = f.of(Kind::TermLr);
        let k_lr = f.of(Kind::KillLr);
        let k_lk = f.of(Kind::KillLock);
        let h = f.of(Kind::HealthLr);
        let mut statuses = f.term_status.clone();
        statuses.sort();
        statuses.dedup();
        let statuses = statuses.join(",");
        let k_lr_old = f.old_running(Kind::KillLr);
        let k_lk_old = f.old_running(Kind::KillLock);
        say(&format!(
            "{tag}runs kept: leaderrun exit {}, etcdctl lock exit {}, leaderrun SIGTERM {}, \
             leaderrun SIGKILL {}, etcdctl lock SIGKILL {}, health failover {}; discarded {}",
            e_lr.len(),
            e_lk.len(),
            t_lr.len(),
            k_lr.len(),
            k_lk.len(),
            h.len(),
            f.discarded
        ));
        say(&format!(
            "{tag}child-exit handover, ms (median / min / max): leaderrun {}; etcdctl lock {}",
            med_min_max(e_lr),
            med_min_max(e_lk)
        ));
        say(&format!(
            "{tag}SIGTERM handover, ms (median / min / max): leaderrun {} (SIGTERM to child end: \
             median {} ms; exit status {statuses})",
            med_min_max(t_lr),
            fmt2(median(&f.term_stop))
        ));
        say(&format!(
            "{tag}supervisor SIGKILLed, kill to the standby's child start, ms (p50 / p99): \
             leaderrun {} / {} (old child still there at the takeover: {k_lr_old} of {}); \
             etcdctl lock {} / {} (old child runs on: {k_lk_old} of {})",
            fmt2(pct(k_lr, 50)),
            fmt2(pct(k_lr, 99)),
            k_lr.len(),
            fmt2(pct(k_lk, 50)),
            fmt2(pct(k_lk, 99)),
            k_lk.len()
        ));
        say(&format!(
            "{tag}health failover ({}), failure to the standby's child start, ms (p50 / p99): \
             leaderrun {} / {} (old child's end to the new child's start: median {} ms); \
             etcdctl lock has no health checks",
            HEALTH.join(" "),
            fmt2(pct(h, 50)),
            fmt2(pct(h, 99)),
            fmt2(median(&f.health_gap))
        ));
        let heading = match (summary_modes.len() > 1, tls) {
            (false, _) => "figure",
            (true, false) => "figure, plain (no TLS)",
            (true, true) => "figure, over TLS (mutual)",
        };
        let mut t = String::new();
        let mut row3 = |a: &str, b: &str, c: &str| t.push_str(&format!("{a:<32} {b:<20} {c}\n"));
        row3(heading, "leaderrun", "etcdctl lock");
        row3(
            "child-exit handover (median)",
            &one(median(e_lr)),
            &format!(
                "{:<12} ratio {}",
                one(median(e_lk)),
                ratio(median(e_lr), median(e_lk))
            ),
        );
        row3(
            "SIGTERM handover (median)",
            &one(median(t_lr)),
            &f.term_lock,
        );
        row3(
            "supervisor SIGKILLed (p50/p99)",
            &format!("{} / {}", one(pct(k_lr, 50)), one(pct(k_lr, 99))),
            &format!(
                "{} / {} (TTL-bound; old child runs on: {k_lk_old} of {})",
                one(pct(k_lk, 50)),
                one(pct(k_lk, 99)),
                k_lk.len()
            ),
        );
        row3(
            "health failover (p50/p99)",
            &format!("{} / {}", one(pct(h, 50)), one(pct(h, 99))),
            "no health checks",
        );
        row3(
            "peak RSS (VmHWM)",
            &format!("{} MiB", mib(f.hwm_lr)),
            &format!("{} MiB", mib(f.hwm_lk)),
        );
        let hwm_ratio = ratio(Some(f.hwm_http as f64), Some(f.hwm_lk as f64));
        row3(
            "peak RSS, --status-addr scraped",
            &format!("{} MiB", mib(f.hwm_http)),
            &format!("{:<12} ratio {hwm_ratio}", format!("{} MiB", mib(f.hwm_lk))),
        );
        row3(
            "/leader at 100 rps, p50 / p99",
            &format!(
                "{} / {} ms",
                fmt2(pct(&f.leader_lat, 50)),
                fmt2(pct(&f.leader_lat, 99))
            ),
            "-",
        );
        tables.push(t);
    }
    for t in &tables {
        println!();
        print!("{t}");
    }
    if !storms.is_empty() {
        println!();
        let row = |a: &str, b: &str| println!("{}", format!("{a:<78} {b}").trim_end());
        row(
            &format!("storm: N leaderruns on one election, TTL {SCALE_TTL} s"),
            "N keys in etcd, one child running",
        );
        for (n, st) in &storms {
            for (what, took) in &st.rows {
                row(&format!("N={n}: {what}"), &secs(*took));
            }
            row(
                &format!("N={n}: leaderruns exited on their own"),
                &st.exited.to_string(),
            );
            row(
                &format!("N={n}: overlapping children"),
                &format!("{} (of {} children)", st.overlaps.0, st.overlaps.1),
            );
        }
    }
    if !scale.is_empty() {
        println!();
        let row4 = |a: &str, b: &str, c: &str, d: &str| {
            println!("{}", format!("{a:<40} {b:<30} {c:<24} {d}").trim_end())
        };
        let row = |a: &str, b: &str, c: &str| row4(a, b, c, "");
        row4(
            &format!("scale: N on one election, TTL {SCALE_TTL} s"),
            "leaderrun",
            "etcdctl lock",
            "leaderrun / etcdctl lock",
        );
        for (n, sc) in &scale {
            let gaps = |k: &str| sc.gaps.get(k).cloned().unwrap_or_default();
            let (lr_exit, lr_term, lk_exit) = (gaps("lr/exit"), gaps("lr/term"), gaps("lk/exit"));
            let ms3 = |v: &[f64]| {
                if v.is_empty() {
                    "-".to_string()
                } else {
                    format!("{} ms", p50_p90_max(v))
                }
            };
            row4(
                &format!("N={n}: child-exit handover (p50/p90/max)"),
                &ms3(&lr_exit),
                &ms3(&lk_exit),
                &format!("{} (medians)", ratio(median(&lr_exit), median(&lk_exit))),
            );
            for (tool, why) in &sc.stalled {
                row(&format!("N={n}: {} STALLED", tool.who()), why, "");
            }
            row4(
                &format!("N={n}: SIGTERM handover (p50/p90/max)"),
                &ms3(&lr_term),
                "never",
                &format!(
                    "{} (of its child-exit median)",
                    ratio(median(&lr_term), median(&lk_exit))
                ),
            );
            let overlaps = |t: &str| {
                let (found, of) = sc.overlaps.get(t).copied().unwrap_or_default();
                format!("{found} (of {of} children)")
            };
            row(
                &format!("N={n}: overlapping children"),
                &overlaps("lr"),
                &overlaps("lk"),
            );
            if sc.idle.is_empty() {
                continue;
            }
            let idle = |t: &str| sc.idle.get(t).cloned().unwrap_or_default();
            let (lr, lk) = (idle("lr"), idle("lk"));
            for (who, i) in [("leaderrun", &lr), ("etcdctl lock", &lk)] {
                if i.n != *n {
                    row(
                        &format!("N={n}: {who} reached only"),
                        &format!("{} queued: its idle figures are of those", i.n),
                        "",
                    );
                }
            }
            row(
                &format!("N={n}: idle etcd msgs/s (per candidate)"),
                &format!("{:.1} ({:.3})", lr.msgs, lr.per),
                &format!("{:.1} ({:.3})", lk.msgs, lk.per),
            );
            let per = |total: f64, i: &Idle| total / i.n.max(1) as f64;
            row(
                &format!("N={n}: idle CPU, % of one core (per cand.)"),
                &format!("{:.2} % ({:.4} %)", lr.cpu, per(lr.cpu, &lr)),
                &format!("{:.2} % ({:.4} %)", lk.cpu, per(lk.cpu, &lk)),
            );
            row(
                &format!("N={n}: RSS sum (median per supervisor)"),
                &format!(
                    "{} MiB ({} + {} guard)",
                    mib(lr.rss.0 + lr.guard_rss.0),
                    mib(lr.rss.1 as u64),
                    mib(lr.guard_rss.1 as u64)
                ),
                &format!("{} MiB ({})", mib(lk.rss.0), mib(lk.rss.1 as u64)),
            );
            row(
                &format!("N={n}: PSS sum (per candidate)"),
                &format!(
                    "{} MiB ({} MiB)",
                    mib(lr.pss),
                    mib(per(lr.pss as f64, &lr) as u64)
                ),
                &format!(
                    "{} MiB ({} MiB)",
                    mib(lk.pss),
                    mib(per(lk.pss as f64, &lk) as u64)
                ),
            );
            row(
                &format!("N={n}: etcd's CPU while idle"),
                &format!("{:.2} %", lr.etcd_cpu),
                &format!("{:.2} %", lk.etcd_cpu),
            );
        }
    }
    println!();
    print_roles(hooks.as_ref(), &roles);
    println!();
    say("gaps: CLOCK_MONOTONIC from the old child's last instant to the new child's first, the standby");
    if etcds == 1 {
        say(&format!(
            "queued >= {MIN_QUEUED_MS} ms before (see SETTLE in benches/handover.rs); {} CPUs, \
             loopback, one etcd {version}",
            cpus()
        ));
    } else {
        say(&format!(
            "queued >= {MIN_QUEUED_MS} ms before (see SETTLE in benches/handover.rs); {} CPUs, \
             loopback, two etcd {version}",
            cpus()
        ));
        say("(plain http, and https with --client-cert-auth), each run on one of them, plain and TLS runs interleaved");
    }
    if all {
        say(&format!(
            "RSS in MiB (VmHWM is in KiB); TTL {TTL} s for both tools; the child: \
             examples/fenced_child.rs (release)"
        ));
    }
    if hooks.is_some() {
        say(&format!(
            "hook overhead: TTL {TTL} s, the child examples/fenced_child.rs; each hook `sh -c true`"
        ));
    }
    if !roles.is_empty() {
        say("hot promotion: the old hot child's record of becoming standby (before its datagram) to the new one's record of reading ROLE=leader; etcdctl lock: its child-exit gap, the child ended by SIGTERM to it");
        say("the breakdown's stamps are leaderrun's log lines (wall clock, to the us), moved onto CLOCK_MONOTONIC by one reading of both clocks per run");
    }
    if !scale.is_empty() {
        say(&format!(
            "scale: TTL {SCALE_TTL} s, a fresh etcd for each N; idle figures over {} s once all \
             N were queued {} s; etcd with nothing queued: {base:.1} msgs/s;",
            IDLE.as_secs(),
            IDLE_SETTLE.as_secs()
        ));
        say("CPU: run time (/proc/PID/task/*/schedstat) of the supervisors (leaderrun: with their guardians) as % of one core; leaderrun's RSS sum includes its guardians");
        say("handovers at scale: p50 / p90 / max of each tool's runs, pooled over the rounds in which the tools took turns");
    }
}
