//! What `/metrics` and `/status` report beyond the role: counters fed by one-line hooks in the
//! supervisor, the lease and the etcd calls, and the live facts of the current lease; the
//! Prometheus text format (0.0.4) written out by hand.
//!
//! One set per process, like the logger: the hooks are plain function calls, with no handle to
//! thread through the state machine. Each is an atomic add on a static, whether or not anything
//! is served (`--status-addr` off). Nothing here can fail or block for long: the lease facts sit
//! behind a mutex held for a copy.
//!
//! No metrics crate: the set is fixed (no dynamic labels, one histogram), and
//! prometheus-client, measured, added about 0.5 MB to the resident memory of every leader
//! (its registry, locks and hashing touch code spread over the binary, and the kernel maps it
//! in 64 KB steps) where these statics touch next to nothing.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use tokio::time::Instant;

/// Why a term of leadership ended (`leaderrun_leadership_losses_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A keepalive answer said the lease is gone (TTL 0): expired or revoked.
    LeaseExpired,
    /// Our leader key was deleted in etcd.
    KeyDeleted,
    /// No acknowledged keepalive: the stop time `D - m - G` came.
    Deadline,
    /// A restart in place could not verify leadership any more.
    Unverified,
    /// The child failed its health check (`--health-cmd`, `--health-http`).
    Unhealthy,
    /// Given up on purpose: TERM/INT, the child's exit, a step-down, an exit.
    Graceful,
    /// The promote hook failed: the child never started.
    Vetoed,
}

impl Reason {
    const ALL: [Reason; 7] = [
        Reason::LeaseExpired,
        Reason::KeyDeleted,
        Reason::Deadline,
        Reason::Unverified,
        Reason::Unhealthy,
        Reason::Graceful,
        Reason::Vetoed,
    ];

    fn label(self) -> &'static str {
        match self {
            Reason::LeaseExpired => "lease_expired",
            Reason::KeyDeleted => "key_deleted",
            Reason::Deadline => "deadline",
            Reason::Unverified => "unverified",
            Reason::Unhealthy => "unhealthy",
            Reason::Graceful => "graceful",
            Reason::Vetoed => "vetoed",
        }
    }
}

/// How a child ended (`leaderrun_child_exits_total{how}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited on its own.
    OnItsOwn,
    /// leaderrun stopped it (end of a term, TERM/INT).
    Stopped,
}

impl Exit {
    fn label(self) -> &'static str {
        match self {
            Exit::OnItsOwn => "on_its_own",
            Exit::Stopped => "stopped",
        }
    }
}

/// The kinds of etcd errors, as `crate::etcd::Kind` classifies them, plus time-outs and broken
/// keepalive streams (`leaderrun_etcd_errors_total{kind}`).
pub const ERROR_KINDS: [&str; 8] = [
    "retry",
    "never_sent",
    "lease_gone",
    "auth_expired",
    "tls",
    "fatal",
    "timed_out",
    "keepalive_stream",
];

/// Upper bounds of the keepalive round-trip buckets: 0.5 ms doubling to about 8 s.
const RTT_BUCKETS: usize = 15;
const RTT_FIRST_NS: u64 = 500_000;

struct Metrics {
    terms: AtomicU64,
    losses: [AtomicU64; Reason::ALL.len()],
    child_starts: AtomicU64,
    child_exits: [AtomicU64; 2],
    /// Per bucket (not cumulative), then the count and the sum in ns.
    rtt_buckets: [AtomicU64; RTT_BUCKETS],
    rtt_count: AtomicU64,
    rtt_sum_ns: AtomicU64,
    etcd_errors: [AtomicU64; ERROR_KINDS.len()],
    /// Health checks that failed, then passed.
    health_checks: [AtomicU64; 2],
    log_lines_dropped: AtomicU64,
    fencing_behind: AtomicU64,
    /// By hook (promote, demote), then outcome (failed, ok).
    hooks: [[AtomicU64; 2]; 2],
    /// By [`CHANGE_REASONS`].
    changes: [AtomicU64; CHANGE_REASONS.len()],
    passes: AtomicU64,
    /// Since when this candidate knows of no leader, in ns after [`epoch`]; 0: one leads.
    leaderless_since_ns: AtomicU64,
}

