//! A bounded soak: random faults against three leaderrun candidates on a 3-member etcd cluster,
//! checking from the fenced children's records that no two children ever ran at once. Not run
//! in CI (`#[ignore]`); run it with `bash scripts/soak.sh` (see there for the knobs).
//!
//! With `SOAK_ROLES` it checks the roles too (docs/SAFETY.md: roles keep the same promise):
//!
//! - `hot`: the candidates run `--hot-standby`, each child a `fenced_child --hot`, which runs in
//!   every role and records only its *leader intervals*: from reading `ROLE=leader` in its role
//!   file to reading `ROLE=standby` (recorded before its confirmation), SIGTERM, or its death
//!   (its last 5 ms `alive` line). No two leader intervals may intersect.
//! - `hooks`: the candidates run `--on-promote` and `--on-demote` hooks that stamp a holds file
//!   with the fenced child's CLOCK_MONOTONIC (`fenced_child HOLDS --stamp promote|demote`): a
//!   host holds the "VIP" from its promote stamp to its demote stamp. No two holds of different
//!   hosts may intersect. A SIGKILLed leaderrun runs no demote hook (by design: README, role
//!   hooks): the soak writes a `crash` line for that host just before the SIGKILL, which ends
//!   its hold there; whatever a real promote hook configured would stay on the crashed host
//!   until the next leader's promote hook takes it over (docs/SAFETY.md, what a crash means for
//!   a VIP). Before each fault, the only holder must be the leading candidate.
//! - `hot,hooks`: both at once.
//!
//! Overlaps of either kind are excused exactly as for children: during an operator's key delete
//! or lease revoke (a forced takeover), or after a resumed etcd raft leader revoked a live lease.
//!
//! With `SOAK_PRIORITIES=1` candidate c{slot} runs `--priority 5*slot` (c2 is the best) and
//! `--preempt SOAK_PREEMPT` (seconds, default 4). A preemption is an expected, fault-free change
//! of leader: settled then also means the leader is the best live candidate (the best one's
//! `--preempt` wait is well within SETTLE). The summary counts preemptions (the old leader's log
//! line) and passes, and fails on a preemption logged inside a fault window in which the
//! preempting leader could not reach etcd: a cluster-freeze, or its own link blackholed or reset
//! (what the soak can measure; a line within `EDGE_SECS` of the fault's start is listed apart,
//! its read may have come just before). Half of the outages (cluster-freeze, link-blackhole,
//! link-reset) start about a second into a better candidate's `--preempt` wait: the leading c2 is
//! SIGTERMed and restarted, and the outage hits the new leader. The soak runs no health checks: preemption towards an
//! unhealthy candidate is the fault suite's to check.
//!
//! Topology: every candidate reaches every member through a proxy of its own (3 x 3 proxies),
//! with all three proxies as its `--endpoints`. So a candidate's whole link can be blackholed,
//! reset or slowed while the others are untouched, and members can be killed or frozen.
//!
//! Knobs (environment):
//!   SOAK_FAULTS    faults to inject (default 200)
//!   SOAK_MAX_SECS  wall-time cap in seconds; the soak stops after the current fault (default 1800)
//!   SOAK_TTL       --ttl of the candidates (default 3)
//!   SOAK_SEED      random seed (default: from the clock; printed, to replay a run)
//!   SOAK_KINDS     comma-separated fault kinds to draw from (default: all; names below)
//!   SOAK_ROLES     hot, hooks, or hot,hooks (default: neither; see above)
//!   SOAK_PRIORITIES 1: priorities and --preempt (default off; see above)
//!   SOAK_PREEMPT   --preempt of every candidate with SOAK_PRIORITIES=1, seconds (default 4)
//!   SOAK_STRICT    1: count overlaps after a key deletion or lease revoke as failures too
//!                  (docs/SAFETY.md calls those a forced takeover, which may overlap up to G),
//!                  and those after a frozen raft leader revoked a live lease on resume (an
//!                  etcd bug: docs/SAFETY.md, what is not guaranteed)

mod common;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

/// How long the system may take to settle back to one leader and three candidates.
const SETTLE: Duration = Duration::from_secs(40);
/// How long a candidate may be missing from etcd (re-campaigning) before it is an anomaly.
const CANDIDATE_GRACE: Duration = Duration::from_secs(20);
const ELECTION: &str = "soak";
const CANDIDATES: usize = 3;

const KINDS: &[&str] = &[
    "link-blackhole",
    "link-reset",
    "link-latency",
    "member-kill",
    "member-freeze",
    "raft-leader-kill",
    "cluster-freeze",
    "leader-sigkill",
    "leader-sigkill-cut",
    "leader-sigterm",
    "key-delete",
    "lease-revoke",
];
/// docs/SAFETY.md: an operator's delete or revoke is a forced takeover; the standby may start
/// while the old child is being stopped.
const FORCED_TAKEOVER: &[&str] = &["key-delete", "lease-revoke"];
const ROLES: &[&str] = &["hot", "hooks"];

/// Which roles the candidates take on (`SOAK_ROLES`).
#[derive(Clone, Copy, Debug, Default)]
struct Roles {
    /// `--hot-standby`, children `fenced_child --hot`.
    hot: bool,
    /// `--on-promote` and `--on-demote` stamping the holds file.
    hooks: bool,
}

