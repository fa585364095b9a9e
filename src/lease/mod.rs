//! The lease: granted once per candidacy, kept alive from before the campaign, and watched by
//! the local deadline D (see [`crate::lease::timing`]). Lost when etcd says it is gone (TTL 0) or when
//! D approaches with no acknowledged keepalive.

pub mod timing;

use crate::backoff::Backoff;
use crate::etcd::{self, EtcdError, Kind, Member};
use crate::lease::timing::{Deadline, Timing};
use crate::log::recurring::Recurring;
use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{interval_at, sleep, sleep_until, timeout_at, Instant, MissedTickBehavior};

/// Why a lease no longer protects the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// etcd reported the lease gone (expired or revoked).
    Gone,
    /// The stop time `D - m - G` arrived with no acknowledged keepalive to move D.
    DeadlineNear,
}

impl From<Loss> for crate::metrics::Reason {
    fn from(loss: Loss) -> Self {
        match loss {
            Loss::Gone => Self::LeaseExpired,
            Loss::DeadlineNear => Self::Deadline,
        }
    }
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Loss::Gone => "lease gone in etcd",
            Loss::DeadlineNear => "no acknowledged keepalive: lease deadline near",
        })
    }
}

/// How often the keepalives go: a standby's at most as often as Go's session (about T/3), a
/// leader's at T/5 (the deadline needs them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pace {
    Standby,
    Leading,
}

#[derive(Debug, Clone, Copy)]
struct State {
    deadline: Deadline,
    /// When the newest acknowledgement arrived.
    acknowledged: Instant,
    gone: bool,
}

/// The lease as its keepalive task last published it: the one copy of D that everything
/// asking "may the child run?" reads.
#[derive(Debug, Clone, Copy)]
pub struct LeaseFacts {
    pub id: i64,
    pub timing: Timing,
    /// D: the lease lives at least until then.
    pub deadline: Instant,
    /// When the newest acknowledged keepalive was answered.
    pub acknowledged: Instant,
    /// etcd said the lease is gone.
    pub gone: bool,
}

impl LeaseFacts {
    /// Whether the child may run at `now`: the lease is not known gone and the stop time
    /// `D - m - G` is ahead. The supervisor stops the child at that moment; `/leader` says 503
    /// from then on even if its answer is computed a hair before the supervisor acts.
    pub fn may_run(&self, now: Instant) -> bool {
        !self.gone && now < self.timing.stop_at(self.deadline)
    }
}

/// A reader of a lease's published state, for the status endpoint. It reads nothing once the
/// lease is dropped or its keepalives ended.
#[derive(Debug, Clone)]
pub struct LeaseView {
    id: i64,
    timing: Timing,
    state: watch::Receiver<State>,
}

impl LeaseView {
    /// The facts now, or None once nobody keeps the lease alive.
    pub fn facts(&self) -> Option<LeaseFacts> {
        self.state.has_changed().ok()?;
        Some(facts(self.id, self.timing, *self.state.borrow()))
    }
}

fn facts(id: i64, timing: Timing, state: State) -> LeaseFacts {
    LeaseFacts {
        id,
        timing,
        deadline: state.deadline.at(),
        acknowledged: state.acknowledged,
        gone: state.gone,
    }
}

/// A granted lease and the task keeping it alive. Dropping it stops the keepalives.
pub struct Lease {
    id: i64,
    timing: Timing,
    state: watch::Receiver<State>,
    keeper: JoinHandle<()>,
    pace: watch::Sender<Pace>,
}

impl Lease {
    /// Grant a lease of `ttl` and start keeping it alive through `members` (one client per
    /// endpoint, tried in turn). The timing is derived from the TTL etcd granted (it raises
    /// values below its minimum), with the user's stop timeout if set.
    pub async fn grant(
        client: &Client,
        members: &[Member],
        ttl: Duration,
        stop_timeout: Option<Duration>,
        hook_timeout: Duration,
    ) -> Result<Lease, EtcdError> {
        let unexpected = |detail: String| EtcdError::Unexpected {
            what: "lease grant",
            detail,
        };
        let requested = Timing::with_hook(ttl, stop_timeout, hook_timeout)
            .map_err(|e| unexpected(e.to_string()))?;
        let sent = Instant::now();
        let secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        let grant = |mut c: Client| async move { c.lease_grant(secs, None).await };
        let resp = etcd::call_as("lease grant", requested.request_timeout(), client, grant).await?;
        // The granted TTL, never the requested one: it is what the server enforces.
        let granted = Duration::from_secs(resp.ttl().max(0) as u64);
        let timing = Timing::with_hook(granted, stop_timeout, hook_timeout)
            .map_err(|e| unexpected(format!("granted TTL {}s: {e}", resp.ttl())))?;
        let (tx, rx) = watch::channel(State {
            deadline: Deadline::acknowledged(sent, timing.ttl),
            acknowledged: Instant::now(),
            gone: false,
        });
        let (pace, paced) = watch::channel(Pace::Standby);
        let keeper = tokio::spawn(keep_alive(members.to_vec(), resp.id(), timing, tx, paced));
        Ok(Lease {
            id: resp.id(),
            timing,
            state: rx,
            keeper,
            pace,
        })
    }

