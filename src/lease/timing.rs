//! The timing model (docs/SAFETY.md): pure arithmetic, no I/O.
//!
//! ```text
//!   T  lease TTL as granted by etcd
//!   k  keepalive interval            = T/5 while leading (a standby, which has no child:
//!                                      T/3 + 500 ms, at most 2k - T/100)
//!   r  allowance for one round trip  = k/2
//!   m  safety margin                 = max(500 ms, T/10)
//!   G  stop timeout (signal → KILL)  <= T - 2k - r - m - H
//!   H  demote hook's timeout         (0 without --on-demote)
//!   D  local deadline                = send time of the newest acknowledged keepalive + T
//! ```
//!
//! The child gets the stop signal at `D - m - H - G` and SIGKILL at `D - m - H`; the demote hook
//! then runs and is killed at `D - m` at the latest. So the child is dead and the hook has ended
//! before the server can expire the lease (no earlier than D) and before any standby can win.

use std::time::Duration;
use tokio::time::Instant;

/// G when the user sets none: long enough for a typical server to drain.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(3);
/// How often Go's lease keepalive loop checks whether a renewal is due.
const GO_SESSION_CHECK: Duration = Duration::from_millis(500);
/// The floor of m: SIGKILL-to-reap time on a loaded host plus clock-rate drift over a TTL.
pub const MIN_MARGIN: Duration = Duration::from_millis(500);

/// Timing values derived from one TTL. Build it with [`Timing::new`], which checks the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// T: lease TTL.
    pub ttl: Duration,
    /// k: one keepalive every k while leading.
    pub keepalive: Duration,
    /// A standby's keepalive interval: a standby has no child, so no deadline to keep; it only
    /// keeps its place in the queue. Never more often than Go's election keeps its session: Go
    /// renews once T/3 has passed, as seen by a check every 500 ms, so T/3 to T/3 + 500 ms
    /// apart. Under 2k (by T/100), so that a deadline kept at this pace still leaves room to
    /// start.
    pub standby_keepalive: Duration,
    /// r: what a keepalive round trip may take before the budget is hurt.
    pub round_trip: Duration,
    /// m: safety margin between SIGKILL and the deadline.
    pub margin: Duration,
    /// G: stop signal to SIGKILL.
    pub stop_timeout: Duration,
    /// H: what the demote hook may take, within the deadline (0 without one).
    pub hook_timeout: Duration,
}

/// Why a TTL and stop timeout do not fit together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    #[error("--ttl {ttl}s is too small: the keepalives and safety margin alone need {needed}ms; raise --ttl")]
    TtlTooSmall { ttl: u64, needed: u128 },
    #[error(
        "--stop-timeout {given}ms does not fit --ttl {ttl}s (at most {max}ms fits: 2k + r + m + G <= TTL); raise --ttl or lower --stop-timeout"
    )]
    StopTimeoutTooLong { given: u128, ttl: u64, max: u128 },
    #[error(
        "--hook-timeout {hook}ms and --stop-timeout {stop}ms do not fit --ttl {ttl}s together (at most {max}ms fits: 2k + r + m + G + H <= TTL, the demote hook within the deadline); raise --ttl or lower --hook-timeout or --stop-timeout"
    )]
    HookTooLong {
        hook: u128,
        stop: u128,
        ttl: u64,
        max: u128,
    },
}

impl Timing {
    /// Derive the timing for `ttl`. An explicit `stop_timeout` that does not fit is refused; the
    /// default one shrinks to fit.
    pub fn new(ttl: Duration, stop_timeout: Option<Duration>) -> Result<Timing, BudgetError> {
        Timing::with_hook(ttl, stop_timeout, Duration::ZERO)
    }

