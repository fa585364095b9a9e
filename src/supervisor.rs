//! The supervisor's state machine (the diagram in the README):
//!
//! ```text
//!                lease granted             elected
//!  Connecting ─────────────────▶ Campaigning ─────────▶ start: verify, claim run, spawn ──▶ Leading
//!      ▲  │                          │  │                                                  │  │
//!      │  │ TERM/INT: exit 0         │  │ TERM/INT: withdraw, exit 0                       │  │ TERM/INT: stop child,
//!      │  │ wait timeout: exit 75    │  │ wait timeout / --no-wait: exit 75                │  ▼ resign, exit with its status
//!      │  ▼                          │  ▼                                                  │
//!      ├─── lease lost, unverified ──┘                                                     │ child exited: restart in place
//!      └─── lease lost, key deleted: stop child; child exited (recampaign, restart limit) ──┘ (--on-exit restart)
//! ```
//!
//! Each state is one method that returns the next state. Safety rules live elsewhere, once:
//! the deadline in [`crate::timing`] and [`crate::lease`], verify-before-start in
//! [`crate::election::verify`] (called only from [`Supervisor::start`]), stop and reap in
//! [`crate::child`].

use crate::child::{self, Child, ExitStatus, Reaper};
use crate::config::{Config, OnExit};
use crate::election::{self, Leadership};
use crate::error::{Error, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, EXIT_NOT_LEADING};
use crate::etcd::{self, Backoff};
use crate::guardian::Guardian;
use crate::job::{self, Claim};
use crate::lease::{GrantError, Lease};
use crate::restart::Restarts;
use crate::signals::{Request, Signals};
use crate::status::{Role, Status};
use etcd_client::{Client, LeaderKey};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep, sleep_until, Instant};
use tracing::{debug, error, info, warn};

/// With --on-exit recampaign, a child that lived less than this is treated as crashing...
const MIN_HEALTHY_RUN: Duration = Duration::from_secs(1);
/// ...and we wait this long before campaigning again, so a crash loop does not hammer etcd.
const RECAMPAIGN_PAUSE: Duration = Duration::from_secs(1);

// One value at a time, moved once per transition: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum State {
    /// No lease: grant one, retrying while etcd is unreachable. Waits `after` first.
    Connecting { after: Duration },
    /// Standby: holding a lease, campaigning.
    Campaigning(Lease),
    /// Elected and verified; the child runs, or waits to be restarted in place.
    Leading(Term),
    /// Done: exit with this status.
    Exit(u8),
}

/// One term of leadership.
struct Term {
    lease: Lease,
    leadership: Leadership,
    /// None while waiting to restart it (--on-exit restart).
    child: Option<Child>,
    started: Instant,
    /// When to restart the child, while it is None.
    restart_at: Instant,
    last_status: Option<ExitStatus>,
    restarts: Restarts,
}

/// Why a start did not happen.
enum NotStarted {
    /// The election result did not hold up, or the run record could not be checked.
    Unverified(String),
    /// --run-id: somebody ran it already.
    RunTaken(String),
    /// The command could not be spawned: exit with this status.
    Spawn(u8),
}

struct Supervisor {
    config: Config,
    client: Client,
    /// One client per endpoint, for the lease's keepalive stream.
    members: Vec<Client>,
    signals: Signals,
    reaper: Reaper,
    status: Status,
    /// The moment a waiting candidate gives up (--wait-timeout).
    give_up_at: Option<Instant>,
    /// --run-id: the run is claimed once; restarts in place are the same run.
    run_claimed: bool,
}

/// Run the supervisor until it exits; returns the exit status.
pub async fn run(
    config: Config,
    status: Status,
    guardian: Option<Arc<Guardian>>,
) -> Result<u8, Error> {
    // Handlers first: no signal and no child exit may be missed once a child exists.
    let signals = Signals::install().map_err(|e| Error::io("installing signal handlers", e))?;
    let reaper =
        Reaper::start(guardian).map_err(|e| Error::io("installing the SIGCHLD handler", e))?;
    let pid1 = child::adopt_orphans().map_err(|e| Error::io("becoming a child subreaper", e))?;
    let client = etcd::connect(&config.endpoints).await?;
    let members = etcd::connect_each(&config.endpoints).await?;
    info!(
        election = %config.election,
        id = %config.id,
        endpoints = %config.endpoints.join(","),
        pid1,
        "starting"
    );
    let give_up_at = config.wait_timeout.map(|d| Instant::now() + d);
    let mut sup = Supervisor {
        config,
        client,
        members,
        signals,
        reaper,
        status,
        give_up_at,
        run_claimed: false,
    };
    let mut state = State::Connecting {
        after: Duration::ZERO,
    };
    loop {
        state = match state {
            State::Connecting { after } => sup.connecting(after).await?,
            State::Campaigning(lease) => sup.campaigning(lease).await?,
            State::Leading(term) => sup.leading(term).await,
            State::Exit(code) => return Ok(code),
        };
    }
}

