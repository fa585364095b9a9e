//! A recurring problem (etcd unreachable, a stream that keeps failing) is logged once when it
//! starts, then as a reminder every [`REMIND_EVERY`] with the latest error, and once when it
//! ends: an outage at TTL 2 must not write thirty lines a second. The failures of one outage
//! vary (reset, refused, cancelled), so they are one condition, not one line each.

use std::fmt::Display;
use tokio::time::{Duration, Instant};

/// How often an ongoing problem is logged again.
pub const REMIND_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Recurring {
    what: &'static str,
    failing: Option<Failing>,
}

#[derive(Debug)]
struct Failing {
    since: Instant,
    logged: Instant,
    /// Failures since the last line.
    unlogged: u64,
}

impl Recurring {
    /// `what` names the activity in every line ("keepalive", "connecting to etcd").
    pub fn new(what: &'static str) -> Recurring {
        Recurring {
            what,
            failing: None,
        }
    }

    /// It failed (again); `error` names the endpoint and the error. Logged when the trouble
    /// starts, and when the last line is older than [`REMIND_EVERY`].
    pub fn report(&mut self, error: impl Display) {
        let now = Instant::now();
        match &mut self.failing {
            Some(f) => {
                f.unlogged += 1;
                if now.duration_since(f.logged) >= REMIND_EVERY {
                    tracing::warn!(
                        %error,
                        failing_for_ms = crate::log::ms(now.duration_since(f.since)),
                        failures = f.unlogged,
                        "{}: still failing",
                        self.what
                    );
                    f.logged = now;
                    f.unlogged = 0;
                }
            }
            None => {
                tracing::warn!(%error, "{}: failing", self.what);
                self.failing = Some(Failing {
                    since: now,
                    logged: now,
                    unlogged: 0,
                });
            }
        }
    }

    /// It worked: say so once if it had been failing.
    pub fn clear(&mut self) {
        if let Some(f) = self.failing.take() {
            tracing::info!(
                after_ms = crate::log::ms(f.since.elapsed()),
                "{}: working again",
                self.what
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_until_the_reminder_and_a_success_ends_them() {
        let mut t = Recurring::new("test");
        t.report("a: reset");
        t.report("b: refused");
        assert_eq!(t.failing.as_ref().unwrap().unlogged, 1);
        t.clear();
        assert!(t.failing.is_none());
    }
}