    /// [`Timing::new`], with a demote hook of `hook_timeout` inside the stop budget: the child's
    /// stop timeout and the hook's together must fit; the default stop timeout shrinks to fit
    /// what the hook leaves.
    pub fn with_hook(
        ttl: Duration,
        stop_timeout: Option<Duration>,
        hook_timeout: Duration,
    ) -> Result<Timing, BudgetError> {
        let keepalive = ttl / 5;
        let round_trip = keepalive / 2;
        let margin = MIN_MARGIN.max(ttl / 10);
        // One keepalive may be lost: the one after it goes out at s + 2k and needs r to come back.
        let needed = 2 * keepalive + round_trip + margin;
        let budget = ttl.checked_sub(needed).ok_or(BudgetError::TtlTooSmall {
            ttl: ttl.as_secs(),
            needed: needed.as_millis(),
        })?;
        let too_long = |stop: Duration| BudgetError::HookTooLong {
            hook: hook_timeout.as_millis(),
            stop: stop.as_millis(),
            ttl: ttl.as_secs(),
            max: budget.as_millis(),
        };
        let explicit = stop_timeout.is_some();
        let stop_timeout = match stop_timeout {
            Some(g) if g > budget => {
                return Err(BudgetError::StopTimeoutTooLong {
                    given: g.as_millis(),
                    ttl: ttl.as_secs(),
                    max: budget.as_millis(),
                })
            }
            Some(g) => g,
            None => DEFAULT_STOP_TIMEOUT.min(budget),
        };
        let stop_timeout = match budget.checked_sub(hook_timeout) {
            _ if hook_timeout.is_zero() => stop_timeout,
            // What the hook leaves; a default G shrinks to it, but not to nothing.
            Some(left) if stop_timeout <= left => stop_timeout,
            Some(left) if !left.is_zero() && !explicit => left,
            _ => return Err(too_long(stop_timeout)),
        };
        Ok(Timing {
            ttl,
            keepalive,
            standby_keepalive: (ttl / 3 + GO_SESSION_CHECK).min(2 * keepalive - ttl / 100),
            round_trip,
            margin,
            stop_timeout,
            hook_timeout,
        })
    }

    /// When the stop signal must go out for a lease deadline `d`: `D - m - H - G`.
    pub fn stop_at(&self, d: Instant) -> Instant {
        d - self.margin - self.hook_timeout - self.stop_timeout
    }

    /// When SIGKILL must go out to the child for a lease deadline `d`: `D - m - H`.
    pub fn kill_at(&self, d: Instant) -> Instant {
        d - self.margin - self.hook_timeout
    }

    /// When the demote hook is killed at the latest for a lease deadline `d`: `D - m`.
    pub fn hook_kill_at(&self, d: Instant) -> Instant {
        d - self.margin
    }

    /// What a TTL leaves for the child's stop and the demote hook together: `T - 2k - r - m`.
    pub fn stop_budget(ttl: Duration) -> Option<Duration> {
        let keepalive = ttl / 5;
        ttl.checked_sub(2 * keepalive + keepalive / 2 + MIN_MARGIN.max(ttl / 10))
    }

    /// How long one unary request to etcd may take before we give up on it and retry.
    pub fn request_timeout(&self) -> Duration {
        request_timeout(self.ttl)
    }
}

/// What a TTL leaves for the child's stop and the demote hook together: `T - 2k - r - m`.
pub fn stop_budget(ttl: Duration) -> Option<Duration> {
    let keepalive = ttl / 5;
    ttl.checked_sub(2 * keepalive + keepalive / 2 + MIN_MARGIN.max(ttl / 10))
}

/// The soonest a standby can take over after a leader froze (SIGSTOP, a paused VM) with etcd
/// healthy: `T - k - m` (its last keepalive went out at most k before the freeze). systemd's
/// watchdog must kill a frozen leaderrun sooner: `WatchdogSec` below this (docs/SAFETY.md).
pub fn freeze_limit(ttl: Duration) -> Duration {
    ttl.saturating_sub(ttl / 5 + MIN_MARGIN.max(ttl / 10))
}