impl Supervisor {
    async fn connecting(&mut self, after: Duration) -> Result<State, Error> {
        self.status.set(Role::Connecting);
        let mut give_up = pin!(give_up(self.give_up_at));
        match until_shutdown(&mut self.signals, &mut give_up, sleep(after)).await {
            Waited::Done(()) => {}
            Waited::Shutdown => return Ok(State::Exit(0)),
            Waited::GaveUp => return Ok(State::Exit(EXIT_NOT_LEADING)),
        }
        let mut backoff = Backoff::new(
            (self.config.ttl / 2).clamp(Duration::from_secs(1), Duration::from_secs(5)),
        );
        loop {
            let grant = Lease::grant(
                &self.client,
                &self.members,
                self.config.ttl,
                self.config.stop_timeout,
            );
            let granted = match until_shutdown(&mut self.signals, &mut give_up, grant).await {
                Waited::Done(r) => r,
                Waited::Shutdown => return Ok(State::Exit(0)),
                Waited::GaveUp => return Ok(State::Exit(EXIT_NOT_LEADING)),
            };
            match granted {
                Ok(lease) => {
                    let t = lease.timing();
                    info!(
                        lease = %lease.hex_id(),
                        ttl = ?t.ttl,
                        keepalive = ?t.keepalive,
                        stop_timeout = ?t.stop_timeout,
                        margin = ?t.margin,
                        "lease granted"
                    );
                    return Ok(State::Campaigning(lease));
                }
                Err(GrantError::Fatal(msg)) => return Err(Error::EtcdFatal(msg)),
                Err(GrantError::Retry(msg)) => {
                    let delay = backoff.next_delay();
                    warn!(error = %msg, retry_in = ?delay, "cannot reach etcd");
                    match until_shutdown(&mut self.signals, &mut give_up, sleep(delay)).await {
                        Waited::Done(()) => {}
                        Waited::Shutdown => return Ok(State::Exit(0)),
                        Waited::GaveUp => return Ok(State::Exit(EXIT_NOT_LEADING)),
                    }
                }
            }
        }
    }