impl Roles {
    fn from_env() -> Roles {
        let mut roles = Roles::default();
        let list = std::env::var("SOAK_ROLES").unwrap_or_default();
        for r in list.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            match r {
                "hot" => roles.hot = true,
                "hooks" => roles.hooks = true,
                other => panic!("SOAK_ROLES: unknown role {other}; known: {ROLES:?}"),
            }
        }
        roles
    }
}
/// What the leader logs when it steps down for a better candidate (`--preempt`).
const PREEMPTED: &str = "a candidate of higher priority has waited for --preempt";
/// What a waiting candidate logs when it moves its key behind a better one.
const PASSED: &str = "a better candidate waits behind us: passing it";
/// `--priority` of candidate c{slot} with `SOAK_PRIORITIES=1`: c0 0, c1 5, c2 10.
fn priority_of(slot: usize) -> u32 {
    5 * slot as u32
}
/// A preemption line this soon after a fault's start may come from a read of etcd made just
/// before it (the line is written after the read): it is reported, not counted as a failure.
const EDGE_SECS: f64 = 0.1;
/// Outages of etcd for the leader: with priorities, half of them start while a better candidate
/// waits for its `--preempt`, which must not end in a preemption before the outage is over.
const OUTAGES: &[&str] = &["cluster-freeze", "link-blackhole", "link-reset"];

/// What the old leader logs when etcd deleted its key or ended its lease while it led.
const TAKEN_OVER: &[&str] = &["leader key deleted in etcd", "lease gone in etcd"];

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a valid value")),
        Err(_) => default,
    }
}

// ---------------------------------------------------------------------------
// Random numbers (splitmix64: no dependency, replayable from the seed)
// ---------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in [lo, hi].
    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_millis() as u64;
        lo + Duration::from_millis(self.next() % (span + 1))
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

// ---------------------------------------------------------------------------
// The record file, read incrementally (it grows by ~7 KB/s for hours)
// ---------------------------------------------------------------------------

struct Tail {
    file: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    parser: RecordParser,
}

impl Tail {
    fn new(file: PathBuf) -> Tail {
        Tail {
            file,
            offset: 0,
            partial: Vec::new(),
            parser: RecordParser::default(),
        }
    }

    /// The runs read so far, in the order of their start lines.
    fn runs(&self) -> &[Run] {
        &self.parser.runs
    }

    /// Reads what was appended since the last call.
    fn poll(&mut self) {
        let Ok(mut f) = File::open(&self.file) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() {
            return;
        }
        self.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        let Some(cut) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        let complete: Vec<u8> = self.partial.drain(..=cut).collect();
        for line in String::from_utf8_lossy(&complete).lines() {
            self.parser
                .line(line)
                .unwrap_or_else(|e| panic!("bad record line {line:?}: {e}"));
        }
    }

    /// Indexes of the runs running now.
    fn running(&mut self) -> Vec<usize> {
        self.poll();
        let now = mono_now_ns();
        (0..self.runs().len())
            .filter(|&i| {
                let r = &self.runs()[i];
                r.ending == Ending::Killed && r.seen_within(now, FRESH)
            })
            .collect()
    }
}

/// Pairs of runs whose lifetimes intersect (the later start is the second), in start order.
fn overlaps(runs: &[Run]) -> Vec<(Run, Run)> {
    let mut sorted: Vec<&Run> = runs.iter().collect();
    sorted.sort_by_key(|r| r.start_ns);
    let mut found = Vec::new();
    for (i, later) in sorted.iter().enumerate() {
        for earlier in &sorted[..i] {
            if earlier.last_seen_ns >= later.start_ns {
                found.push(((*earlier).clone(), (*later).clone()));
            }
        }
    }
    found
}

// ---------------------------------------------------------------------------
// Process statistics
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    fds: usize,
    rss_kb: u64,
}

fn sample(pid: u32) -> Option<Sample> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    Some(Sample { fds, rss_kb })
}

/// One leaderrun process (a slot is restarted as a new instance after SIGKILL/SIGTERM).
struct Instance {
    slot: usize,
    guard: ChildGuard,
    started: Instant,
    faults_at_start: usize,
    first: Option<Sample>,
    last: Option<Sample>,
    max: Sample,
    faults_lived: usize,
    /// How it ended, and when.
    exit: Option<(String, Instant)>,
}

impl Instance {
    fn ended(&mut self, why: String) {
        if self.exit.is_none() {
            self.exit = Some((why, Instant::now()));
        }
    }

    fn observe(&mut self) {
        if self.exit.is_some() {
            return;
        }
        if let Some(s) = sample(self.guard.pid()) {
            // The first sample once it has settled (runtime and connections up).
            if self.first.is_none() && self.started.elapsed() >= 2 * SEC {
                self.first = Some(s);
            }
            self.last = Some(s);
            self.max.fds = self.max.fds.max(s.fds);
            self.max.rss_kb = self.max.rss_kb.max(s.rss_kb);
        }
    }

    fn line(&self) -> String {
        let f = |s: Option<Sample>| {
            s.map_or("-".to_string(), |s| {
                format!("{} fds {:.1} MB", s.fds, s.rss_kb as f64 / 1024.0)
            })
        };
        format!(
            "c{} pid {:>7}: lived {:>4} faults ({:>6.0} s); at start {}; at end {}; max {} fds \
             {:.1} MB{}",
            self.slot,
            self.guard.pid(),
            self.faults_lived,
            self.exit
                .as_ref()
                .map_or(Instant::now(), |e| e.1)
                .duration_since(self.started)
                .as_secs_f64(),
            f(self.first),
            f(self.last),
            self.max.fds,
            self.max.rss_kb as f64 / 1024.0,
            self.exit
                .as_ref()
                .map_or(String::new(), |e| format!(" [{}]", e.0))
        )
    }
}

// ---------------------------------------------------------------------------
// The soak
// ---------------------------------------------------------------------------

/// What one fault did.
struct Outcome {
    kind: &'static str,
    /// mono ns when the fault was injected.
    at: u64,
    /// mono ns when the system was healed and settled again (or gave up).
    until: u64,
    /// The fault was followed by a new leader's child: (fault -> new start, old end -> new start).
    failover: Option<(u64, i64)>,
    settled: bool,
    /// Wall-clock time of day (as the logs print it) at injection and once settled.
    wall: (String, String),
    /// A member-freeze that froze etcd's raft leader: on resume it may revoke leases the others
    /// kept alive (etcd issues 12528 and 15247), a forced takeover by etcd itself.
    froze_raft_leader: bool,
    /// Wall-clock time of day when the fault was healed (the end of its fault window).
    healed_wall: String,
    /// The candidate whose whole link a link-blackhole or link-reset cut off.
    link_cut: Option<usize>,
    /// Injected while a better candidate waited for its `--preempt` (`SOAK_PRIORITIES=1`).
    in_wait: bool,
    /// The leading candidate when it was injected.
    leader: usize,
}