static METRICS: Metrics = Metrics {
    terms: AtomicU64::new(0),
    losses: [const { AtomicU64::new(0) }; Reason::ALL.len()],
    child_starts: AtomicU64::new(0),
    child_exits: [const { AtomicU64::new(0) }; 2],
    rtt_buckets: [const { AtomicU64::new(0) }; RTT_BUCKETS],
    rtt_count: AtomicU64::new(0),
    rtt_sum_ns: AtomicU64::new(0),
    etcd_errors: [const { AtomicU64::new(0) }; ERROR_KINDS.len()],
    health_checks: [const { AtomicU64::new(0) }; 2],
    log_lines_dropped: AtomicU64::new(0),
    fencing_behind: AtomicU64::new(0),
    hooks: [const { [const { AtomicU64::new(0) }; 2] }; 2],
    changes: [const { AtomicU64::new(0) }; CHANGE_REASONS.len()],
    passes: AtomicU64::new(0),
    leaderless_since_ns: AtomicU64::new(0),
};

/// Why this candidate's leadership ended (`leaderrun_leader_changes_total{reason}`): the words
/// of `LEADERRUN_REASON` and of `leaderrun history`, with `_` for `-`.
pub const CHANGE_REASONS: [&str; 7] = [
    "exit",
    "lost",
    "shutdown",
    "step-down",
    "unhealthy",
    "vetoed",
    "preempted",
];

/// The labels of `leaderrun_info`, set once at start.
static INFO: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The origin of [`Metrics::leaderless_since_ns`].
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

// ---- hooks ------------------------------------------------------------------------------------

/// A term began: the first child of a verified leadership started.
pub fn term_started() {
    METRICS.terms.fetch_add(1, Relaxed);
}

/// A term ended, for `reason`.
pub fn term_ended(reason: Reason) {
    METRICS.losses[reason as usize].fetch_add(1, Relaxed);
}

pub fn child_started() {
    METRICS.child_starts.fetch_add(1, Relaxed);
}

pub fn child_exited(how: Exit) {
    METRICS.child_exits[how as usize].fetch_add(1, Relaxed);
}

/// One health check ended, passing or not.
pub fn health_check(passed: bool) {
    METRICS.health_checks[usize::from(passed)].fetch_add(1, Relaxed);
}

/// A log line was dropped: stderr was not being read and the queue was full.
pub fn log_line_dropped() {
    METRICS.log_lines_dropped.fetch_add(1, Relaxed);
}

/// A role hook ran: `promote` or demote, and whether it exited 0.
pub fn hook_ran(promote: bool, ok: bool) {
    METRICS.hooks[usize::from(promote)][usize::from(ok)].fetch_add(1, Relaxed);
}

/// Leadership changed hands away from this candidate, for `reason` (one of [`CHANGE_REASONS`];
/// another word is not counted).
pub fn leader_changed(reason: &str) {
    if let Some(i) = CHANGE_REASONS.iter().position(|r| *r == reason) {
        METRICS.changes[i].fetch_add(1, Relaxed);
    }
}

/// A waiting candidate moved behind a better one.
pub fn passed() {
    METRICS.passes.fetch_add(1, Relaxed);
}

/// Whether this candidate knows that a leader exists (it leads, or a key is ahead of its own in
/// a watch that works): the gauge `leaderrun_seconds_without_leader` counts from the first
/// moment it did not.
pub fn leader_known(known: bool) {
    let m = &METRICS.leaderless_since_ns;
    if known {
        m.store(0, Relaxed);
    } else {
        let now = u64::try_from(epoch().elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        let _ = m.compare_exchange(0, now, Relaxed, Relaxed);
    }
}

/// `leaderrun_info`'s labels: the election, the id and the priority (set once).
pub fn set_info(election: &str, id: &str, priority: u32) {
    let labels = format!(
        "election=\"{}\",id=\"{}\",priority=\"{priority}\"",
        label_value(election),
        label_value(id)
    );
    let _ = INFO.set(labels);
}

/// A label value in the text format: backslash, double quote and newline escaped.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A term was refused because its fencing token was not above a revision seen before.
pub fn fencing_token_behind() {
    METRICS.fencing_behind.fetch_add(1, Relaxed);
}

/// One failed etcd call, of one of [`ERROR_KINDS`] (another word is not counted).
pub fn etcd_error(kind: &'static str) {
    if let Some(i) = ERROR_KINDS.iter().position(|k| *k == kind) {
        METRICS.etcd_errors[i].fetch_add(1, Relaxed);
    }
}

/// A keepalive was acknowledged `rtt` after it was sent.
pub fn keepalive_acknowledged(rtt: std::time::Duration) {
    let rtt = u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX);
    let m = &METRICS;
    if let Some(b) = (0..RTT_BUCKETS).find(|b| rtt <= RTT_FIRST_NS << b) {
        m.rtt_buckets[b].fetch_add(1, Relaxed);
    }
    m.rtt_count.fetch_add(1, Relaxed);
    m.rtt_sum_ns.fetch_add(rtt, Relaxed);
}