    async fn campaigning(&mut self, mut lease: Lease) -> Result<State, Error> {
        self.status.set(Role::Standby);
        let wait = lease.timing().request_timeout();
        let no_wait = self.config.no_wait;
        if no_wait {
            if let Some(leader) = self.someone_else_leads(wait).await {
                info!(leader = %leader, "another candidate leads: not waiting (--no-wait)");
                lease.revoke(wait).await;
                return Ok(State::Exit(EXIT_NOT_LEADING));
            }
        }
        info!(election = %self.config.election, lease = %lease.hex_id(), "standby: campaigning");
        let retry = lease.timing().keepalive / 4;
        // The campaign is dropped (cancelling the RPC) as soon as this block ends.
        let elected = {
            let mut campaign = pin!(election::campaign(
                &self.client,
                &self.config.election,
                &self.config.id,
                lease.id(),
            ));
            let mut give_up = pin!(give_up(self.give_up_at));
            // --no-wait: nobody led a moment ago, but a candidate that started with us may be
            // ahead. The key is `NAME/<lease hex>`, as the server's campaign makes it.
            let ours = format!("{}/{}", self.config.election, lease.hex_id());
            let mut deleted = pin!(election::candidate_key_deleted(
                &self.client,
                ours.as_bytes(),
                retry
            ));
            let mut behind = pin!(behind_another(
                &self.client,
                &self.config.election,
                ours.clone(),
                wait
            ));
            loop {
                tokio::select! {
                    r = &mut campaign => break r,
                    _ = &mut deleted => {
                        warn!(key = %ours, "our candidate key was deleted while waiting; campaigning again with a new lease");
                        lease.revoke(wait).await;
                        return Ok(State::Connecting { after: Duration::ZERO });
                    }
                    _ = &mut behind, if no_wait => {
                        info!("another candidate is ahead: not waiting (--no-wait)");
                        lease.revoke(wait).await;
                        return Ok(State::Exit(EXIT_NOT_LEADING));
                    }
                    loss = lease.lost() => {
                        warn!(%loss, "standby lost its lease; campaigning again with a new one");
                        lease.revoke(wait).await;
                        return Ok(State::Connecting { after: Duration::ZERO });
                    }
                    _ = &mut give_up => {
                        info!("not leading in time: giving up");
                        lease.revoke(wait).await;
                        return Ok(State::Exit(EXIT_NOT_LEADING));
                    }
                    req = self.signals.recv() => match req {
                        Request::Shutdown(sig) => {
                            info!(signal = %sig, "withdrawing from the election");
                            lease.revoke(wait).await;
                            return Ok(State::Exit(0));
                        }
                        Request::Forward(sig) => debug!(signal = %sig, "standby: no child to pass the signal to"),
                    },
                }
            }
        };
        let elected = match elected {
            Ok(key) => key,
            Err(e) if etcd::is_fatal(&e) => {
                lease.revoke(wait).await;
                return Err(Error::EtcdFatal(e.to_string()));
            }
            Err(e) if etcd::never_sent(&e) => {
                // It reached no member: nothing can act on it later, the lease stays clean.
                warn!(error = %e, "campaign could not reach etcd; retrying");
                sleep(retry).await;
                return Ok(State::Campaigning(lease));
            }
            Err(e) => {
                // One campaign per lease (election::campaign says why).
                warn!(error = %e, "campaign failed; campaigning again with a new lease");
                lease.revoke(wait).await;
                return Ok(State::Connecting { after: retry });
            }
        };
        match self.start(&lease, &elected).await {
            Ok((leadership, child)) => Ok(State::Leading(Term {
                lease,
                leadership,
                child: Some(child),
                started: Instant::now(),
                restart_at: Instant::now(),
                last_status: None,
                restarts: Restarts::new(self.config.restart),
            })),
            Err(NotStarted::Unverified(why)) => {
                warn!(%why, "elected but not verified; campaigning again with a new lease");
                lease.revoke(wait).await;
                Ok(State::Connecting {
                    after: Duration::ZERO,
                })
            }
            Err(NotStarted::RunTaken(by)) => {
                let run_id = self.config.run_id.as_ref().map_or("", |r| r.id.as_str());
                info!(run_id, ran = %by, "this run is done already: not running it");
                self.release_key(lease, &elected).await;
                Ok(State::Exit(0))
            }
            Err(NotStarted::Spawn(code)) => {
                self.release_key(lease, &elected).await;
                Ok(State::Exit(code))
            }
        }
    }

    /// --no-wait: the id of the first candidate when it is not us (the lease is ours only).
    async fn someone_else_leads(&self, wait: Duration) -> Option<String> {
        match election::first_candidate(&self.client, &self.config.election, wait).await {
            Ok((Some(kv), _)) => Some(String::from_utf8_lossy(kv.value()).into_owned()),
            Ok((None, _)) => None,
            Err(e) => {
                warn!(error = %e, "cannot tell who leads; campaigning");
                None
            }
        }
    }

