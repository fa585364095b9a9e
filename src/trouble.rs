//! A recurring problem (etcd unreachable, a stream that keeps failing) is logged once when it
//! starts or changes, then as a reminder every [`REMIND_EVERY`], and once when it ends: an outage
//! at TTL 2 must not write thirty lines a second.

use std::fmt::Display;
use tokio::time::{Duration, Instant};

/// How often an unchanged problem is logged again.
pub const REMIND_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Trouble {
    what: &'static str,
    current: Option<Current>,
}

#[derive(Debug)]
struct Current {
    condition: String,
    since: Instant,
    logged: Instant,
    /// Occurrences since the last line.
    unlogged: u64,
}

impl Trouble {
    /// `what` names the activity in every line ("keepalive", "connecting to etcd").
    pub fn new(what: &'static str) -> Trouble {
        Trouble {
            what,
            current: None,
        }
    }

    /// The problem happened (again). Logs `detail` when `condition` is new or different, or the
    /// last line is old. The condition is the kind of problem ("timed out"), the detail names
    /// the endpoint and the error.
    pub fn report(&mut self, condition: &str, detail: impl Display) {
        let now = Instant::now();
        match &mut self.current {
            Some(c) if c.condition == condition => {
                c.unlogged += 1;
                if now.duration_since(c.logged) >= REMIND_EVERY {
                    tracing::warn!(
                        error = %detail,
                        failing_for = ?now.duration_since(c.since),
                        repeats = c.unlogged,
                        "{}: still failing",
                        self.what
                    );
                    c.logged = now;
                    c.unlogged = 0;
                }
            }
            _ => {
                tracing::warn!(error = %detail, "{}: failing", self.what);
                let since = self.current.as_ref().map_or(now, |c| c.since);
                self.current = Some(Current {
                    condition: condition.to_string(),
                    since,
                    logged: now,
                    unlogged: 0,
                });
            }
        }
    }

    /// The activity succeeded: say so once if it had been failing.
    pub fn clear(&mut self) {
        if let Some(c) = self.current.take() {
            tracing::info!(after = ?c.since.elapsed(), "{}: working again", self.what);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_condition_is_remembered_and_a_new_one_replaces_it() {
        let mut t = Trouble::new("test");
        t.report("down", "a: down");
        t.report("down", "b: down");
        assert_eq!(t.current.as_ref().unwrap().unlogged, 1);
        t.report("refused", "a: refused");
        let c = t.current.as_ref().unwrap();
        assert_eq!((c.condition.as_str(), c.unlogged), ("refused", 0));
        t.clear();
        assert!(t.current.is_none());
    }
}