// ---- readers ----------------------------------------------------------------------------------

/// The content type of [`encode_text`]'s page.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The Prometheus text of every metric, `leading` being the `/leader` verdict and `lease` the
/// seconds until the current lease's deadline and since its last acknowledged keepalive.
pub fn encode_text(leading: bool, lease: Option<(f64, f64)>) -> String {
    let m = &METRICS;
    let (left, age) = lease.unwrap_or((0.0, 0.0));
    let get = |a: &AtomicU64| a.load(Relaxed);
    let mut p = Page(String::with_capacity(4096));
    p.head(
        "leader",
        "gauge",
        "1 while this candidate leads and its child runs, else 0",
    );
    p.sample("leader", "", u64::from(leading));
    p.head(
        "leadership_terms_total",
        "counter",
        "Terms of leadership begun (elected, verified, child started)",
    );
    p.sample("leadership_terms_total", "", get(&m.terms));
    p.head(
        "leadership_losses_total",
        "counter",
        "Terms of leadership ended, by reason",
    );
    for r in Reason::ALL {
        let labels = format!("reason=\"{}\"", r.label());
        p.sample(
            "leadership_losses_total",
            &labels,
            get(&m.losses[r as usize]),
        );
    }
    p.head("child_starts_total", "counter", "Children started");
    p.sample("child_starts_total", "", get(&m.child_starts));
    p.head(
        "child_exits_total",
        "counter",
        "Children ended: on their own, or stopped by leaderrun",
    );
    for e in [Exit::OnItsOwn, Exit::Stopped] {
        let labels = format!("how=\"{}\"", e.label());
        p.sample(
            "child_exits_total",
            &labels,
            get(&m.child_exits[e as usize]),
        );
    }
    p.head(
        "keepalive_rtt_seconds",
        "histogram",
        "Round trip of acknowledged keepalives",
    );
    let mut cumulative = 0;
    for (b, count) in m.rtt_buckets.iter().enumerate() {
        cumulative += get(count);
        let le = (RTT_FIRST_NS << b) as f64 / 1e9;
        p.sample(
            "keepalive_rtt_seconds_bucket",
            &format!("le=\"{le}\""),
            cumulative,
        );
    }
    let count = get(&m.rtt_count);
    p.sample("keepalive_rtt_seconds_bucket", "le=\"+Inf\"", count);
    p.float("keepalive_rtt_seconds_sum", get(&m.rtt_sum_ns) as f64 / 1e9);
    p.sample("keepalive_rtt_seconds_count", "", count);
    p.head(
        "deadline_remaining_seconds",
        "gauge",
        "Time left until the lease deadline D (0 without a lease)",
    );
    p.float("deadline_remaining_seconds", left);
    p.head(
        "keepalive_age_seconds",
        "gauge",
        "Time since the last acknowledged keepalive (0 without a lease)",
    );
    p.float("keepalive_age_seconds", age);
    p.head(
        "health_checks_total",
        "counter",
        "Health checks of the child (--health-cmd, --health-http), by result",
    );
    for (i, result) in ["fail", "pass"].iter().enumerate() {
        p.sample(
            "health_checks_total",
            &format!("result=\"{result}\""),
            get(&m.health_checks[i]),
        );
    }
    p.head("etcd_errors_total", "counter", "Failed etcd calls, by kind");
    for (i, k) in ERROR_KINDS.iter().enumerate() {
        p.sample(
            "etcd_errors_total",
            &format!("kind=\"{k}\""),
            get(&m.etcd_errors[i]),
        );
    }
    p.head(
        "log_lines_dropped_total",
        "counter",
        "Log lines dropped because stderr was not being read",
    );
    p.sample("log_lines_dropped_total", "", get(&m.log_lines_dropped));
    p.head(
        "fencing_token_behind_total",
        "counter",
        "Terms refused: etcd reported a revision below one seen before (restored from an older copy?)",
    );
    p.sample("fencing_token_behind_total", "", get(&m.fencing_behind));
    p.head(
        "hook_runs_total",
        "counter",
        "Role hooks run, by hook and outcome",
    );
    for (h, hook) in ["on_demote", "on_promote"].iter().enumerate() {
        for (o, outcome) in ["failed", "ok"].iter().enumerate() {
            let labels = format!("hook=\"{hook}\",outcome=\"{outcome}\"");
            p.sample("hook_runs_total", &labels, get(&m.hooks[h][o]));
        }
    }
    p.head(
        "leader_changes_total",
        "counter",
        "Terms of this candidate ended, by reason (LEADERRUN_REASON's words, - as _)",
    );
    for (i, r) in CHANGE_REASONS.iter().enumerate() {
        let labels = format!("reason=\"{}\"", r.replace('-', "_"));
        p.sample("leader_changes_total", &labels, get(&m.changes[i]));
    }
    p.head(
        "passes_total",
        "counter",
        "Times this waiting candidate moved behind a better one (--priority, resign --to)",
    );
    p.sample("passes_total", "", get(&m.passes));
    p.head(
        "seconds_without_leader",
        "gauge",
        "Seconds this candidate has known of no leader (0 while it leads or sees one ahead)",
    );
    let since = get(&m.leaderless_since_ns);
    let without = match since {
        0 => 0.0,
        ns => (epoch().elapsed().as_nanos() as f64 - ns as f64).max(0.0) / 1e9,
    };
    p.float("seconds_without_leader", without);
    if let Some(labels) = INFO.get() {
        p.head(
            "info",
            "gauge",
            "This candidate: its election, id and priority",
        );
        p.sample("info", labels, 1);
    }
    p.head("build_info", "gauge", "The version of leaderrun");
    let version = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
    p.sample("build_info", &version, 1);
    p.0
}