    /// Every start of the child: verify leadership, claim the run (--run-id), spawn.
    async fn start(
        &mut self,
        lease: &Lease,
        elected: &LeaderKey,
    ) -> Result<(Leadership, Child), NotStarted> {
        let leadership = election::verify(&self.client, elected, lease)
            .await
            .map_err(|e| NotStarted::Unverified(e.to_string()))?;
        if let (Some(run), false) = (&self.config.run_id, self.run_claimed) {
            let wait = lease.timing().request_timeout();
            let claim = job::claim(
                &self.client,
                &self.config.election,
                &self.config.id,
                &leadership,
                run,
                wait,
            );
            match claim.await {
                Ok(Claim::Claimed) => {
                    info!(run_id = %run.id, "run recorded");
                    self.run_claimed = true;
                    // The claim took round trips of its own: the deadline must still allow a start.
                    if !lease.may_start() {
                        return Err(NotStarted::Unverified(
                            "the lease deadline came too near while recording the run".into(),
                        ));
                    }
                }
                Ok(Claim::Taken(by)) => return Err(NotStarted::RunTaken(by)),
                Ok(Claim::NotLeader) => {
                    return Err(NotStarted::Unverified("leader key changed".into()))
                }
                Err(e) => return Err(NotStarted::Unverified(e)),
            }
        }
        let cmd = child::Command {
            program: self.config.program.clone(),
            args: self.config.args.clone(),
            env: vec![
                ("LEADERRUN_ELECTION".into(), self.config.election.clone()),
                ("LEADERRUN_ID".into(), self.config.id.clone()),
                ("LEADERRUN_KEY".into(), leadership.key.clone()),
                ("LEADERRUN_REVISION".into(), leadership.revision.to_string()),
                ("LEADERRUN_LEASE".into(), lease.hex_id()),
            ],
        };
        let child = self.reaper.spawn(&cmd).map_err(|e| {
            error!(program = %self.config.program.display(), error = %e, "cannot start the command");
            NotStarted::Spawn(match e.kind() {
                std::io::ErrorKind::NotFound => EXIT_NOT_FOUND,
                _ => EXIT_NOT_EXECUTABLE,
            })
        })?;
        info!(
            key = %leadership.key,
            revision = leadership.revision,
            pid = child.pid(),
            "leading: child started"
        );
        self.status.set(Role::Leading {
            key: leadership.key.clone(),
            revision: leadership.revision,
            pid: child.pid(),
        });
        Ok((leadership, child))
    }

    async fn leading(&mut self, mut term: Term) -> State {
        let retry = term.lease.timing().keepalive / 4;
        let leadership = term.leadership.clone();
        let client = self.client.clone();
        let mut deleted = pin!(election::key_deleted(&client, &leadership, retry));
        loop {
            let running = term.child.is_some();
            tokio::select! {
                status = wait_child(&mut term.child), if running => {
                    if let Some(next) = self.child_exited(&mut term, status).await {
                        self.release(term.lease, &leadership).await;
                        return next;
                    }
                }
                _ = sleep_until(term.restart_at), if !running => {
                    match self.start(&term.lease, leadership.leader_key()).await {
                        Ok((_, child)) => {
                            term.child = Some(child);
                            term.started = Instant::now();
                        }
                        Err(NotStarted::Spawn(code)) => {
                            self.release(term.lease, &leadership).await;
                            return State::Exit(code);
                        }
                        Err(NotStarted::Unverified(why) | NotStarted::RunTaken(why)) => {
                            warn!(%why, "leadership not verified for the restart; campaigning again");
                            let wait = term.lease.timing().request_timeout();
                            term.lease.revoke(wait).await;
                            return State::Connecting { after: Duration::ZERO };
                        }
                    }
                }
                loss = term.lease.lost() => {
                    warn!(%loss, key = %leadership.key, "leadership lost: stopping the child before the lease can expire");
                    return self.lost(term).await;
                }
                _ = &mut deleted => {
                    warn!(key = %leadership.key, "leader key deleted in etcd: stopping the child");
                    return self.lost(term).await;
                }
                req = self.signals.recv() => match req {
                    Request::Forward(sig) => match &term.child {
                        Some(child) => {
                            debug!(signal = %sig, "passing the signal to the child's group");
                            child.signal_group(sig);
                        }
                        None => debug!(signal = %sig, "no child to pass the signal to"),
                    },
                    Request::Shutdown(sig) => {
                        info!(signal = %sig, "stopping the child, then resigning");
                        self.status.set(Role::Stopping);
                        let status = match term.child.as_mut() {
                            Some(child) => Some(self.stop_child(child, &term.lease).await),
                            None => term.last_status,
                        };
                        self.release(term.lease, &leadership).await;
                        return State::Exit(status.map_or(0, ExitStatus::code));
                    }
                },
            }
        }
    }

