//! The one backoff: capped doubling, reset after a success. Retries of etcd (a lease's late
//! revoke among them) and restarts of the child in place all wait by it.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    next: Duration,
}

impl Backoff {
    /// Waits `base`, then twice as long each time, up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        let base = base.min(cap);
        Backoff {
            base,
            cap,
            next: base,
        }
    }

    /// The delay before the next attempt; each call doubles the following one up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = self.next.saturating_mul(2).min(self.cap);
        d
    }

    /// The backoff of every retry of an unreachable etcd: from 100 ms (quick enough that a
    /// restarting etcd is picked up at once) up to TTL/2, kept within 1 s..5 s, so a candidate
    /// notices a returning etcd within about half a TTL.
    pub fn etcd_retry(ttl: Duration) -> Backoff {
        Backoff::new(
            Duration::from_millis(100),
            (ttl / 2).clamp(Duration::from_secs(1), Duration::from_secs(5)),
        )
    }

    /// Start again from `base` (after a success).
    pub fn reset(&mut self) {
        self.next = self.base;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let got: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }
}
