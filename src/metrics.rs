//! What `/metrics` and `/status` report beyond the role: counters fed by one-line hooks in the
//! supervisor, the lease and the etcd calls, and the live facts of the current lease.
//!
//! One set per process, like the logger: the hooks are plain function calls, with no handle to
//! thread through the state machine, and they cost an atomic add whether or not anything is
//! served (`--status-addr` off). Nothing here can fail or block for long: the lease facts sit
//! behind a mutex held for a copy.

use crate::etcd::Kind;
use crate::lease::Loss;
use crate::timing::Timing;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;
use std::sync::{LazyLock, Mutex, PoisonError};
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
    /// Given up on purpose: TERM/INT, the child's exit, a step-down, an exit.
    Graceful,
}

impl Reason {
    const ALL: [Reason; 5] = [
        Reason::LeaseExpired,
        Reason::KeyDeleted,
        Reason::Deadline,
        Reason::Unverified,
        Reason::Graceful,
    ];

    fn label(self) -> &'static str {
        match self {
            Reason::LeaseExpired => "lease_expired",
            Reason::KeyDeleted => "key_deleted",
            Reason::Deadline => "deadline",
            Reason::Unverified => "unverified",
            Reason::Graceful => "graceful",
        }
    }
}

impl From<Loss> for Reason {
    fn from(loss: Loss) -> Reason {
        match loss {
            Loss::Gone => Reason::LeaseExpired,
            Loss::DeadlineNear => Reason::Deadline,
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

/// The label of an error of `kind`.
pub fn kind_label(kind: Kind) -> &'static str {
    match kind {
        Kind::Retry => "retry",
        Kind::NeverSent => "never_sent",
        Kind::LeaseGone => "lease_gone",
        Kind::AuthExpired => "auth_expired",
        Kind::Tls => "tls",
        Kind::Fatal => "fatal",
    }
}

/// The current lease, as the keepalive task last saw it.
#[derive(Debug, Clone, Copy)]
pub struct LeaseFacts {
    pub id: i64,
    pub timing: Timing,
    /// D: the lease lives at least until then.
    pub deadline: Instant,
    /// When the newest acknowledged keepalive was answered.
    pub acknowledged: Instant,
}

impl LeaseFacts {
    /// Whether the child may still run by the deadline rule: the stop time `D - m - G` is
    /// ahead. The supervisor stops the child at that moment; `/leader` says 503 from then on
    /// even if its answer is computed a hair before the supervisor acts.
    pub fn stop_time_ahead(&self, now: Instant) -> bool {
        now < self.timing.stop_at(self.deadline)
    }
}

type Label = [(&'static str, &'static str); 1];

struct Metrics {
    registry: Registry,
    leader: Gauge,
    terms: Counter,
    losses: Family<Label, Counter>,
    child_starts: Counter,
    child_exits: Family<Label, Counter>,
    keepalive_rtt: Histogram,
    deadline_left: Gauge<f64, AtomicU64>,
    keepalive_age: Gauge<f64, AtomicU64>,
    etcd_errors: Family<Label, Counter>,
    lease: Mutex<Option<LeaseFacts>>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("leaderrun");
        let m = Metrics {
            registry: Registry::default(),
            leader: Gauge::default(),
            terms: Counter::default(),
            losses: Family::default(),
            child_starts: Counter::default(),
            child_exits: Family::default(),
            // 0.5 ms to about 8 s.
            keepalive_rtt: Histogram::new(exponential_buckets(0.0005, 2.0, 15)),
            deadline_left: Gauge::default(),
            keepalive_age: Gauge::default(),
            etcd_errors: Family::default(),
            lease: Mutex::new(None),
        };
        // Every labelled series exists from the start, at 0: a rate over a series that appears
        // with its first increment misses that increment.
        for r in Reason::ALL {
            let _ = m.losses.get_or_create(&[("reason", r.label())]);
        }
        for e in [Exit::OnItsOwn, Exit::Stopped] {
            let _ = m.child_exits.get_or_create(&[("how", e.label())]);
        }
        for k in ERROR_KINDS {
            let _ = m.etcd_errors.get_or_create(&[("kind", k)]);
        }
        registry.register(
            "leader",
            "1 while this candidate leads and its child runs, else 0",
            m.leader.clone(),
        );
        registry.register(
            "leadership_terms",
            "Terms of leadership begun (elected, verified, child started)",
            m.terms.clone(),
        );
        registry.register(
            "leadership_losses",
            "Terms of leadership ended, by reason",
            m.losses.clone(),
        );
        registry.register("child_starts", "Children started", m.child_starts.clone());
        registry.register(
            "child_exits",
            "Children ended: on their own, or stopped by leaderrun",
            m.child_exits.clone(),
        );
        registry.register_with_unit(
            "keepalive_rtt",
            "Round trip of acknowledged keepalives",
            Unit::Seconds,
            m.keepalive_rtt.clone(),
        );
        registry.register_with_unit(
            "deadline_remaining",
            "Time left until the lease deadline D (0 without a lease)",
            Unit::Seconds,
            m.deadline_left.clone(),
        );
        registry.register_with_unit(
            "keepalive_age",
            "Time since the last acknowledged keepalive (0 without a lease)",
            Unit::Seconds,
            m.keepalive_age.clone(),
        );
        registry.register(
            "etcd_errors",
            "Failed etcd calls, by kind",
            m.etcd_errors.clone(),
        );
        registry.register(
            "build",
            "The version of leaderrun",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        Metrics { registry, ..m }
    }
}

// ---- hooks ------------------------------------------------------------------------------------

/// A term began: the first child of a verified leadership started.
pub fn term_started() {
    METRICS.terms.inc();
}

/// A term ended, for `reason`.
pub fn term_ended(reason: Reason) {
    METRICS
        .losses
        .get_or_create(&[("reason", reason.label())])
        .inc();
}

pub fn child_started() {
    METRICS.child_starts.inc();
}

pub fn child_exited(how: Exit) {
    METRICS
        .child_exits
        .get_or_create(&[("how", how.label())])
        .inc();
}

/// One failed etcd call, of one of [`ERROR_KINDS`].
pub fn etcd_error(kind: &'static str) {
    METRICS.etcd_errors.get_or_create(&[("kind", kind)]).inc();
}

/// A lease was granted: it is the current one, known to live until `deadline`.
pub fn lease_granted(id: i64, timing: Timing, deadline: Instant) {
    *lease_facts() = Some(LeaseFacts {
        id,
        timing,
        deadline,
        acknowledged: Instant::now(),
    });
}

/// A keepalive sent at `sent` was acknowledged; D is now `deadline`.
pub fn keepalive_acknowledged(id: i64, sent: Instant, deadline: Instant) {
    let now = Instant::now();
    METRICS
        .keepalive_rtt
        .observe(now.saturating_duration_since(sent).as_secs_f64());
    if let Some(f) = lease_facts().as_mut().filter(|f| f.id == id) {
        f.deadline = deadline;
        f.acknowledged = now;
    }
}

/// The lease `id` is no longer kept alive (released, lost, dropped).
pub fn lease_ended(id: i64) {
    let mut facts = lease_facts();
    if facts.is_some_and(|f| f.id == id) {
        *facts = None;
    }
}

// ---- readers ----------------------------------------------------------------------------------

/// The current lease, if any.
pub fn lease() -> Option<LeaseFacts> {
    *lease_facts()
}

fn lease_facts() -> std::sync::MutexGuard<'static, Option<LeaseFacts>> {
    // A panic elsewhere while holding it cannot leave a torn Copy value: go on with it.
    METRICS.lease.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The Prometheus text (OpenMetrics) of every metric, `leading` being the `/leader` verdict.
pub fn encode_text(leading: bool) -> String {
    let m = &*METRICS;
    m.leader.set(i64::from(leading));
    let now = Instant::now();
    let (left, age) = match lease() {
        Some(f) => (
            signed_secs(now, f.deadline),
            now.saturating_duration_since(f.acknowledged).as_secs_f64(),
        ),
        None => (0.0, 0.0),
    };
    m.deadline_left.set(left);
    m.keepalive_age.set(age);
    let mut text = String::with_capacity(4096);
    // Writing to a String cannot fail; an error would only truncate the page.
    let _ = encode(&mut text, &m.registry);
    text
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
        let text = encode_text(true);
        for series in [
            "leaderrun_leader 1",
            "leaderrun_leadership_terms_total ",
            "leaderrun_leadership_losses_total{reason=\"deadline\"} ",
            "leaderrun_leadership_losses_total{reason=\"graceful\"} ",
            "leaderrun_child_starts_total ",
            "leaderrun_child_exits_total{how=\"stopped\"} ",
            "leaderrun_keepalive_rtt_seconds_bucket{le=\"0.0005\"} ",
            "leaderrun_deadline_remaining_seconds ",
            "leaderrun_keepalive_age_seconds ",
            "leaderrun_etcd_errors_total{kind=\"timed_out\"} ",
            "leaderrun_build_info{version=\"",
            "# EOF",
        ] {
            assert!(text.contains(series), "{series} missing from:\n{text}");
        }
        assert!(encode_text(false).contains("leaderrun_leader 0"));
    }

    #[test]
    fn lease_facts_follow_only_the_current_lease() {
        let timing = Timing::new(std::time::Duration::from_secs(10), None).unwrap();
        let t0 = Instant::now();
        lease_granted(7, timing, t0 + timing.ttl);
        keepalive_acknowledged(8, t0, t0 + 2 * timing.ttl);
        assert_eq!(lease().unwrap().deadline, t0 + timing.ttl);
        lease_ended(8);
        assert!(lease().is_some());
        assert!(lease().unwrap().stop_time_ahead(t0));
        lease_ended(7);
        assert!(lease().is_none());
    }
}