    /// The child exited on its own. None: it will be restarted in place; Some: the next state,
    /// after the caller released leadership.
    async fn child_exited(&mut self, term: &mut Term, status: ExitStatus) -> Option<State> {
        info!(%status, "child exited");
        let mut child = term.child.take()?;
        term.last_status = Some(status);
        let ran = term.started.elapsed();
        // What is left of its process group goes too, before anyone else can lead.
        self.stop_child(&mut child, &term.lease).await;
        if self.config.on_exit == OnExit::Restart {
            match term.restarts.on_exit(Instant::now(), ran) {
                Some(delay) => {
                    info!(retry_in = ?delay, "restarting the child in place");
                    term.restart_at = Instant::now() + delay;
                    return None;
                }
                None => warn!(
                    limit = self.config.restart.limit,
                    window = ?self.config.restart.window,
                    "too many exits: giving leadership up"
                ),
            }
        }
        self.status.set(Role::Stopping);
        Some(match self.config.on_exit {
            OnExit::Exit => State::Exit(status.code()),
            OnExit::Recampaign if ran >= MIN_HEALTHY_RUN => State::Connecting {
                after: Duration::ZERO,
            },
            OnExit::Recampaign | OnExit::Restart => State::Connecting {
                after: RECAMPAIGN_PAUSE,
            },
        })
    }

    /// Leadership is gone (lease or key): stop the child by the deadline, drop the lease.
    async fn lost(&mut self, mut term: Term) -> State {
        self.status.set(Role::Stopping);
        if let Some(child) = term.child.as_mut() {
            self.stop_child(child, &term.lease).await;
        }
        let wait = term.lease.timing().request_timeout();
        term.lease.revoke(wait).await;
        State::Connecting {
            after: Duration::ZERO,
        }
    }

    /// Stop the child within its stop timeout, and in any case by `D - m`.
    async fn stop_child(&self, child: &mut Child, lease: &Lease) -> ExitStatus {
        let kill_at = (Instant::now() + lease.timing().stop_timeout).min(lease.kill_at());
        child.stop(self.config.stop_signal, kill_at).await
    }

    /// Give up leadership after the child is gone: resign (the next candidate wins at once),
    /// then revoke the lease.
    async fn release(&self, lease: Lease, leadership: &Leadership) {
        self.release_key(lease, leadership.leader_key()).await;
        info!(key = %leadership.key, "resigned");
    }

    async fn release_key(&self, lease: Lease, key: &LeaderKey) {
        let wait = lease.timing().request_timeout();
        election::resign(&self.client, key, wait).await;
        lease.revoke(wait).await;
    }
}

async fn wait_child(child: &mut Option<Child>) -> ExitStatus {
    match child {
        Some(c) => c.wait().await,
        None => std::future::pending().await,
    }
}

/// How often a --no-wait candidate looks whether its own key has appeared yet.
const OWN_KEY_POLL: Duration = Duration::from_millis(10);

/// --no-wait: resolves when the first key under the prefix is not `ours`, once ours exists (or
/// when that cannot be told within `wait`: not knowing counts as not first). Never resolves when
/// ours is first: the campaign wins then.
async fn behind_another(client: &Client, election: &str, ours: String, wait: Duration) {
    let until = Instant::now() + wait;
    while Instant::now() < until {
        match election::first_candidate(client, election, wait).await {
            Ok((Some(first), _)) if first.key() == ours.as_bytes() => {
                return std::future::pending().await
            }
            Ok((Some(_), _)) => return,
            // Our campaign's key is not written yet.
            Ok((None, _)) | Err(_) => sleep(OWN_KEY_POLL).await,
        }
    }
}

/// Resolves at `at`, never when None.
async fn give_up(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

enum Waited<T> {
    Done(T),
    Shutdown,
    GaveUp,
}

/// Run `fut` unless TERM/INT or the give-up time comes first. Signals for the child are
/// dropped: there is no child in the states that use this.
async fn until_shutdown<T>(
    signals: &mut Signals,
    give_up: &mut (impl Future<Output = ()> + Unpin),
    fut: impl Future<Output = T>,
) -> Waited<T> {
    let mut fut = pin!(fut);
    loop {
        tokio::select! {
            v = &mut fut => return Waited::Done(v),
            _ = &mut *give_up => {
                info!("not leading in time: giving up");
                return Waited::GaveUp;
            }
            req = signals.recv() => match req {
                Request::Shutdown(sig) => {
                    info!(signal = %sig, "exiting");
                    return Waited::Shutdown;
                }
                Request::Forward(sig) => debug!(signal = %sig, "no child to pass the signal to"),
            },
        }
    }
}