    pub fn id(&self) -> i64 {
        self.id
    }

    /// The id as etcdctl prints and reads it.
    pub fn hex_id(&self) -> String {
        format!("{:x}", self.id)
    }

    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    /// D: the lease is known to live until then.
    pub fn deadline(&self) -> Instant {
        self.state.borrow().deadline.at()
    }

    /// The latest moment the child may still live: `D - m`.
    pub fn kill_at(&self) -> Instant {
        self.timing.kill_at(self.deadline())
    }

    /// Elected: keepalives at the leader's pace from now on, the first one at once, so that the
    /// deadline is as fresh as a leader's one round trip after the start.
    pub fn lead(&self) {
        self.pace
            .send_if_modified(|p| std::mem::replace(p, Pace::Leading) != Pace::Leading);
    }

    /// Whether a child may start now: the stop time `D - m - G` is still ahead.
    pub fn may_start(&self) -> bool {
        facts(self.id, self.timing, *self.state.borrow()).may_run(Instant::now())
    }

    /// Whether etcd reported the lease gone.
    pub fn is_gone(&self) -> bool {
        self.state.borrow().gone
    }

    /// A reader of this lease's state for the status endpoint.
    pub fn view(&self) -> LeaseView {
        LeaseView {
            id: self.id,
            timing: self.timing,
            state: self.state.clone(),
        }
    }

    /// Resolves when the lease stops protecting the child: at the stop time `D - m - G` while
    /// leading. A standby has no child to stop in time: its lease is lost only at D itself,
    /// when it may really have expired. Cancel-safe.
    pub async fn lost(&mut self) -> Loss {
        loop {
            let state = *self.state.borrow_and_update();
            if state.gone {
                return Loss::Gone;
            }
            let at = match *self.pace.borrow() {
                Pace::Leading => self.timing.stop_at(state.deadline.at()),
                Pace::Standby => state.deadline.at(),
            };
            tokio::select! {
                _ = sleep_until(at) => return Loss::DeadlineNear,
                changed = self.state.changed() => if changed.is_err() { return Loss::Gone },
            }
        }
    }

    /// Stop the keepalives and revoke the lease, deleting its keys. Only ever called once the
    /// lease protects no child (the end path, a candidacy given up). If etcd cannot be reached
    /// within `wait`, a task of its own tries again until etcd answers (see [`revoke_later`]).
    /// Through `call_as`: a token that expired while only keepalives flowed is refreshed.
    pub async fn revoke(self, client: &Client, wait: Duration) {
        self.keeper.abort();
        let id = self.id;
        match revoke_once(client, id, wait).await {
            Ok(()) => tracing::debug!(lease = %self.hex_id(), "lease revoked"),
            Err(e) if e.kind() == Kind::Fatal => {
                tracing::warn!(lease = %self.hex_id(), error = %e, "it will expire")
            }
            Err(e) => {
                tracing::warn!(lease = %self.hex_id(), error = %e, "revoking it again once etcd answers (else it expires)");
                tokio::spawn(revoke_later(client.clone(), id, self.hex_id(), wait));
            }
        }
    }
}

/// One revoke of lease `id`; a lease etcd no longer knows counts as revoked.
async fn revoke_once(client: &Client, id: i64, wait: Duration) -> Result<(), EtcdError> {
    let revoke = |mut c: Client| async move { c.lease_revoke(id).await };
    match etcd::call_as("lease revoke", wait, client, revoke).await {
        Err(e) if e.kind() == Kind::LeaseGone => Ok(()),
        done => done.map(drop),
    }
}

