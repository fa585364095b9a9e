//! The supervisor's state machine (docs/DESIGN-STATES in the README):
//!
//! ```text
//!                lease granted             elected and verified
//!  Connecting ─────────────────▶ Campaigning ──────────────────▶ Leading
//!      ▲  │                          │  │                          │  │
//!      │  │ TERM/INT: exit 0         │  │ TERM/INT: withdraw,      │  │ TERM/INT: stop child,
//!      │  ▼                          │  ▼ exit 0                   │  ▼ resign, exit with its status
//!      │                             │                             │
//!      ├─── lease lost, unverified ──┘                             │
//!      └─── lease lost, key deleted: stop child; child exited ─────┘ (--on-exit recampaign)
//! ```
//!
//! Each state is one method that returns the next state. Safety rules live elsewhere, once:
//! the deadline in [`crate::timing`] and [`crate::lease`], verify-before-start in
//! [`crate::election::verify`], stop and reap in [`crate::child`].

use crate::child::{self, Child, ExitStatus, Reaper};
use crate::config::{Config, OnExit};
use crate::election::{self, Leadership};
use crate::error::{Error, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND};
use crate::etcd::{self, Backoff};
use crate::lease::{GrantError, Lease};
use crate::signals::{Request, Signals};
use crate::status::{Role, Status};
use etcd_client::Client;
use std::future::Future;
use std::pin::pin;
use std::time::Duration;
use tokio::time::{sleep, Instant};
use tracing::{debug, error, info, warn};

/// With --on-exit recampaign, a child that lived less than this is treated as crashing...
const MIN_HEALTHY_RUN: Duration = Duration::from_secs(1);
/// ...and we wait this long before campaigning again, so a crash loop does not hammer etcd.
const RECAMPAIGN_PAUSE: Duration = Duration::from_secs(1);

enum State {
    /// No lease: grant one, retrying while etcd is unreachable. Waits `after` first.
    Connecting { after: Duration },
    /// Standby: holding a lease, campaigning.
    Campaigning(Lease),
    /// Elected and verified; the child runs.
    Leading(Term),
    /// Done: exit with this status.
    Exit(u8),
}

/// One term of leadership.
struct Term {
    lease: Lease,
    leadership: Leadership,
    child: Child,
    started: Instant,
}

struct Supervisor {
    config: Config,
    client: Client,
    signals: Signals,
    reaper: Reaper,
    status: Status,
}