struct Soak {
    ttl: u32,
    roles: Roles,
    dir: TempDir,
    records: PathBuf,
    /// The hooks' stamps (and the soak's `crash` lines): who held the "VIP" when.
    holds: PathBuf,
    cluster: EtcdCluster,
    proxies: Vec<Vec<FaultProxy>>,
    instances: Vec<Instance>,
    tail: Tail,
    rng: Rng,
    outcomes: Vec<Outcome>,
    anomalies: Vec<String>,
    faults_done: usize,
    unsettled_in_a_row: usize,
    t0: Instant,
    journal: File,
    max_lifetime_ms: u64,
    /// Set by the member-freeze in progress when it froze the raft leader.
    froze_raft_leader: bool,
    /// Set by the link-blackhole or link-reset in progress: the candidate it cuts off.
    link_cut: Option<usize>,
    /// `SOAK_PRIORITIES=1`: `--preempt` of every candidate (they run `--priority 5*slot`).
    preempt: Option<Duration>,
}

impl Soak {
    fn log(&mut self, msg: &str) {
        let line = format!(
            "[{:>7.1}s {} mono={:.3}] {msg}",
            self.t0.elapsed().as_secs_f64(),
            wall(),
            mono_now_ns() as f64 / 1e9
        );
        eprintln!("{line}");
        let _ = writeln!(self.journal, "{line}");
    }

    fn anomaly(&mut self, msg: String) {
        self.log(&format!("ANOMALY: {msg}"));
        self.anomalies.push(msg);
    }

    fn endpoints(&self, slot: usize) -> String {
        self.proxies[slot]
            .iter()
            .map(FaultProxy::endpoint)
            .collect::<Vec<_>>()
            .join(",")
    }

    fn log_path(&self, slot: usize) -> PathBuf {
        self.dir.join(&format!("c{slot}.log"))
    }