/// How long a lease given up during an outage is tried again: etcd gives every lease a whole
/// TTL again when it comes back (a new raft leader renews them all), so until then the lease's
/// key holds up the election's line; an outage longer than this ends with the key expiring a
/// TTL after etcd's return.
const REVOKE_LATER_FOR: Duration = Duration::from_secs(600);

/// Revoke lease `id` once etcd answers again: after an outage every candidate begins anew with
/// a new lease and key, and the old keys (the old leader's first) would stand ahead of the new
/// ones for a whole TTL after etcd's return. Tries for at most REVOKE_LATER_FOR; logs only the outcome.
async fn revoke_later(client: Client, id: i64, hex: String, wait: Duration) {
    // At most a second apart: each try is one small request (a refused connection while etcd
    // is down), and the key stands in the line until it lands.
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    let until = Instant::now() + REVOKE_LATER_FOR;
    while Instant::now() < until {
        sleep(backoff.next_delay()).await;
        match revoke_once(&client, id, wait).await {
            Ok(()) => {
                tracing::info!(lease = %hex, "lease given up during the outage revoked");
                return;
            }
            Err(e) if e.kind() == Kind::Fatal => break,
            Err(_) => {}
        }
    }
    tracing::warn!(lease = %hex, "could not revoke it: it expires by itself");
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// Send a keepalive every k and move D on every acknowledgement, matching each response to the
/// send time of the request it answers (responses come in order). A stream that fails, ends, or
/// leaves a request unanswered for a whole interval is re-established on the next member; its
/// unanswered requests never move D.
async fn keep_alive(
    mut members: Vec<Member>,
    id: i64,
    timing: Timing,
    tx: watch::Sender<State>,
    mut pace: watch::Receiver<Pace>,
) {
    let period = |pace: &watch::Receiver<Pace>| match *pace.borrow() {
        Pace::Standby => timing.standby_keepalive,
        Pace::Leading => timing.keepalive,
    };
    let acknowledged = |sent: Instant| {
        let now = Instant::now();
        tx.send_if_modified(|s| {
            s.acknowledged = now;
            s.deadline.extend(sent, timing.ttl)
        });
        crate::metrics::keepalive_acknowledged(now.saturating_duration_since(sent));
    };
    let gone = || {
        tracing::warn!(lease = %format!("{id:x}"), "etcd reports the lease gone");
        tx.send_modify(|s| s.gone = true);
    };
    let mut trouble = Recurring::new("keepalive");
    // Start on a member that depends on the lease, so candidates spread over the cluster.
    let mut next = id.unsigned_abs() as usize;
    loop {
        let n = members.len();
        let member = &mut members[next % n];
        next += 1;
        let endpoint = member.endpoint.clone();
        // Opening the stream sends one keepalive and waits for its answer.
        let sent = Instant::now();
        let (mut keeper, mut stream) = match open(member, id, timing.request_timeout()).await {
            Ok(pair) => {
                acknowledged(sent);
                pair
            }
            Err(e) if e.kind() == Kind::LeaseGone => return gone(),
            Err(e) => {
                // A new connection next time, with the TLS files as they are then.
                member.reset();
                trouble.report(format_args!("{endpoint}: {e}"));
                if !matches!(e, EtcdError::TimedOut { .. }) {
                    sleep(timing.keepalive / 4).await;
                }
                continue;
            }
        };
        let mut inflight: VecDeque<Instant> = VecDeque::new();
        let every = period(&pace);
        let mut tick = interval_at(Instant::now() + every, every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let broken = loop {
            tokio::select! {
                // Elected: one now (unless one is on its way), then every k.
                Ok(()) = pace.changed() => {
                    let every = period(&pace);
                    tick = interval_at(Instant::now() + every, every);
                    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                    if inflight.is_empty() {
                        inflight.push_back(Instant::now());
                        if keeper.keep_alive().await.is_err() {
                            break "keepalive stream closed".to_string();
                        }
                    }
                }
                // A request unanswered for k (the leader's interval, whatever the pace): the
                // stream is stuck on a member that hangs; the next member gets the next one.
                // At a standby's sparser pace the tick alone would notice too late.
                _ = sleep_until(inflight.front().map_or_else(Instant::now, |s| *s + timing.keepalive)), if !inflight.is_empty() => {
                    break "keepalive unanswered for a whole interval".to_string();
                }
                _ = tick.tick() => {
                    // Requests go out on these ticks; one still unanswered now has had a whole
                    // interval (its stamp is a hair after the previous tick, so no age test).
                    if !inflight.is_empty() {
                        break "keepalive unanswered for a whole interval".to_string();
                    }
                    inflight.push_back(Instant::now());
                    if keeper.keep_alive().await.is_err() {
                        break "keepalive stream closed".to_string();
                    }
                }
                msg = stream.message() => match msg {
                    Ok(Some(resp)) => {
                        let sent = inflight.pop_front();
                        if resp.ttl() <= 0 {
                            return gone();
                        }
                        if let Some(sent) = sent {
                            acknowledged(sent);
                            trouble.clear();
                        }
                    }
                    Ok(None) => break "keepalive stream ended".to_string(),
                    Err(e) => break format!("keepalive stream failed: {}", crate::etcd::cause(&e)),
                },
            }
        };
        crate::metrics::etcd_error("keepalive_stream");
        trouble.report(format_args!(
            "{endpoint}: {broken}; moving to the next member"
        ));
    }
}

/// Open the keepalive stream on `member` within `wait` (an expired token is refreshed and the
/// stream opened once more, as for any call).
async fn open(
    member: &mut Member,
    id: i64,
    wait: Duration,
) -> Result<(LeaseKeeper, LeaseKeepAliveStream), EtcdError> {
    let deadline = Instant::now() + wait;
    let client = match timeout_at(deadline, member.client()).await {
        Ok(client) => client?,
        Err(_) => {
            return Err(EtcdError::TimedOut {
                what: "connecting",
                after: wait,
            })
        }
    };
    let left = deadline.saturating_duration_since(Instant::now());
    let open = |mut c: Client| async move { c.lease_keep_alive(id).await };
    etcd::call_as("keepalive stream", left, client, open).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lease whose keepalive task is the test: it moves D through the returned sender.
    fn fake(ttl: Duration) -> (Lease, watch::Sender<State>) {
        let timing = Timing::new(ttl, None).unwrap();
        let now = Instant::now();
        let (tx, rx) = watch::channel(State {
            deadline: Deadline::acknowledged(now, timing.ttl),
            acknowledged: now,
            gone: false,
        });
        let (pace, _) = watch::channel(Pace::Standby);
        let lease = Lease {
            id: 7,
            timing,
            state: rx,
            keeper: tokio::spawn(std::future::pending()),
            pace,
        };
        (lease, tx)
    }

    /// What the keepalive loop does on an acknowledgement of a request sent at `sent`.
    fn acknowledge(tx: &watch::Sender<State>, sent: Instant, ttl: Duration) {
        tx.send_if_modified(|s| {
            s.acknowledged = Instant::now();
            s.deadline.extend(sent, ttl)
        });
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_loses_at_the_stop_time_and_acknowledgements_move_it() {
        let (mut lease, tx) = fake(Duration::from_secs(10));
        lease.lead();
        let t = *lease.timing();
        let t0 = Instant::now();
        assert!(lease.may_start());
        // Acknowledged at 2 s for a request sent at 1 s: D moves to 11 s, the stop to 7 s.
        let ack = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            acknowledge(&tx, t0 + Duration::from_secs(1), t.ttl);
            tx
        });
        assert_eq!(lease.lost().await, Loss::DeadlineNear);
        let stop = t.stop_at(t0 + Duration::from_secs(11));
        assert_eq!(Instant::now(), stop);
        assert!(!lease.may_start());
        // An older acknowledgement never moves D back.
        let tx = ack.await.unwrap();
        acknowledge(&tx, t0, t.ttl);
        assert_eq!(lease.deadline(), t0 + Duration::from_secs(11));
    }

    #[tokio::test(start_paused = true)]
    async fn a_standby_loses_only_at_the_deadline_itself() {
        let (mut lease, _tx) = fake(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(lease.lost().await, Loss::DeadlineNear);
        assert_eq!(Instant::now(), t0 + Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_reported_gone_is_lost_at_once_and_the_view_follows_it() {
        let (mut lease, tx) = fake(Duration::from_secs(10));
        lease.lead();
        let view = lease.view();
        assert!(view.facts().unwrap().may_run(Instant::now()));
        tx.send_modify(|s| s.gone = true);
        let t0 = Instant::now();
        assert_eq!(lease.lost().await, Loss::Gone);
        assert_eq!(Instant::now(), t0);
        assert!(!lease.may_start());
        assert!(!view.facts().unwrap().may_run(Instant::now()));
        // Nobody keeps it alive any more: the view reads nothing.
        drop(tx);
        assert!(view.facts().is_none());
    }
}