/// A page of the text format; every name gets the `leaderrun_` prefix. Writing to a String
/// cannot fail.
struct Page(String);

impl Page {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(
            self.0,
            "# HELP leaderrun_{name} {help}\n# TYPE leaderrun_{name} {kind}"
        );
    }

    fn sample(&mut self, name: &str, labels: &str, value: u64) {
        let _ = match labels {
            "" => writeln!(self.0, "leaderrun_{name} {value}"),
            l => writeln!(self.0, "leaderrun_{name}{{{l}}} {value}"),
        };
    }

    fn float(&mut self, name: &str, value: f64) {
        let _ = writeln!(self.0, "leaderrun_{name} {value}");
    }
}

/// `to - from` in seconds, negative when `to` is past.
pub fn signed_secs(from: Instant, to: Instant) -> f64 {
    if to >= from {
        (to - from).as_secs_f64()
    } else {
        -(from - to).as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_every_series_with_prometheus_names() {
        term_started();
        term_ended(Reason::Deadline);
        child_started();
        child_exited(Exit::Stopped);
        etcd_error("timed_out");
        let text = encode_text(true, Some((1.0, 0.5)));
        for series in [
            "leaderrun_leader 1",
            "leaderrun_leadership_terms_total ",
            "leaderrun_leadership_losses_total{reason=\"deadline\"} ",
            "leaderrun_leadership_losses_total{reason=\"graceful\"} ",
            "leaderrun_child_starts_total ",
            "leaderrun_child_exits_total{how=\"stopped\"} ",
            "leaderrun_keepalive_rtt_seconds_bucket{le=\"0.0005\"} ",
            "leaderrun_keepalive_rtt_seconds_bucket{le=\"8.192\"} ",
            "leaderrun_keepalive_rtt_seconds_bucket{le=\"+Inf\"} ",
            "# TYPE leaderrun_etcd_errors_total counter",
            "leaderrun_deadline_remaining_seconds ",
            "leaderrun_keepalive_age_seconds ",
            "leaderrun_etcd_errors_total{kind=\"timed_out\"} ",
            "# TYPE leaderrun_log_lines_dropped_total counter",
            "leaderrun_log_lines_dropped_total ",
            "leaderrun_fencing_token_behind_total ",
            "leaderrun_hook_runs_total{hook=\"on_promote\",outcome=\"failed\"} ",
            "leaderrun_leadership_losses_total{reason=\"vetoed\"} ",
            "leaderrun_build_info{version=\"",
            "leaderrun_leader_changes_total{reason=\"step_down\"} ",
            "leaderrun_passes_total ",
            "leaderrun_seconds_without_leader ",
        ] {
            assert!(text.contains(series), "{series} missing from:\n{text}");
        }
        assert!(encode_text(false, None).contains("leaderrun_leader 0"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