/// Why `watchdog` (systemd's `WatchdogSec`) does not fit `timing`, and which values would:
/// below [`freeze_limit`] (and at most `m + G` to cover a freeze during an etcd outage too), or
/// the smallest whole-second TTL whose limit is above it. None when it fits.
pub fn watchdog_misfit(timing: &Timing, watchdog: Duration) -> Option<String> {
    let limit = freeze_limit(timing.ttl);
    if watchdog < limit {
        return None;
    }
    let outage = timing.margin + timing.hook_timeout + timing.stop_timeout;
    // The limit grows with the TTL (0.7 T from 5 s on): the smallest TTL above the watchdog,
    // by bisection up to etcd's maximum lease TTL.
    const MAX_TTL_SECS: u64 = 9_000_000_000;
    let (mut low, mut high) = (timing.ttl.as_secs().max(1), MAX_TTL_SECS);
    let fits = |secs: u64| freeze_limit(Duration::from_secs(secs)) > watchdog;
    let ttl = fits(high).then(|| {
        while low < high {
            let mid = low + (high - low) / 2;
            if fits(mid) {
                high = mid;
            } else {
                low = mid + 1;
            }
        }
        high
    });
    let show = |d: Duration| humantime::format_duration(d).to_string();
    let raise = match ttl {
        Some(t) => format!(", or raise --ttl to {t} or more"),
        None => String::new(),
    };
    Some(format!(
        "systemd's watchdog (WATCHDOG_USEC, WatchdogSec={}) does not fit --ttl {}: a frozen \
         leaderrun would be killed only after a standby may have taken over, its child still \
         running; set WatchdogSec below {} ({} or less also covers a freeze during an etcd \
         outage){raise}",
        show(watchdog),
        timing.ttl.as_secs(),
        show(limit),
        show(outage),
    ))
}

/// How long one unary request to etcd (or building a client) may take for a lease of `ttl`:
/// a keepalive interval, at least a second.
pub fn request_timeout(ttl: Duration) -> Duration {
    (ttl / 5).max(Duration::from_secs(1))
}

/// D: the instant until which the lease is known to live. It only moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(Instant);

impl Deadline {
    /// The deadline implied by a request sent at `sent` and acknowledged with a live lease:
    /// the server renewed the lease after it received the request, hence after `sent`.
    pub fn acknowledged(sent: Instant, ttl: Duration) -> Deadline {
        Deadline(sent + ttl)
    }

    /// Move forward to the deadline of a newer acknowledgement; never back.
    /// Returns whether the deadline moved.
    pub fn extend(&mut self, sent: Instant, ttl: Duration) -> bool {
        let candidate = sent + ttl;
        if candidate > self.0 {
            self.0 = candidate;
            true
        } else {
            false
        }
    }

    pub fn at(&self) -> Instant {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn default_ttl_keeps_the_default_stop_timeout() {
        let t = Timing::new(Duration::from_secs(10), None).unwrap();
        assert_eq!(t.keepalive, ms(2000));
        assert_eq!(t.round_trip, ms(1000));
        assert_eq!(t.margin, ms(1000));
        assert_eq!(t.stop_timeout, ms(3000));
    }

    /// A standby's keepalives are sparser than a leader's, but a deadline they keep still
    /// leaves time to start a child: even at the stop timeout's limit, the stop time of a
    /// deadline acknowledged a whole standby interval (and a round trip) ago is ahead.
    #[test]
    fn a_standby_keepalive_interval_leaves_room_to_start() {
        for secs in [2, 3, 5, 10, 30, 300] {
            let ttl = Duration::from_secs(secs);
            let t = Timing::new(ttl, None).unwrap();
            let budget = ttl - 2 * t.keepalive - t.round_trip - t.margin;
            let t = Timing::new(ttl, Some(budget)).unwrap();
            // Never more often than Go's session renews.
            assert!(t.standby_keepalive > ttl / 3, "T={secs}s");
            let now = Instant::now() + ttl;
            let acknowledged_long_ago = now - t.standby_keepalive - t.round_trip;
            let d = Deadline::acknowledged(acknowledged_long_ago, ttl);
            assert!(t.stop_at(d.at()) > now, "T={secs}s");
        }
    }

    #[test]
    fn default_stop_timeout_shrinks_to_fit_a_small_ttl() {
        // T=3: k=600, r=300, m=500 → G <= 3000 - 1200 - 300 - 500 = 1000.
        let t = Timing::new(Duration::from_secs(3), None).unwrap();
        assert_eq!(t.stop_timeout, ms(1000));
        let t = Timing::new(Duration::from_secs(2), None).unwrap();
        assert_eq!(t.stop_timeout, ms(500));
    }

    #[test]
    fn explicit_stop_timeout_that_does_not_fit_is_refused_naming_the_knobs() {
        let err = Timing::new(Duration::from_secs(3), Some(ms(1500))).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("--ttl") && text.contains("--stop-timeout"),
            "{text}"
        );
        assert!(Timing::new(Duration::from_secs(3), Some(ms(1000))).is_ok());
    }

