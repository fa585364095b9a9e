//! `--on-exit restart`: when to restart a child in place, and when to give up leadership.

use crate::backoff::Backoff;
use crate::config::RestartPolicy;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// The first restart waits this long...
const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// ...each further one twice as long, up to this.
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// A run at least this long was healthy: the next restart waits BACKOFF_BASE again.
const HEALTHY_RUN: Duration = Duration::from_secs(10);

/// The exits of one term of leadership.
#[derive(Debug)]
pub struct Restarts {
    policy: RestartPolicy,
    exits: VecDeque<Instant>,
    backoff: Backoff,
}

impl Restarts {
    pub fn new(policy: RestartPolicy) -> Restarts {
        Restarts {
            policy,
            exits: VecDeque::new(),
            backoff: Backoff::new(BACKOFF_BASE, BACKOFF_CAP),
        }
    }

    /// The child exited at `now` after running for `ran`. Some(delay): restart after `delay`.
    /// None: `limit` exits within `window`, give leadership up.
    pub fn on_exit(&mut self, now: Instant, ran: Duration) -> Option<Duration> {
        self.exits.push_back(now);
        while self
            .exits
            .front()
            .is_some_and(|&t| now.duration_since(t) > self.policy.window)
        {
            self.exits.pop_front();
        }
        if self.exits.len() >= self.policy.limit as usize {
            return None;
        }
        if ran >= HEALTHY_RUN {
            self.backoff.reset();
        }
        Some(self.backoff.next_delay())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(limit: u32, window_s: u64) -> RestartPolicy {
        RestartPolicy {
            limit,
            window: Duration::from_secs(window_s),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets_after_a_healthy_run() {
        let mut r = Restarts::new(policy(1000, 1));
        let mut now = Instant::now();
        let quick = Duration::from_millis(10);
        let mut got = vec![];
        for _ in 0..7 {
            now += Duration::from_secs(2);
            got.push(r.on_exit(now, quick).unwrap().as_secs());
        }
        assert_eq!(got, vec![1, 2, 4, 8, 16, 30, 30]);
        now += Duration::from_secs(60);
        assert_eq!(r.on_exit(now, HEALTHY_RUN).unwrap(), BACKOFF_BASE);
    }

    #[test]
    fn too_many_exits_within_the_window_give_leadership_up() {
        let mut r = Restarts::new(policy(3, 60));
        let t0 = Instant::now();
        let quick = Duration::from_millis(10);
        assert!(r.on_exit(t0, quick).is_some());
        assert!(r.on_exit(t0 + Duration::from_secs(1), quick).is_some());
        assert!(r.on_exit(t0 + Duration::from_secs(2), quick).is_none());
    }

    #[test]
    fn exits_older_than_the_window_do_not_count() {
        let mut r = Restarts::new(policy(2, 10));
        let t0 = Instant::now();
        let quick = Duration::from_millis(10);
        assert!(r.on_exit(t0, quick).is_some());
        assert!(r.on_exit(t0 + Duration::from_secs(11), quick).is_some());
    }
}