    /// Starts (or restarts) the leaderrun of `slot`, logging to c<slot>.log (appended).
    fn spawn(&mut self, slot: usize) {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(slot))
            .expect("open candidate log");
        let _ = writeln!(log, "---- soak: starting c{slot}");
        let mut c = leaderrun();
        let mut child: Vec<OsString> = vec![
            fenced_child_path().into(),
            self.records.clone().into(),
            "--max-lifetime-ms".into(),
            self.max_lifetime_ms.to_string().into(),
        ];
        c.args(["--endpoints", &self.endpoints(slot), "--election", ELECTION])
            .args(["--id", &format!("c{slot}")])
            .args(["--ttl", &self.ttl.to_string()]);
        if self.roles.hot {
            c.arg("--hot-standby");
            child.push("--hot".into());
        }
        if self.roles.hooks {
            let stamp = |word: &str| {
                format!(
                    "exec '{}' '{}' --stamp {word}",
                    fenced_child_path().display(),
                    self.holds.display()
                )
            };
            c.args(["--on-promote", &stamp("promote")])
                .args(["--on-demote", &stamp("demote")]);
        }
        if let Some(preempt) = self.preempt {
            c.args(["--priority", &priority_of(slot).to_string()])
                .args(["--preempt", &format!("{}ms", preempt.as_millis())]);
        }
        c.arg("--")
            .args(child)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let guard = ChildGuard::spawn(&mut c);
        let pid = guard.pid();
        self.instances.push(Instance {
            slot,
            guard,
            started: Instant::now(),
            faults_at_start: self.faults_done,
            first: None,
            last: None,
            max: Sample::default(),
            faults_lived: 0,
            exit: None,
        });
        self.log(&format!("started c{slot} (pid {pid})"));
    }

    /// The live instance of `slot`.
    fn current(&mut self, slot: usize) -> &mut Instance {
        self.instances
            .iter_mut()
            .rev()
            .find(|i| i.slot == slot)
            .expect("slot started")
    }

    fn observe_all(&mut self) {
        let done = self.faults_done;
        for inst in &mut self.instances {
            inst.observe();
            if inst.exit.is_none() {
                inst.faults_lived = done - inst.faults_at_start;
            }
        }
    }

    /// Restarts candidates whose leaderrun exited (only faults that end a candidate expect it).
    fn revive(&mut self, expected: Option<usize>) {
        for slot in 0..CANDIDATES {
            let status = self.current(slot).guard.try_wait();
            if let Some(status) = status {
                self.current(slot).ended(format!("exited: {status}"));
                if expected != Some(slot) {
                    let tail = common::file_tail(&self.log_path(slot), 15);
                    self.anomaly(format!(
                        "c{slot} exited by itself ({status}); its log ends:\n{tail}"
                    ));
                }
                self.spawn(slot);
            }
        }
    }

    /// The leader key and its value, as etcd has them (first-created under NAME/).
    fn leader_key(&self) -> Option<(String, String)> {
        election_keys(&self.cluster.endpoints(), ELECTION)
            .into_iter()
            .next()
    }

    /// The candidates in etcd (their election keys) and, with priorities, the slot of the best
    /// of them (highest `--priority`).
    fn candidates(&self) -> (usize, Option<usize>) {
        let keys = election_keys(&self.cluster.endpoints(), ELECTION);
        let best = keys
            .iter()
            .filter_map(|(_, id)| id.strip_prefix('c')?.parse::<usize>().ok())
            .max_by_key(|&slot| priority_of(slot));
        (keys.len(), best)
    }

    /// Waits until exactly one child runs (the same one for a second), every member is healthy
    /// and every candidate campaigns or leads; with priorities, also until the leader is the
    /// best live candidate (a preemption is an expected leadership change: `--preempt` after
    /// the best one queued, well within SETTLE). Returns the running run's index.
    fn settle(&mut self, expected_exit: Option<usize>) -> Option<usize> {
        let deadline = Instant::now() + SETTLE;
        loop {
            self.revive(expected_exit);
            let running = self.tail.running();
            if running.len() > 1 {
                let ids: Vec<String> = running
                    .iter()
                    .map(|&i| format!("{:?}", self.tail.runs()[i]))
                    .collect();
                self.log(&format!("two children running now: {ids:?}"));
            }
            if running.len() == 1 && (0..3).all(|i| self.cluster.is_healthy(i)) {
                let (candidates, best) = self.candidates();
                // A standby missing from etcd for long is worth reporting, but need not hold
                // the soak up: the next failover puts it back in line.
                let missing_too_long = Instant::now() + SETTLE - CANDIDATE_GRACE >= deadline;
                if candidates == CANDIDATES || missing_too_long {
                    let one = running[0];
                    std::thread::sleep(SEC);
                    let again = self.tail.running();
                    let preferred = self.preempt.is_none() || self.slot_of(one) == best;
                    if again == [one] && preferred {
                        if candidates != CANDIDATES {
                            self.anomaly(format!(
                                "only {candidates} of {CANDIDATES} candidates in etcd for \
                                 {CANDIDATE_GRACE:?} with a leader running"
                            ));
                        }
                        return Some(one);
                    }
                }
            }
            if Instant::now() >= deadline {
                let running = self.tail.running();
                let health: Vec<bool> = (0..3).map(|i| self.cluster.is_healthy(i)).collect();
                let (candidates, best) = self.candidates();
                let leading: Vec<Option<usize>> =
                    running.iter().map(|&r| self.slot_of(r)).collect();
                self.anomaly(format!(
                    "not settled after {SETTLE:?}: {} children running (of {leading:?}), members \
                     healthy {health:?}, {candidates} candidates (best {best:?})",
                    running.len()
                ));
                return None;
            }
            std::thread::sleep(100 * MS);
        }
    }

    fn slot_of(&self, run: usize) -> Option<usize> {
        let id = self.tail.runs()[run].id.as_deref()?;
        id.strip_prefix('c')?.parse().ok()
    }

    fn set_link(&self, slot: usize, mode: Mode) {
        for p in &self.proxies[slot] {
            p.set_mode(mode);
        }
    }

    /// Injects one fault of `kind` while `leader` (slot) leads; heals it. Returns the slot of a
    /// candidate the fault ends on purpose (to be restarted), if any.
    fn inject(&mut self, kind: &'static str, leader: usize) -> (String, Option<usize>) {
        let ttl = self.ttl * SEC;
        // Link faults hit the leader mostly (they cause failovers), sometimes a standby.
        let link_target = if self.rng.chance(70) {
            leader
        } else {
            self.rng.below(CANDIDATES)
        };
        match kind {
            "link-blackhole" | "link-reset" => {
                let mode = if kind == "link-blackhole" {
                    Mode::Blackhole
                } else {
                    Mode::Reset
                };
                let hold = self.rng.between(ttl / 2, 2 * ttl);
                self.link_cut = Some(link_target);
                self.set_link(link_target, mode);
                std::thread::sleep(hold);
                self.set_link(link_target, Mode::Pass);
                (format!("c{link_target} for {hold:?}"), None)
            }
            "link-latency" => {
                // Each way up to half the round-trip allowance r = TTL/10: no failover expected.
                let each_way = self.rng.between(ttl / 50, ttl / 20);
                let hold = self.rng.between(3 * SEC, 8 * SEC);
                self.set_link(link_target, Mode::Latency(each_way));
                std::thread::sleep(hold);
                self.set_link(link_target, Mode::Pass);
                (
                    format!("c{link_target} +{each_way:?} each way for {hold:?}"),
                    None,
                )
            }
            "member-kill" => {
                let m = self.rng.below(3);
                let hold = self.rng.between(2 * SEC, 4 * SEC);
                self.cluster.kill(m);
                std::thread::sleep(hold);
                self.cluster.restart(m);
                (format!("m{m} for {hold:?}"), None)
            }
            "member-freeze" => {
                let m = self.rng.below(3);
                let hold = self.rng.between(ttl, 2 * ttl);
                self.froze_raft_leader = self.cluster.leader() == Some(m);
                self.cluster.freeze(m);
                std::thread::sleep(hold);
                self.cluster.thaw(m);
                self.cluster.wait_healthy(m, 30 * SEC);
                let role = if self.froze_raft_leader {
                    " (raft leader)"
                } else {
                    ""
                };
                (format!("m{m}{role} for {hold:?}"), None)
            }
            "raft-leader-kill" => {
                let m = self.cluster.wait_leader(10 * SEC);
                self.cluster.kill(m);
                std::thread::sleep(3 * SEC);
                self.cluster.restart(m);
                (format!("m{m}"), None)
            }
            "cluster-freeze" => {
                let hold = self.rng.between(ttl + SEC, ttl + 3 * SEC);
                for m in 0..3 {
                    self.cluster.freeze(m);
                }
                std::thread::sleep(hold);
                for m in 0..3 {
                    self.cluster.thaw(m);
                }
                (format!("all members for {hold:?}"), None)
            }
            "leader-sigkill" => {
                // Its guardian kills the child's group, then revokes the lease: a fast failover.
                self.sigkill(leader);
                std::thread::sleep(self.rng.between(100 * MS, SEC));
                (format!("c{leader}"), Some(leader))
            }
            "leader-sigkill-cut" => {
                // Cut off first: its guardian (same endpoints) cannot revoke, gives up within
                // 2 s, and the standby waits for the lease to expire.
                self.set_link(leader, Mode::Blackhole);
                self.sigkill(leader);
                std::thread::sleep(self.rng.between(2500 * MS, 4 * SEC));
                self.set_link(leader, Mode::Pass);
                (format!("c{leader}"), Some(leader))
            }
            "leader-sigterm" => {
                self.current(leader).guard.signal(Signal::SIGTERM);
                let status = self.current(leader).guard.wait_timeout(10 * SEC);
                match status {
                    Some(s) => self.current(leader).ended(format!("SIGTERM: {s}")),
                    None => {
                        self.anomaly(format!("c{leader} still running 10 s after SIGTERM"));
                        self.current(leader).guard.kill();
                        self.current(leader).ended("SIGTERM: hung, killed".into());
                    }
                }
                std::thread::sleep(self.rng.between(100 * MS, SEC));
                (format!("c{leader}"), Some(leader))
            }
            "key-delete" | "lease-revoke" => {
                let Some((key, value)) = self.leader_key() else {
                    self.anomaly("no leader key to delete/revoke".into());
                    return ("nothing".into(), None);
                };
                let lease = key.rsplit('/').next().unwrap_or("").to_string();
                let args: Vec<&str> = if kind == "key-delete" {
                    vec!["--command-timeout", "5s", "del", &key]
                } else {
                    vec!["--command-timeout", "5s", "lease", "revoke", &lease]
                };
                let out = etcdctl_at(&self.cluster.endpoints(), &args);
                if !out.status.success() {
                    self.anomaly(format!(
                        "etcdctl {args:?} failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
                (format!("{key} ({value})"), None)
            }
            other => panic!("unknown fault kind {other}"),
        }
    }

    /// SIGKILL the leading candidate; its child must die with it (parent-death signal,
    /// guardian), else an anomaly.
    fn sigkill(&mut self, leader: usize) {
        let child = self.tail.running();
        if self.roles.hooks {
            // No demote hook will run: its hold ends at the kill.
            let pid = self.current(leader).guard.pid();
            let line = format!("crash {pid} {} - c{leader}\n", mono_now_ns());
            let mut holds = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.holds)
                .expect("open the holds file");
            holds
                .write_all(line.as_bytes())
                .expect("write the holds file");
        }
        self.current(leader).guard.kill();
        self.current(leader).ended("SIGKILLed by the soak".into());
        let mut orphan = None;
        for i in child {
            let pid = self.tail.runs()[i].pid;
            let died = wait_until(2 * SEC, 10 * MS, || !process_alive(pid));
            if !died {
                orphan = Some(pid);
            }
        }
        if let Some(pid) = orphan {
            self.anomaly(format!(
                "the SIGKILLed leader c{leader}'s child {pid} outlived it by 2 s"
            ));
        }
    }

    fn run_one(&mut self, kind: &'static str) {
        let Some(before) = self.settle(None) else {
            self.unsettled_in_a_row += 1;
            assert!(
                self.unsettled_in_a_row < 3,
                "the system did not settle three times in a row: giving up"
            );
            return;
        };
        self.unsettled_in_a_row = 0;
        let Some(mut leader) = self.slot_of(before) else {
            self.anomaly("the running child has no candidate id".into());
            return;
        };
        let mut before = before;
        // Half of the outages hit a leader that a better candidate is about to preempt: the
        // best one (leading, settled) is stopped and restarted, and the outage starts about a
        // second after it queued again, before its --preempt wait is over.
        let in_wait = self.preempt.is_some() && OUTAGES.contains(&kind) && self.rng.chance(50);
        if in_wait {
            match self.enter_preempt_wait(leader) {
                Some((run, slot)) => (before, leader) = (run, slot),
                None => return,
            }
        }
        if self.roles.hooks {
            self.check_holder(leader);
        }
        let old = self.tail.runs()[before].clone();
        let runs_before = self.tail.runs().len();
        let n = self.outcomes.len() + 1;
        let wait = if in_wait {
            ", a better one in its preempt wait"
        } else {
            ""
        };
        self.log(&format!("#{n} {kind}: injecting (c{leader} leads{wait})"));
        let at = mono_now_ns();
        let at_wall = wall();
        self.froze_raft_leader = false;
        self.link_cut = None;
        let (target, ends) = self.inject(kind, leader);
        let healed_wall = wall();
        self.log(&format!("#{n} {kind} {target}: healed"));
        self.faults_done += 1;
        let settled = self.settle(ends).is_some();
        let until = mono_now_ns();
        // The first child started after the fault, if any: a failover (or a re-election).
        let new = self.tail.runs()[runs_before..]
            .iter()
            .min_by_key(|r| r.start_ns)
            .cloned();
        let failover = new.as_ref().map(|n| {
            (
                n.start_ns.saturating_sub(at),
                n.start_ns as i64 - old.last_seen_ns as i64,
            )
        });
        let what = match (&new, failover) {
            (Some(n), Some((lat, gap))) => format!(
                "-> {} leads after {:.3} s (old child's end -> new start {:+.3} s)",
                n.id.as_deref().unwrap_or("?"),
                lat as f64 / 1e9,
                gap as f64 / 1e9
            ),
            _ => format!("-> c{leader} leads on (same child)"),
        };
        self.observe_all();
        self.log(&format!("#{n} {kind} {target} {what}"));
        self.outcomes.push(Outcome {
            kind,
            at,
            until,
            failover,
            settled,
            wall: (at_wall, wall()),
            froze_raft_leader: self.froze_raft_leader,
            healed_wall,
            link_cut: self.link_cut,
            in_wait,
            leader,
        });
    }

    /// Stops the leading (best) candidate with SIGTERM and starts it again; once another one
    /// leads and it is back in line (about a second later, so well before its `--preempt` wait
    /// is over), returns the new leader's run and slot.
    fn enter_preempt_wait(&mut self, best: usize) -> Option<(usize, usize)> {
        self.current(best).guard.signal(Signal::SIGTERM);
        let status = self.current(best).guard.wait_timeout(10 * SEC);
        let Some(status) = status else {
            self.anomaly(format!("c{best} still running 10 s after SIGTERM"));
            self.current(best).guard.kill();
            self.current(best).ended("SIGTERM: hung, killed".into());
            self.spawn(best);
            return None;
        };
        self.current(best)
            .ended(format!("SIGTERM (into a preempt wait): {status}"));
        self.spawn(best);
        let deadline = Instant::now() + 10 * SEC;
        while Instant::now() < deadline {
            let running = self.tail.running();
            if let [one] = running[..] {
                let slot = self.slot_of(one);
                if slot.is_some_and(|s| s != best) && self.candidates().0 == CANDIDATES {
                    std::thread::sleep(SEC / 2);
                    return slot.map(|s| (one, s));
                }
            }
            std::thread::sleep(100 * MS);
        }
        self.anomaly(format!(
            "no other leader with c{best} back in line within 10 s"
        ));
        None
    }

    /// The one host holding the "VIP" must be the leading candidate (its child runs, settled).
    fn check_holder(&mut self, leader: usize) {
        let holders = match HoldParser::read(&self.holds) {
            Ok(p) => p.holders(),
            Err(e) => panic!("{e}"),
        };
        if holders != [format!("c{leader}")] {
            self.anomaly(format!(
                "c{leader} leads, settled, and the VIP is held by {holders:?}"
            ));
        }
    }

    /// Whether an overlap whose later interval started at `start_ns` is excused, and why: a
    /// forced takeover by an operator (the fault then under way), or by etcd (a resumed raft
    /// leader revoked a live lease: only with the old holder's word in its log).
    fn excuse(&self, earlier: &Run, start_ns: u64, strict: bool) -> (&'static str, Option<&str>) {
        let fault = self
            .outcomes
            .iter()
            .find(|o| (o.at..=o.until).contains(&start_ns));
        let during = fault.map_or("(between faults)", |o| o.kind);
        let by_operator = FORCED_TAKEOVER.contains(&during);
        let by_etcd = fault.is_some_and(|o| {
            o.froze_raft_leader && self.taken_over(earlier.id.as_deref(), &o.wall)
        });
        let label = match (strict, by_operator, by_etcd) {
            (true, _, _) | (false, false, false) => None,
            (false, _, false) => Some(" (forced takeover, documented)"),
            (false, _, true) => Some(
                " (forced takeover by etcd: the resumed raft leader revoked a live lease, etcd \
                 issue 15247; documented)",
            ),
        };
        (during, label)
    }

    /// Whether candidate `id`'s log says, between the two times of day, that etcd deleted its
    /// key or ended its lease while it led.
    fn taken_over(&self, id: Option<&str>, (from, to): &(String, String)) -> bool {
        let Some(slot) = id.and_then(|id| id.strip_prefix('c')?.parse::<usize>().ok()) else {
            return false;
        };
        let log = std::fs::read_to_string(self.log_path(slot)).unwrap_or_default();
        log.lines().any(|l| {
            // "2026-12-01T02:30:24.539687Z  WARN ...": the time of day, as wall() prints it.
            let at = l.get(11..27).unwrap_or("");
            at >= from.as_str() && at <= to.as_str() && TAKEN_OVER.iter().any(|t| l.contains(t))
        })
    }

    /// Writes each overlap of `list` (children's runs, or VIP holds) with its excuse, if any;
    /// returns how many fail and how many are excused.
    fn report_overlaps(
        &self,
        w: &mut impl FnMut(String),
        what: &str,
        list: &[Run],
        strict: bool,
    ) -> (usize, usize) {
        let (mut failing, mut forced) = (0, 0);
        for (a, b) in &overlaps(list) {
            let (during, excused) = self.excuse(a, b.start_ns, strict);
            match excused {
                Some(_) => forced += 1,
                None => failing += 1,
            }
            w(format!(
                "{what}OVERLAP{} during {during}: {:.1} ms\n    {a:?}\n    {b:?}",
                excused.unwrap_or(""),
                (a.last_seen_ns.min(b.last_seen_ns) - b.start_ns) as f64 / 1e6
            ));
        }
        (failing, forced)
    }

    /// The candidates' log lines that contain `what`: (slot, time of day in seconds, line).
    fn log_lines(&self, what: &str) -> Vec<(usize, f64, String)> {
        let mut found = Vec::new();
        for slot in 0..CANDIDATES {
            let log = std::fs::read_to_string(self.log_path(slot)).unwrap_or_default();
            for l in log.lines().filter(|l| l.contains(what)) {
                if let Some(t) = l.get(11..27).and_then(secs_of_day) {
                    found.push((slot, t, l.to_string()));
                }
            }
        }
        found
    }

    /// Preemptions and passes, from the candidates' logs. A preemption in a fault window in
    /// which the preempting candidate could not reach etcd (a cluster-freeze, or its own link
    /// blackholed or reset) fails the soak: `--preempt` must be confirmed by a read. Returns
    /// how many did.
    fn report_priorities(&self, w: &mut impl FnMut(String)) -> usize {
        let preempts = self.log_lines(PREEMPTED);
        let passes = self.log_lines(PASSED);
        let (mut failing, mut edge, mut cut_better, mut outside) = (0, 0, 0, 0);
        let mut outage_hits = 0;
        let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
        for (slot, t, line) in &preempts {
            let mut in_a_window = false;
            for o in &self.outcomes {
                let (Some(at), Some(healed), Some(settled)) = (
                    secs_of_day(&o.wall.0),
                    secs_of_day(&o.healed_wall),
                    secs_of_day(&o.wall.1),
                ) else {
                    continue;
                };
                if (at..=settled).contains(t) && !in_a_window {
                    in_a_window = true;
                    *by_kind.entry(o.kind).or_default() += 1;
                }
                if !(at..=healed).contains(t) {
                    continue;
                }
                let cut = o.link_cut;
                if o.kind == "cluster-freeze" || cut == Some(*slot) {
                    outage_hits += usize::from(o.in_wait);
                    if t - at < EDGE_SECS {
                        edge += 1;
                        w(format!(
                            "preemption {:.3} s into {} (a read just before it): {line}",
                            t - at,
                            o.kind
                        ));
                    } else {
                        failing += 1;
                        w(format!(
                            "PREEMPTION DURING AN OUTAGE ({} {:.3} s in, c{slot} preempted): \
                             {line}",
                            o.kind,
                            t - at
                        ));
                    }
                } else if cut.is_some_and(|c| priority_of(c) > priority_of(*slot)) {
                    cut_better += 1;
                    w(format!(
                        "preemption while a better candidate's link was cut ({} of c{}): {line}",
                        o.kind,
                        cut.unwrap_or_default()
                    ));
                }
            }
            if !in_a_window {
                outside += 1;
            }
        }
        w(format!(
            "priorities c0 {}, c1 {}, c2 {}, --preempt {:?}: preemptions {} (from a fault to \
             settled again, per kind: {by_kind:?}; outside: {outside}, start-up included), \
             passes {}",
            priority_of(0),
            priority_of(1),
            priority_of(2),
            self.preempt.unwrap_or_default(),
            preempts.len(),
            passes.len()
        ));
        w(format!(
            "preemptions during an outage (a cluster-freeze, or the preempting leader's own link \
             blackholed or reset): {failing} (+{edge} within {EDGE_SECS} s of a fault's start); \
             while a better candidate's link was cut: {cut_better}"
        ));
        let waits: Vec<&Outcome> = self.outcomes.iter().filter(|o| o.in_wait).collect();
        let cut = |o: &&&Outcome| o.kind == "cluster-freeze" || o.link_cut == Some(o.leader);
        w(format!(
            "outages started in a better candidate's preempt wait: {} (the leader cut off in {}); \
             preemptions in them before the outage was healed: {outage_hits}",
            waits.len(),
            waits.iter().filter(cut).count()
        ));
        failing
    }

    fn summary(&mut self, strict: bool) -> usize {
        self.tail.poll();
        let mut out = String::new();
        let mut w = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        w("================ soak summary ================".into());
        w(format!(
            "faults injected: {} in {:.0} s (TTL {} s, 3 candidates, 3 members, roles {:?})",
            self.outcomes.len(),
            self.t0.elapsed().as_secs_f64(),
            self.ttl,
            self.roles
        ));
        let mut by_kind: BTreeMap<&str, Vec<&Outcome>> = BTreeMap::new();
        for o in &self.outcomes {
            by_kind.entry(o.kind).or_default().push(o);
        }
        w(format!(
            "{:<17} {:>5} {:>9} {:>10} {:>10} {:>12} {:>12}",
            "kind", "count", "failovers", "fault->p50", "fault->p99", "gap p50", "gap p99"
        ));
        for (kind, list) in &by_kind {
            let mut lat: Vec<u64> = list
                .iter()
                .filter_map(|o| o.failover.map(|f| f.0))
                .collect();
            let mut gap: Vec<i64> = list
                .iter()
                .filter_map(|o| o.failover.map(|f| f.1))
                .collect();
            lat.sort();
            gap.sort();
            let s = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3} s"));
            w(format!(
                "{:<17} {:>5} {:>9} {:>10} {:>10} {:>12} {:>12}",
                kind,
                list.len(),
                lat.len(),
                s(pct(&lat, 50).map(|v| v as f64 / 1e9)),
                s(pct(&lat, 99).map(|v| v as f64 / 1e9)),
                s(pct(&gap, 50).map(|v| v as f64 / 1e9)),
                s(pct(&gap, 99).map(|v| v as f64 / 1e9)),
            ));
        }
        let runs = self.tail.runs().to_vec();
        w(format!(
            "{}: {}; leader changes (failovers) observed: {}",
            match self.roles.hot {
                true => "leader intervals (hot children told they lead)",
                false => "children started",
            },
            runs.len(),
            runs.windows(2).filter(|p| p[0].id != p[1].id).count()
        ));
        // The fencing token: strictly increasing from one child to the next, in start order.
        let tokens: Vec<i64> = runs.iter().map(revision).collect();
        let backwards = tokens.windows(2).filter(|t| t[1] <= t[0]).count();
        w(format!(
            "fencing tokens: {} handed out, {backwards} not above the one before",
            tokens.len()
        ));
        let mut failing = backwards;
        let (bad, forced) = self.report_overlaps(&mut w, "", &runs, strict);
        failing += bad;
        w(format!("overlaps: {bad}{}", forced_note(forced)));
        if self.roles.hooks {
            let parser = HoldParser::read(&self.holds).unwrap_or_else(|e| panic!("{e}"));
            let holds = parser.holds(mono_now_ns());
            let count = |e: Ending| holds.iter().filter(|h| h.ending == e).count();
            w(format!(
                "VIP holds (promote to demote stamps): {}; released by the demote hook {}, ended \
                 by a SIGKILL of leaderrun (no demote hook) {}, held at the end {} {:?}; \
                 promotes of a host holding already {}, demotes of a host holding nothing {}",
                holds.len(),
                count(Ending::Demoted),
                count(Ending::Crashed),
                count(Ending::Killed),
                parser.holders(),
                parser.promoted_while_held,
                parser.released_nothing
            ));
            // From the end of one host's hold to the next host's promote, by how it ended.
            let mut sorted = holds.clone();
            sorted.sort_by_key(|h| h.start_ns);
            for (ending, what) in [
                (Ending::Demoted, "its demote stamp"),
                (Ending::Crashed, "the SIGKILL"),
            ] {
                let mut gaps: Vec<i64> = sorted
                    .windows(2)
                    .filter(|p| p[0].id != p[1].id && p[0].ending == ending)
                    .map(|p| p[1].start_ns as i64 - p[0].last_seen_ns as i64)
                    .collect();
                gaps.sort();
                let ms =
                    |v: Option<i64>| v.map_or("-".into(), |v| format!("{:.1}", v as f64 / 1e6));
                w(format!(
                    "VIP handover from {what} to the next host's promote stamp: {} times, \
                     p50 {} ms, p99 {} ms, min {} ms",
                    gaps.len(),
                    ms(pct(&gaps, 50)),
                    ms(pct(&gaps, 99)),
                    ms(gaps.first().copied())
                ));
            }
            let (bad, forced) = self.report_overlaps(&mut w, "VIP ", &holds, strict);
            failing += bad;
            w(format!("VIP overlaps: {bad}{}", forced_note(forced)));
        }
        if self.preempt.is_some() {
            failing += self.report_priorities(&mut w);
        }
        let unsettled = self.outcomes.iter().filter(|o| !o.settled).count();
        w(format!(
            "anomalies: {} (faults after which the system did not settle: {unsettled})",
            self.anomalies.len()
        ));
        for a in &self.anomalies {
            w(format!("  - {a}"));
        }
        w("leaderrun processes (open fds and VmRSS, 2 s after start and at the end):".into());
        self.observe_all();
        for inst in &self.instances {
            w(format!("  {}", inst.line()));
        }
        w(format!(
            "logs and records: {} (kept only with LEADERRUN_KEEP_TMP=1)",
            self.dir.path().display()
        ));
        eprintln!("{out}");
        let _ = write!(self.journal, "{out}");
        failing
    }
}