/// Run the supervisor until it exits; returns the exit status.
pub async fn run(config: Config, status: Status) -> Result<u8, Error> {
    // Handlers first: no signal and no child exit may be missed once a child exists.
    let signals = Signals::install().map_err(|e| Error::io("installing signal handlers", e))?;
    let reaper = Reaper::start().map_err(|e| Error::io("installing the SIGCHLD handler", e))?;
    let client = etcd::connect(&config.endpoints).await?;
    info!(
        election = %config.election,
        id = %config.id,
        endpoints = %config.endpoints.join(","),
        "starting"
    );
    let mut sup = Supervisor {
        config,
        client,
        signals,
        reaper,
        status,
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
        if until_shutdown(&mut self.signals, sleep(after))
            .await
            .is_none()
        {
            return Ok(State::Exit(0));
        }
        let mut backoff = Backoff::new(
            (self.config.ttl / 2).clamp(Duration::from_secs(1), Duration::from_secs(5)),
        );
        loop {
            let grant = Lease::grant(&self.client, self.config.ttl, self.config.stop_timeout);
            match until_shutdown(&mut self.signals, grant).await {
                None => return Ok(State::Exit(0)),
                Some(Ok(lease)) => {
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
                Some(Err(GrantError::Fatal(msg))) => return Err(Error::EtcdFatal(msg)),
                Some(Err(GrantError::Retry(msg))) => {
                    let delay = backoff.next_delay();
                    warn!(error = %msg, retry_in = ?delay, "cannot reach etcd");
                    if until_shutdown(&mut self.signals, sleep(delay))
                        .await
                        .is_none()
                    {
                        return Ok(State::Exit(0));
                    }
                }
            }
        }
    }

    async fn campaigning(&mut self, mut lease: Lease) -> Result<State, Error> {
        self.status.set(Role::Standby);
        info!(election = %self.config.election, lease = %lease.hex_id(), "standby: campaigning");
        let retry = lease.timing().keepalive / 4;
        let wait = lease.timing().request_timeout();
        // The campaign is dropped (cancelling the RPC) as soon as this block ends.
        let elected = {
            let mut campaign = pin!(election::campaign(
                &self.client,
                &self.config.election,
                &self.config.id,
                lease.id(),
                retry,
            ));
            loop {
                tokio::select! {
                    r = &mut campaign => break r,
                    loss = lease.lost() => {
                        warn!(%loss, "standby lost its lease; campaigning again with a new one");
                        lease.revoke(wait).await;
                        return Ok(State::Connecting { after: Duration::ZERO });
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
            Err(e) => {
                warn!(error = %e, "campaign lost its lease; campaigning again with a new one");
                return Ok(State::Connecting {
                    after: Duration::ZERO,
                });
            }
        };
        match election::verify(&self.client, elected, &lease).await {
            Ok(leadership) => Ok(self.start(lease, leadership).await),
            Err(why) => {
                warn!(%why, "elected but not verified; campaigning again with a new lease");
                lease.revoke(wait).await;
                Ok(State::Connecting {
                    after: Duration::ZERO,
                })
            }
        }
    }

    /// Leadership is verified: start the child.
    async fn start(&mut self, lease: Lease, leadership: Leadership) -> State {
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
        match self.reaper.spawn(&cmd) {
            Ok(child) => {
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
                State::Leading(Term {
                    lease,
                    leadership,
                    child,
                    started: Instant::now(),
                })
            }
            Err(e) => {
                error!(program = %self.config.program.display(), error = %e, "cannot start the command");
                self.release(lease, &leadership).await;
                let code = match e.kind() {
                    std::io::ErrorKind::NotFound => EXIT_NOT_FOUND,
                    _ => EXIT_NOT_EXECUTABLE,
                };
                State::Exit(code)
            }
        }
    }

    async fn leading(&mut self, term: Term) -> State {
        let Term {
            mut lease,
            leadership,
            mut child,
            started,
        } = term;
        let retry = lease.timing().keepalive / 4;
        let mut deleted = pin!(election::key_deleted(&self.client, &leadership, retry));
        loop {
            tokio::select! {
                status = child.wait() => {
                    info!(%status, "child exited");
                    self.status.set(Role::Stopping);
                    // What is left of its process group goes too, before anyone else can lead.
                    self.stop_child(&mut child, &lease).await;
                    self.release(lease, &leadership).await;
                    return match self.config.on_exit {
                        OnExit::Exit => State::Exit(status.code()),
                        OnExit::Recampaign => {
                            let after = if started.elapsed() < MIN_HEALTHY_RUN { RECAMPAIGN_PAUSE } else { Duration::ZERO };
                            State::Connecting { after }
                        }
                    };
                }
                loss = lease.lost() => {
                    warn!(%loss, key = %leadership.key, "leadership lost: stopping the child before the lease can expire");
                    self.status.set(Role::Stopping);
                    self.stop_child(&mut child, &lease).await;
                    let wait = lease.timing().request_timeout();
                    lease.revoke(wait).await;
                    return State::Connecting { after: Duration::ZERO };
                }
                _ = &mut deleted => {
                    warn!(key = %leadership.key, "leader key deleted in etcd: stopping the child");
                    self.status.set(Role::Stopping);
                    self.stop_child(&mut child, &lease).await;
                    let wait = lease.timing().request_timeout();
                    lease.revoke(wait).await;
                    return State::Connecting { after: Duration::ZERO };
                }
                req = self.signals.recv() => match req {
                    Request::Forward(sig) => {
                        debug!(signal = %sig, "passing the signal to the child's group");
                        child.signal_group(sig);
                    }
                    Request::Shutdown(sig) => {
                        info!(signal = %sig, "stopping the child, then resigning");
                        self.status.set(Role::Stopping);
                        let status = self.stop_child(&mut child, &lease).await;
                        self.release(lease, &leadership).await;
                        return State::Exit(status.code());
                    }
                },
            }
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
        let wait = lease.timing().request_timeout();
        election::resign(&self.client, leadership, wait).await;
        lease.revoke(wait).await;
        info!(key = %leadership.key, "resigned");
    }
}

/// Run `fut` unless TERM or INT comes first (None then). Signals for the child are dropped:
/// there is no child in the states that use this.
async fn until_shutdown<T>(signals: &mut Signals, fut: impl Future<Output = T>) -> Option<T> {
    let mut fut = pin!(fut);
    loop {
        tokio::select! {
            v = &mut fut => return Some(v),
            req = signals.recv() => match req {
                Request::Shutdown(sig) => {
                    info!(signal = %sig, "exiting");
                    return None;
                }
                Request::Forward(sig) => debug!(signal = %sig, "no child to pass the signal to"),
            },
        }
    }
}