    #[test]
    fn one_lost_keepalive_does_not_trigger_the_stop() {
        // For every TTL we accept, a keepalive sent at s + 2k and answered within r arrives
        // before the stop time computed from the acknowledgement at s.
        for secs in 1..=120 {
            let t = Timing::new(Duration::from_secs(secs), None).unwrap();
            let s = Instant::now();
            let d = Deadline::acknowledged(s, t.ttl);
            assert!(
                s + 2 * t.keepalive + t.round_trip <= t.stop_at(d.at()),
                "ttl {secs}"
            );
            assert!(t.stop_at(d.at()) + t.stop_timeout == t.kill_at(d.at()));
            assert!(t.kill_at(d.at()) + t.margin == d.at());
            assert!(t.hook_kill_at(d.at()) == t.kill_at(d.at()));
        }
    }

    #[test]
    fn the_deadline_covers_the_demote_hook() {
        // T=10: k=2, r=1, m=1 → G + H <= 4 s.
        let ttl = Duration::from_secs(10);
        let t = Timing::with_hook(ttl, None, ms(1000)).unwrap();
        assert_eq!(t.stop_timeout, ms(3000));
        let d = Instant::now() + ttl;
        assert_eq!(
            t.stop_at(d) + t.stop_timeout + t.hook_timeout,
            t.hook_kill_at(d)
        );
        assert_eq!(t.hook_kill_at(d) + t.margin, d);
        // A default G shrinks to what the hook leaves; an explicit one does not.
        let t = Timing::with_hook(ttl, None, ms(2500)).unwrap();
        assert_eq!(t.stop_timeout, ms(1500));
        let err = Timing::with_hook(ttl, Some(ms(3000)), ms(2500)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("--hook-timeout") && text.contains("--ttl"),
            "{text}"
        );
        assert!(Timing::with_hook(ttl, None, ms(4000)).is_err());
        assert!(Timing::with_hook(ttl, Some(ms(1000)), ms(3000)).is_ok());
    }

    #[test]
    fn deadline_only_moves_forward() {
        let s = Instant::now();
        let mut d = Deadline::acknowledged(s, Duration::from_secs(10));
        assert!(!d.extend(s - ms(1), Duration::from_secs(10)));
        assert_eq!(d.at(), s + Duration::from_secs(10));
        assert!(d.extend(s + ms(5), Duration::from_secs(10)));
        assert_eq!(d.at(), s + ms(10_005));
    }

    #[test]
    fn the_watchdog_must_kill_a_frozen_leader_before_a_standby_can_take_over() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        for (ttl, limit) in [
            (s(10), s(7)),
            (s(5), ms(3500)),
            (s(3), ms(1900)),
            (s(2), ms(1100)),
        ] {
            assert_eq!(freeze_limit(ttl), limit, "{ttl:?}");
        }
        let default = Timing::new(s(10), None).unwrap();
        assert_eq!(watchdog_misfit(&default, s(3)), None);
        assert_eq!(watchdog_misfit(&default, ms(6999)), None);
        let line = watchdog_misfit(&default, s(7)).unwrap();
        assert!(
            line.contains("WatchdogSec=7s") && line.contains("--ttl 10"),
            "{line}"
        );
        assert!(
            line.contains("below 7s") && line.contains("(4s or less"),
            "{line}"
        );
        assert!(line.ends_with("raise --ttl to 11 or more"), "{line}");
        let line = watchdog_misfit(&default, s(10)).unwrap();
        assert!(line.ends_with("raise --ttl to 15 or more"), "{line}");
        // At --ttl 5 the units' 3 s fits; 3.5 s does not.
        let five = Timing::new(s(5), None).unwrap();
        assert_eq!(watchdog_misfit(&five, s(3)), None);
        assert!(watchdog_misfit(&five, ms(3500))
            .unwrap()
            .contains("below 3s 500ms"));
        // No TTL etcd takes would fit: no TTL is suggested.
        let line = watchdog_misfit(&default, s(u64::MAX / 4)).unwrap();
        assert!(!line.contains("raise --ttl"), "{line}");
    }
}