fn forced_note(forced: usize) -> String {
    if forced == 0 {
        return String::new();
    }
    format!(
        " (+{forced} during a forced takeover: key delete / lease revoke, by an operator or by a \
         resumed etcd raft leader)"
    )
}

/// Seconds since midnight (UTC) of a time of day as `wall()` and the logs print it
/// (`HH:MM:SS.ffffffZ`). A soak across midnight would misplace the lines around it.
fn secs_of_day(t: &str) -> Option<f64> {
    let mut it = t.strip_suffix('Z').unwrap_or(t).splitn(3, ':');
    let h: f64 = it.next()?.parse().ok()?;
    let m: f64 = it.next()?.parse().ok()?;
    let s: f64 = it.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// Nearest-rank percentile of a sorted list.
fn pct<T: Copy>(sorted: &[T], p: usize) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    Some(sorted[rank - 1])
}

#[test]
#[ignore = "long-running soak: run it with scripts/soak.sh"]
fn random_faults_on_a_cluster_never_overlap_two_children() {
    let faults: usize = env_or("SOAK_FAULTS", 200);
    let max_secs: u64 = env_or("SOAK_MAX_SECS", 1800);
    let ttl: u32 = env_or("SOAK_TTL", 3);
    let seed: u64 = env_or("SOAK_SEED", mono_now_ns() ^ u64::from(std::process::id()));
    let strict = env_or("SOAK_STRICT", 0u8) == 1;
    let roles = Roles::from_env();
    let preempt = (env_or("SOAK_PRIORITIES", 0u8) == 1)
        .then(|| Duration::from_secs_f64(env_or("SOAK_PREEMPT", 4.0)));
    let kinds: Vec<&'static str> = match std::env::var("SOAK_KINDS") {
        Ok(list) => list
            .split(',')
            .map(|k| {
                *KINDS
                    .iter()
                    .find(|known| **known == k.trim())
                    .unwrap_or_else(|| panic!("SOAK_KINDS: unknown kind {k}; known: {KINDS:?}"))
            })
            .collect(),
        Err(_) => KINDS.to_vec(),
    };
    let dir = TempDir::new("leaderrun-soak");
    let journal = File::create(dir.join("soak.log")).expect("soak journal");
    let cluster = EtcdCluster::start(3);
    let proxies = (0..CANDIDATES)
        .map(|_| {
            (0..3)
                .map(|m| FaultProxy::start(cluster.client_addr(m)))
                .collect()
        })
        .collect();
    let records = dir.join("records");
    let mut soak = Soak {
        ttl,
        roles,
        records: records.clone(),
        holds: dir.join("holds"),
        dir,
        cluster,
        proxies,
        instances: Vec::new(),
        tail: Tail::new(records),
        rng: Rng(seed),
        outcomes: Vec::new(),
        anomalies: Vec::new(),
        faults_done: 0,
        unsettled_in_a_row: 0,
        t0: Instant::now(),
        journal,
        max_lifetime_ms: (max_secs + 600) * 1000,
        froze_raft_leader: false,
        link_cut: None,
        preempt,
    };
    soak.log(&format!(
        "soak: {faults} faults, cap {max_secs} s, TTL {ttl} s, seed {seed} (SOAK_SEED), roles \
         {roles:?} (SOAK_ROLES), priorities/--preempt {preempt:?} (SOAK_PRIORITIES, \
         SOAK_PREEMPT), kinds {kinds:?}; dir {}",
        soak.dir.path().display()
    ));
    for slot in 0..CANDIDATES {
        soak.spawn(slot);
    }
    let cap = Duration::from_secs(max_secs);
    // A fixture failure (a member that does not come back) ends the soak, after the summary.
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for _ in 0..faults {
            if soak.t0.elapsed() >= cap {
                soak.log("wall-time cap reached: stopping");
                break;
            }
            let kind = kinds[soak.rng.below(kinds.len())];
            soak.run_one(kind);
        }
        let _ = soak.settle(None);
    }));
    let failing = soak.summary(strict);
    if let Err(panic) = ran {
        std::panic::resume_unwind(panic);
    }
    assert_eq!(
        failing, 0,
        "children (or VIP holds) overlapped: see the summary above"
    );
}
