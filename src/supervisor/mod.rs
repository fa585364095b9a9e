//! The supervisor's state machine (the diagram in docs/how-it-works.md):
//!
//! ```text
//!              lease granted               elected: start gate
//! Connecting ───────────────▶ Campaigning ─────────────────────▶ Leading ◀──┐ child exited:
//!   ▲   │                       │   │                              │   │  │   restart in place
//!   │   │ TERM/INT: exit 0      │   │ TERM/INT: withdraw, exit 0   │   │  └───(--on-exit restart)
//!   │   │ wait timeout: 75      │   │ wait timeout, --no-wait: 75  │   │
//!   │   ▼                       │   ▼                              │   ▼ lease lost, key deleted,
//!   ├──── lease lost, unverified ──┘                               │     child exited, TERM/INT
//!   │                                                              ▼
//!   └──────────────────── campaign again ◀────────────── Stopping: end path ──▶ exit
//! ```
//!
//! Each state waits for its next event and dispatches it, returning the next state; the role
//! published on the status channel is derived from the state, in one place ([`run`]). The
//! safety rules live elsewhere, once: the deadline in [`crate::lease::timing`] and [`crate::lease`],
//! the start gate (verify before start) and the end path (stop before release) in
//! [`crate::supervisor::tenure`], stop and reap in [`crate::process::child`].

pub mod restart;
pub mod tenure;

use crate::backoff::Backoff;
use crate::config::{Config, OnExit};
use crate::election::history;
use crate::election::holders::{self, Refused};
use crate::election::priority::{self, Published};
use crate::election::step_down;
use crate::election::{self, Candidate};
use crate::error::{Error, EXIT_NOT_LEADING};
use crate::etcd::{self, EtcdError, Kind, Member};
use crate::lease::timing;
use crate::lease::Lease;
use crate::log::escape_controls;
use crate::log::recurring::Recurring;
use crate::metrics::{self, Reason};
use crate::process::child::{self, ExitStatus};
use crate::process::guardian::Guardian;
use crate::process::signals::{Request, Signals};
use crate::process::{health, hook};
use crate::status::{HealthReporter, Role, Status};
use crate::supervisor::restart::Restarts;
use etcd_client::Client;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;
use tenure::{Candidacy, Gate, NotStarted, Run, Tenure};
use tokio::time::{sleep, sleep_until, Instant};
use tracing::{debug, info, warn};

/// With --on-exit recampaign, a child that lived less than this is treated as crashing...
const MIN_HEALTHY_RUN: Duration = Duration::from_secs(1);
/// ...and we wait this long before campaigning again, so a crash loop does not hammer etcd.
const RECAMPAIGN_PAUSE: Duration = Duration::from_secs(1);

// One value at a time, moved once per transition: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum State {
    /// No lease: grant one, retrying while etcd is unreachable. Waits `after` first.
    Connecting { after: Duration },
    /// Standby: holding a lease, campaigning (after waiting `after`).
    Campaigning {
        candidacy: Candidacy,
        after: Duration,
    },
    /// Elected and verified; the child runs, or waits to be restarted in place.
    Leading(Tenure),
    /// Leadership is ending: the end path, then what `end` says.
    Stopping { term: Tenure, end: End },
    /// Done: exit with this status.
    Exit(u8),
}

/// Why a term ends, which decides what follows it.
enum End {
    /// The child exited on its own (after its group was cleaned up): --on-exit decides.
    ChildExited { ran: Duration },
    /// The lease or the key is gone: no resign, campaign again.
    Lost,
    /// TERM/INT: exit with the child's status.
    Shutdown,
    /// `leaderrun resign` asked us to hand over: resign, then campaign again behind the others.
    StepDown,
    /// A better candidate waited long enough (--preempt): as a step-down.
    Preempted,
    /// The child failed its health check: resign, stay out of the election for the holdoff.
    Unhealthy,
    /// The command could not be restarted: exit with this status.
    Exit(u8),
    /// etcd refused us for good.
    Fatal(Error),
}

impl End {
    /// `LEADERRUN_REASON` for the demote hook.
    fn hook_reason(&self) -> hook::Reason {
        match self {
            End::ChildExited { .. } | End::Exit(_) => hook::Reason::Exit,
            End::Lost => hook::Reason::Lost,
            End::Shutdown | End::Fatal(_) => hook::Reason::Shutdown,
            End::StepDown => hook::Reason::StepDown,
            End::Preempted => hook::Reason::Preempted,
            End::Unhealthy => hook::Reason::Unhealthy,
        }
    }
}

impl State {
    /// The role this state publishes.
    fn role(&self) -> Role {
        match self {
            State::Connecting { .. } => Role::Connecting,
            State::Campaigning { .. } => Role::Standby,
            State::Leading(term) => Role::Leading {
                key: term.leadership().key.clone(),
                revision: term.leadership().revision,
                pid: term.pid(),
            },
            State::Stopping {
                end: End::Shutdown | End::Exit(_) | End::Fatal(_),
                ..
            }
            | State::Exit(_) => Role::Exiting,
            State::Stopping { .. } => Role::Stopping,
        }
    }
}

struct Supervisor {
    config: Config,
    client: Client,
    /// One client per endpoint, for the lease's keepalive stream.
    members: Vec<Member>,
    signals: Signals,
    gate: Gate,
    /// The moment a waiting candidate gives up (--wait-timeout).
    give_up_at: Option<Instant>,
    /// The last key found blocking the election, warned about once.
    blocked_by: Option<Vec<u8>>,
    /// Campaigns that could not reach etcd, retried on the same lease.
    unsent: Recurring,
    /// Where the health check publishes the child's health.
    health: HealthReporter,
    /// A hot standby whose child failed its health check: out of the election until it passes.
    standby_unhealthy: bool,
    /// Whether etcd ever granted us a lease: a certificate refused before that is a
    /// misconfiguration (exit 1), after it a renewal in progress (retried).
    reached_etcd: bool,
    /// Records each term (`leaderrun history`), off the handover's path.
    history: history::Writer,
}

/// Run the supervisor until it exits; returns the exit status.
/// `signals` are installed by the caller, before anything else: no signal may be missed once a
/// child exists.
pub async fn run(
    config: Config,
    mut signals: Signals,
    status: Status,
    guardian: Option<Arc<Guardian>>,
) -> Result<u8, Error> {
    let reaper = child::Reaper::start(guardian)
        .map_err(|e| Error::io("installing the SIGCHLD handler", e))?;
    let pid1 = child::adopt_orphans().map_err(|e| Error::io("becoming a child subreaper", e))?;
    info!(
        election = %config.election,
        id = %config.id,
        endpoints = %config.connection.endpoints.join(","),
        pid1,
        "starting"
    );
    // --wait-timeout counts from start-up, the connection included.
    let give_up_at = config
        .wait_timeout
        .and_then(|d| Instant::now().checked_add(d));
    let client = match connect(&config.connection, &mut signals, config.ttl, give_up_at).await? {
        Ok(client) => client,
        Err(code) => return Ok(code),
    };
    let members = etcd::members(&config.connection);
    let mut gate = Gate::new(&config, reaper, signals.child_defaults());
    metrics::set_info(&config.election, &config.id, config.priority);
    let election = config.election.clone();
    if let Some(signal) = config.hot_standby {
        if let Err(code) = gate.start_hot(signal) {
            return Ok(code);
        }
    }
    let mut sup = Supervisor {
        config,
        client,
        members,
        signals,
        gate,
        give_up_at,
        blocked_by: None,
        unsent: Recurring::new("campaign"),
        health: status.health_reporter(),
        standby_unhealthy: false,
        reached_etcd: false,
        history: history::Writer::start(&election),
    };
    let mut state = State::Connecting {
        after: Duration::ZERO,
    };
    loop {
        status.set(state.role());
        if let State::Campaigning { candidacy, .. } = &state {
            // A new lease is always campaigned with first.
            status.set_lease(candidacy.lease().view());
        }
        if !matches!(state, State::Leading(_)) {
            // Health is the child's, checked while leading only.
            sup.health.set(None);
        }
        if matches!(state, State::Connecting { .. }) {
            if let Err(code) = sup.gate.tend_hot() {
                state = State::Exit(code);
            }
        }
        state = match state {
            State::Connecting { after } => sup.connecting(after).await?,
            State::Campaigning { candidacy, after } => sup.campaigning(candidacy, after).await?,
            State::Leading(term) => sup.leading(term).await,
            State::Stopping { term, end } => sup.stopping(term, end).await?,
            State::Exit(code) => {
                let grace = sup
                    .config
                    .stop_timeout
                    .unwrap_or(timing::DEFAULT_STOP_TIMEOUT);
                sup.gate.stop_hot(sup.config.stop_signal, grace).await;
                return Ok(code);
            }
        };
    }
}

impl Supervisor {
    async fn connecting(&mut self, after: Duration) -> Result<State, Error> {
        let mut give_up = pin!(give_up(self.give_up_at));
        if let Some(exit) = self.pause(&mut give_up, after).await {
            return Ok(exit);
        }
        if std::mem::take(&mut self.standby_unhealthy) {
            if let (Some(check), Some((reaper, env, _))) =
                (self.config.health.clone(), self.gate.for_hot_checks())
            {
                let again = health::healthy_again(&check, &reaper, &env);
                match until_shutdown(&mut self.signals, &mut give_up, again).await {
                    Waited::Done(()) => info!("the hot standby's child is healthy: campaigning"),
                    Waited::Shutdown => return Ok(State::Exit(0)),
                    Waited::GaveUp => return Ok(State::Exit(EXIT_NOT_LEADING)),
                }
            }
        }
        let connection = &self.config.connection;
        let (ttl, stop_timeout) = (self.config.ttl, self.config.stop_timeout);
        let hook_timeout = self.gate.demote_budget();
        let (members, reached) = (&self.members, self.reached_etcd);
        let wait = timing::request_timeout(ttl);
        let current = &self.client;
        let attempt = || async move {
            // After the first, a new client for each candidacy: the TLS files as they are now
            // (certificates rotate).
            let client = if reached {
                within(wait, etcd::connect(connection)).await?
            } else {
                current.clone()
            };
            let lease = Lease::grant(&client, members, ttl, stop_timeout, hook_timeout).await?;
            Ok((client, lease))
        };
        let granted = retrying(
            &mut self.signals,
            &mut give_up,
            connection,
            ttl,
            reached,
            attempt,
        );
        let (client, lease) = match granted.await? {
            Ok(granted) => granted,
            Err(code) => return Ok(State::Exit(code)),
        };
        self.client = client;
        self.reached_etcd = true;
        self.gate.guard_lease(&lease);
        let t = lease.timing();
        info!(
            lease = %lease.hex_id(),
            ttl_ms = crate::log::ms(t.ttl),
            keepalive_ms = crate::log::ms(t.keepalive),
            stop_timeout_ms = crate::log::ms(t.stop_timeout),
            margin_ms = crate::log::ms(t.margin),
            "lease granted"
        );
        Ok(State::Campaigning {
            candidacy: Candidacy::new(lease),
            after: Duration::ZERO,
        })
    }

    /// Wait `d`, unless TERM/INT or the give-up time comes first (then: the state to go to).
    async fn pause(
        &mut self,
        give_up: &mut (impl Future<Output = ()> + Unpin),
        d: Duration,
    ) -> Option<State> {
        match until_shutdown(&mut self.signals, give_up, sleep(d)).await {
            Waited::Done(()) => None,
            Waited::Shutdown => Some(State::Exit(0)),
            Waited::GaveUp => Some(State::Exit(EXIT_NOT_LEADING)),
        }
    }

    async fn campaigning(
        &mut self,
        mut candidacy: Candidacy,
        after: Duration,
    ) -> Result<State, Error> {
        let wait = candidacy.lease().timing().request_timeout();
        let retry = candidacy.lease().timing().keepalive / 4;
        let mut give_up = pin!(give_up(self.give_up_at));
        if let Some(exit) = self.pause(&mut give_up, after).await {
            candidacy.release(&self.client, None).await;
            return Ok(exit);
        }
        let no_wait = self.config.no_wait;
        let ahead = match self.look_ahead(wait).await {
            Ok(ahead) => ahead,
            Err(refused) => {
                candidacy.release(&self.client, None).await;
                return Err(refused);
            }
        };
        if let Some(leader) = ahead {
            if no_wait {
                info!(leader = %leader, "another candidate leads: not waiting (--no-wait)");
                candidacy.release(&self.client, None).await;
                return Ok(State::Exit(EXIT_NOT_LEADING));
            }
        }
        info!(election = %self.config.election, lease = %candidacy.lease().hex_id(), "standby: campaigning");
        let holders::Turn {
            key: elected,
            proof,
            watching,
        } = match self
            .wait_in_line(candidacy.lease_mut(), &mut give_up, wait, retry)
            .await
        {
            Ok(Ok(won)) => {
                self.unsent.clear();
                won
            }
            Ok(Err(refused)) => return self.campaign_failed(candidacy, refused, retry).await,
            Err(next) => {
                candidacy.release(&self.client, None).await;
                return Ok(next);
            }
        };
        match self
            .gate
            .start(&self.client, candidacy.lease(), &elected, Some(proof), true)
            .await
        {
            Ok((leadership, child)) => {
                self.term_began(&leadership.key, leadership.revision);
                Ok(State::Leading(Tenure::begin(
                    candidacy,
                    leadership,
                    child,
                    Restarts::new(self.config.restart),
                    watching,
                )))
            }
            Err(not) => {
                if matches!(not, NotStarted::Vetoed) {
                    // A term that never started: recorded as such.
                    let key = String::from_utf8_lossy(elected.key());
                    self.term_began(&key, elected.rev());
                    self.term_ended(elected.rev(), hook::Reason::Vetoed, None);
                }
                let (resign, next) = self.not_started(not);
                candidacy
                    .release(&self.client, resign.then_some(&elected))
                    .await;
                next
            }
        }
    }

    /// Wait in the queue until our turn may have come (the campaign's answer), unless the
    /// candidacy ends first: Err(the state to go to; the lease is the caller's to release).
    async fn wait_in_line(
        &mut self,
        lease: &mut Lease,
        give_up: &mut (impl Future<Output = ()> + Unpin),
        wait: Duration,
        retry: Duration,
    ) -> Result<Result<holders::Turn, Refused>, State> {
        let (client, election, id) = (&self.client, &self.config.election, &self.config.id);
        let holders = self.config.holders;
        let join = holders::Join {
            election,
            id,
            lease: lease.id(),
            n: holders,
            priority: self.config.priority,
            published: self.published(),
            wait,
            retry,
        };
        // The queue is kept here, for one holder as for N (crate::election::holders); it watches our own
        // key too. Dropped (its watch with it) on return.
        let mut campaign = pin!(holders::campaign(client, &join));
        // The key is `NAME/<lease hex>`, as etcd's election service and Go's make it.
        let ours = format!("{election}/{}", lease.hex_id());
        // --no-wait: nobody led a moment ago, but a candidate that started with us may be ahead.
        let no_wait = self.config.no_wait;
        let mut behind = pin!(election::behind_another(
            client, election, &ours, holders, wait
        ));
        // A hot standby's child is checked while it stands by: an unhealthy one withdraws.
        let hot_check = self.config.health.clone().zip(self.gate.for_hot_checks());
        let mut sick = pin!(async {
            match &hot_check {
                Some((check, (reaper, env, started))) => {
                    health::unhealthy(check, reaper, env, *started, |_| {}).await
                }
                None => std::future::pending().await,
            }
        });
        loop {
            tokio::select! {
                r = &mut campaign => return Ok(r),
                _ = &mut behind, if no_wait => {
                    info!("another candidate is ahead: not waiting (--no-wait)");
                    return Err(State::Exit(EXIT_NOT_LEADING));
                }
                _ = self.gate.hot_event() => {
                    if let Err(code) = self.gate.tend_hot() {
                        return Err(State::Exit(code));
                    }
                    // A new child: its checks start anew (the next candidacy).
                    if self.gate.for_hot_checks().is_some() && hot_check.is_some() {
                        return Err(State::Connecting { after: Duration::ZERO });
                    }
                }
                why = &mut sick => {
                    warn!(%why, "the hot standby's child is unhealthy: withdrawing from the election until it passes a check");
                    self.standby_unhealthy = true;
                    return Err(State::Connecting { after: Duration::ZERO });
                }
                loss = lease.lost() => {
                    metrics::leader_known(false);
                    warn!(%loss, "standby lost its lease; campaigning again with a new one");
                    return Err(State::Connecting { after: Duration::ZERO });
                }
                _ = &mut *give_up => {
                    info!("not leading in time: giving up");
                    return Err(State::Exit(EXIT_NOT_LEADING));
                }
                req = self.signals.recv() => match req {
                    Request::Shutdown(sig) => {
                        info!(signal = %sig, "withdrawing from the election");
                        return Err(State::Exit(0));
                    }
                    Request::Forward(sig) => debug!(signal = %sig, "standby: no child to pass the signal to"),
                },
            }
        }
    }

    /// What this candidate publishes of itself: only with --priority or --preempt (a default
    /// candidate's role needs no permission beyond the election's).
    fn published(&self) -> Option<Published> {
        let c = &self.config;
        (c.priority > 0 || c.preempt.is_some()).then(|| Published {
            id: c.id.clone(),
            priority: c.priority,
            preempt: c.preempt,
            since_ms: history::now_ms(),
            hot: c.hot_standby.is_some(),
        })
    }

    /// A term began: its record, and the gauges.
    fn term_began(&self, key: &str, token: i64) {
        metrics::leader_known(true);
        self.history.begin(
            &self.client,
            history::Term {
                id: self.config.id.clone(),
                key: key.to_string(),
                token,
                start_ms: history::now_ms(),
                end_ms: None,
                reason: None,
                status: None,
            },
        );
    }

    /// A term ended: its record, and the gauges.
    fn term_ended(&self, token: i64, reason: hook::Reason, status: Option<String>) {
        metrics::leader_changed(reason.as_str());
        metrics::leader_known(false);
        let ending = history::Ending {
            end_ms: history::now_ms(),
            reason: reason.as_str().into(),
            status,
        };
        self.history.end(&self.client, token, ending);
    }

    /// What follows a campaign that etcd refused or that failed.
    async fn campaign_failed(
        &mut self,
        candidacy: Candidacy,
        refused: Refused,
        retry: Duration,
    ) -> Result<State, Error> {
        let e = match refused {
            Refused::Disagree(line) => {
                candidacy.release(&self.client, None).await;
                return Err(Error::Usage(line));
            }
            Refused::KeyGone(key) => {
                warn!(key = %key, "our candidate key was deleted while waiting; campaigning again with a new lease");
                candidacy.release(&self.client, None).await;
                return Ok(State::Connecting {
                    after: Duration::ZERO,
                });
            }
            Refused::Etcd(e) => e,
        };
        match after_refusal(e.kind()) {
            AfterRefusal::GiveUp => {
                candidacy.release(&self.client, None).await;
                let mut range = format!("{}/", self.config.election);
                if self.config.holders > 1 {
                    range = format!("{range} and {}", holders::prefix(&self.config.election));
                }
                Err(Error::on_range(range, e))
            }
            AfterRefusal::Reauthenticate => {
                // Refused before it reached the election: authenticate, then a fresh start.
                warn!(error = %e, "authenticating again");
                if let Err(e) = self.client.refresh_token().await {
                    warn!(error = %e, "authentication failed");
                }
                candidacy.release(&self.client, None).await;
                Ok(State::Connecting { after: retry })
            }
            AfterRefusal::SameLease => {
                // It reached no member: nothing can act on it later, the lease stays clean.
                let endpoints = self.config.connection.endpoints.join(",");
                self.unsent.report(format_args!("{endpoints}: {e}"));
                Ok(State::Campaigning {
                    candidacy,
                    after: retry,
                })
            }
            AfterRefusal::NewLease => {
                // One campaign per lease (holders::campaign says why).
                warn!(error = %e, "campaign failed; campaigning again with a new lease");
                candidacy.release(&self.client, None).await;
                Ok(State::Connecting { after: retry })
            }
        }
    }

    /// What follows a start that did not happen, and whether to resign first.
    fn not_started(&self, not: NotStarted) -> (bool, Result<State, Error>) {
        let run_id = self.config.run_id.as_ref().map(|r| r.id.as_str());
        after_not_started(not, run_id, self.config.holdoff)
    }

    /// Who is first under the prefix, by the value it proclaims (never us: our key does not
    /// exist before our campaign), when every place is taken (with `--holders N`: N keys).
    /// Warns once about a key that blocks the election without being a live candidate of it.
    /// Err: a default candidate refused by an election of N-holder candidates (exit 2).
    async fn look_ahead(&mut self, wait: Duration) -> Result<Option<String>, Error> {
        let (election, n) = (&self.config.election, self.config.holders);
        if n == 1 {
            if let Some(line) = holders::check_single(&self.client, election, wait).await {
                return Err(Error::Usage(line));
            }
        }
        let (first, full) =
            match election::first_candidates(&self.client, election, n.into(), wait).await {
                Ok((first, _)) => {
                    let full = first.len() >= n as usize;
                    (first.into_iter().next(), full)
                }
                Err(e) => {
                    warn!(error = %e, "cannot tell who leads; campaigning");
                    return Ok(None);
                }
            };
        let Some(first) = first else { return Ok(None) };
        let kind = election::classify(&self.config.election, &first);
        if kind != Candidate::Live && self.blocked_by.as_deref() != Some(first.key()) {
            // Other tools write these keys: nothing from etcd may forge a log line.
            let key = String::from_utf8_lossy(first.key());
            let key = escape_controls(&key);
            match &kind {
                Candidate::NoLease => {
                    warn!(%key, "a key without a lease blocks this election until it is deleted (etcdctl del)")
                }
                Candidate::Nested { election } => {
                    warn!(%key, nested = %election, "a candidate of a nested election blocks this one while it campaigns: election names that nest share keys")
                }
                _ => {
                    warn!(%key, "a key that is not a candidate blocks this election until it is deleted or its lease ends")
                }
            }
            self.blocked_by = Some(first.key().to_vec());
        }
        Ok(full.then(|| escape_controls(&String::from_utf8_lossy(first.value())).into_owned()))
    }

    async fn leading(&mut self, mut term: Tenure) -> State {
        let retry = term.lease().timing().keepalive / 4;
        let leadership = term.leadership().clone();
        let client = self.client.clone();
        // Our key is watched on the campaign's stream when there is one (nothing is asked of
        // etcd at the handover for it); the step-down watch waits until the handover is over.
        let watching = term.take_watching();
        let mut deleted = pin!(election::key_deleted(&client, &leadership, retry, watching));
        let election = self.config.election.clone();
        let mut step_down = pin!(async {
            sleep(election::SETTLE).await;
            step_down::requested(&client, &election, &leadership, retry).await
        });
        let (priority, own_lease) = (self.config.priority, term.lease().id());
        let preempt = self.config.preempt;
        let mut preempted = pin!(async {
            match preempt {
                Some(after) => {
                    priority::preempted(&client, &election, own_lease, priority, after, retry).await
                }
                None => std::future::pending().await,
            }
        });
        let (reaper, env) = self.gate.for_checks(&leadership, term.lease());
        let check = self.config.health.clone();
        let reporter = self.health.clone();
        let started = match &term.run {
            Run::Running { started, .. } => Some(*started),
            _ => None,
        };
        let mut sick = pin!(async {
            match (&check, started) {
                (Some(check), Some(started)) => {
                    let report = |h| reporter.set(Some(h));
                    health::unhealthy(check, &reaper, &env, started, report).await
                }
                // No check, or no child to check (waiting to restart).
                _ => std::future::pending().await,
            }
        });
        loop {
            let restart_at = match &term.run {
                Run::Restarting { at, .. } => Some(*at),
                _ => None,
            };
            let (run, lease) = term.run_and_lease();
            tokio::select! {
                status = wait_child(run) => {
                    match self.child_exited(&mut term, status).await {
                        Some(end) => return State::Stopping { term, end },
                        // Restarting: the role's pid changes.
                        None => return State::Leading(term),
                    }
                }
                _ = sleep_until(restart_at.unwrap_or_else(Instant::now)), if restart_at.is_some() => {
                    match self.gate.start(&self.client, term.lease(), leadership.leader_key(), None, false).await {
                        Ok((_, child)) => {
                            term.run = Run::Running { child, started: Instant::now() };
                            return State::Leading(term);
                        }
                        Err(NotStarted::Spawn(code)) => return State::Stopping { term, end: End::Exit(code) },
                        // Retried with the restart policy's backoff, counted as an exit: a
                        // limit that stays reached hands leadership over as too many exits do.
                        Err(NotStarted::SpawnLater) => {
                            let Run::Restarting { last, .. } = term.run else { return State::Leading(term) };
                            match term.restarts.on_exit(Instant::now(), Duration::ZERO) {
                                Some(delay) => {
                                    info!(retry_in_ms = crate::log::ms(delay), "restarting the child in place later");
                                    term.run = Run::Restarting { at: Instant::now() + delay, last };
                                    return State::Leading(term);
                                }
                                None => {
                                    warn!("the child could not be started again: giving leadership up");
                                    term.run = Run::Finished(last);
                                    return State::Stopping { term, end: End::ChildExited { ran: Duration::ZERO } };
                                }
                            }
                        }
                        Err(NotStarted::Fatal(e)) => return State::Stopping { term, end: End::Fatal(e) },
                        Err(not) => {
                            warn!(why = ?not, "leadership not verified for the restart; campaigning again");
                            metrics::term_ended(Reason::Unverified);
                            return State::Stopping { term, end: End::Lost };
                        }
                    }
                }
                loss = lease.lost() => {
                    warn!(%loss, key = %leadership.key, "leadership lost: stopping the child before the lease can expire");
                    metrics::term_ended(loss.into());
                    return State::Stopping { term, end: End::Lost };
                }
                _ = &mut deleted => {
                    warn!(key = %leadership.key, "leader key deleted in etcd: stopping the child");
                    metrics::term_ended(Reason::KeyDeleted);
                    return State::Stopping { term, end: End::Lost };
                }
                why = &mut sick => {
                    let holdoff = self.config.health.as_ref().map(|h| h.holdoff).unwrap_or_default();
                    warn!(%why, holdoff_ms = crate::log::ms(holdoff), "unhealthy: stopping the child, resigning, staying out of the election for the holdoff");
                    return State::Stopping { term, end: End::Unhealthy };
                }
                _ = &mut preempted => {
                    info!(key = %leadership.key, "a candidate of higher priority has waited for --preempt: stopping the child, resigning, campaigning again behind it");
                    return State::Stopping { term, end: End::Preempted };
                }
                _ = &mut step_down => {
                    info!(key = %leadership.key, "step-down requested (leaderrun resign): stopping the child, resigning, campaigning again behind the others");
                    return State::Stopping { term, end: End::StepDown };
                }
                req = self.signals.recv() => match req {
                    Request::Forward(sig) => match &term.run {
                        Run::Running { child, .. } => {
                            debug!(signal = %sig, "passing the signal to the child's group");
                            child.signal_group(sig);
                        }
                        _ => debug!(signal = %sig, "no child to pass the signal to"),
                    },
                    Request::Shutdown(sig) => {
                        info!(signal = %sig, "stopping the child, then resigning");
                        return State::Stopping { term, end: End::Shutdown };
                    }
                },
            }
        }
    }

    /// The child exited on its own: what is left of its group goes too, before anyone else can
    /// lead. None: it restarts in place; Some: the term ends.
    async fn child_exited(&mut self, term: &mut Tenure, status: ExitStatus) -> Option<End> {
        info!(%status, "child exited");
        metrics::child_exited(metrics::Exit::OnItsOwn);
        let ran = match &term.run {
            Run::Running { started, .. } => started.elapsed(),
            _ => return None,
        };
        term.stop_child(self.config.stop_signal).await;
        term.run = Run::Finished(status);
        if self.gate.is_hot() {
            // Handed over; the child is started again as a standby.
            return Some(End::ChildExited { ran });
        }
        if self.config.on_exit == OnExit::Restart {
            match term.restarts.on_exit(Instant::now(), ran) {
                Some(delay) => {
                    info!(
                        retry_in_ms = crate::log::ms(delay),
                        "restarting the child in place"
                    );
                    term.run = Run::Restarting {
                        at: Instant::now() + delay,
                        last: status,
                    };
                    return None;
                }
                None => warn!(
                    limit = self.config.restart.limit,
                    window_ms = crate::log::ms(self.config.restart.window),
                    "too many exits: giving leadership up"
                ),
            }
        }
        Some(End::ChildExited { ran })
    }

    /// The end path, then the next state.
    async fn stopping(&mut self, term: Tenure, end: End) -> Result<State, Error> {
        let resign = !matches!(end, End::Lost);
        match end {
            End::Lost => {}
            End::Unhealthy => metrics::term_ended(Reason::Unhealthy),
            _ => metrics::term_ended(Reason::Graceful),
        }
        let reason = end.hook_reason();
        let leadership = term.leadership().clone();
        let (status, released) = term
            .end(
                &self.client,
                &mut self.gate,
                self.config.stop_signal,
                reason,
                resign,
            )
            .await;
        let ended = matches!(end, End::ChildExited { .. }).then(|| status.to_string());
        // The record first: it is written a while after the handover, as the next leader's is
        // (which would close this term as lost were ours later).
        self.term_ended(leadership.revision, reason, ended);
        released.revoke(&self.client).await;
        let on_exit = match self.gate.is_hot() {
            true => OnExit::Recampaign,
            false => self.config.on_exit,
        };
        after_end(
            end,
            status,
            self.gate.run_started(),
            on_exit,
            self.config.holdoff,
        )
    }
}

/// What follows a start that did not happen, and whether to resign first.
fn after_not_started(
    not: NotStarted,
    run_id: Option<&str>,
    holdoff: Duration,
) -> (bool, Result<State, Error>) {
    match not {
        NotStarted::Unverified(why) => {
            warn!(why = %why, "elected but not verified; campaigning again with a new lease");
            (
                false,
                Ok(State::Connecting {
                    after: Duration::ZERO,
                }),
            )
        }
        // Never a token not above one seen: campaign again after a pause; the store's
        // revision grows with every write, and a candidate that saw less may lead meanwhile.
        NotStarted::TokenBehind => (
            true,
            Ok(State::Connecting {
                after: RECAMPAIGN_PAUSE,
            }),
        ),
        NotStarted::RunTaken(by) => {
            let run_id = run_id.unwrap_or("");
            info!(run_id, ran = %by, "this run is done already: not running it");
            (true, Ok(State::Exit(0)))
        }
        NotStarted::RunStartedBefore => {
            info!("this process started the run already: not starting it again");
            (true, Ok(State::Exit(0)))
        }
        NotStarted::Spawn(code) => (true, Ok(State::Exit(code))),
        // As for ill health: hand over, stay out for the holdoff.
        NotStarted::Vetoed => {
            warn!(holdoff_ms = crate::log::ms(holdoff), "the promote hook vetoed the term: resigning, staying out of the election for the holdoff");
            metrics::term_ended(Reason::Vetoed);
            (true, Ok(State::Connecting { after: holdoff }))
        }
        // Hand over: another host may have processes to spare; back after a pause.
        NotStarted::SpawnLater => (
            true,
            Ok(State::Connecting {
                after: RECAMPAIGN_PAUSE,
            }),
        ),
        NotStarted::Fatal(e) => (true, Err(e)),
    }
}

/// What a campaign that etcd refused or that failed leads to, by the kind of its error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterRefusal {
    /// Retrying cannot fix it: exit.
    GiveUp,
    /// An expired token: authenticate again, then a new lease.
    Reauthenticate,
    /// It reached no member: campaign again on the same lease.
    SameLease,
    /// Anything else: a new lease (one campaign per lease).
    NewLease,
}

fn after_refusal(kind: Kind) -> AfterRefusal {
    match kind {
        Kind::Fatal => AfterRefusal::GiveUp,
        Kind::AuthExpired => AfterRefusal::Reauthenticate,
        Kind::NeverSent => AfterRefusal::SameLease,
        Kind::Retry | Kind::LeaseGone | Kind::Tls => AfterRefusal::NewLease,
    }
}

/// What follows a term that ended for `end`, its child having ended with `status`.
fn after_end(
    end: End,
    status: ExitStatus,
    run_started: bool,
    on_exit: OnExit,
    holdoff: Duration,
) -> Result<State, Error> {
    Ok(match end {
        End::Fatal(e) => return Err(e),
        End::Exit(code) => State::Exit(code),
        End::Shutdown => State::Exit(status.code()),
        // A run under --run-id starts once per process, whatever became of it: a run that
        // ended on its own is simply done; one cut short is worth a warning.
        End::ChildExited { .. } if run_started => State::Exit(status.code()),
        End::Lost | End::StepDown | End::Preempted | End::Unhealthy if run_started => {
            warn!(%status, "the run was started once under its run ID: it is not started again");
            State::Exit(status.code())
        }
        // A new lease and a new key: behind every candidate already waiting.
        End::Lost | End::StepDown | End::Preempted => State::Connecting {
            after: Duration::ZERO,
        },
        End::Unhealthy => State::Connecting { after: holdoff },
        End::ChildExited { ran } => match on_exit {
            OnExit::Exit => State::Exit(status.code()),
            OnExit::Recampaign if ran >= MIN_HEALTHY_RUN => State::Connecting {
                after: Duration::ZERO,
            },
            OnExit::Recampaign | OnExit::Restart => State::Connecting {
                after: RECAMPAIGN_PAUSE,
            },
        },
    })
}

/// Build the client, retrying while etcd is unreachable (with credentials, building it is a
/// round trip). Err(exit status): TERM/INT (0) or the give-up time (75) came first.
async fn connect(
    connection: &etcd::Connection,
    signals: &mut Signals,
    ttl: Duration,
    give_up_at: Option<Instant>,
) -> Result<Result<Client, u8>, Error> {
    let mut give_up = pin!(give_up(give_up_at));
    let wait = timing::request_timeout(ttl);
    let connect = || within(wait, etcd::connect(connection));
    retrying(signals, &mut give_up, connection, ttl, false, connect).await
}

/// Make `attempt` until it works, with the one backoff while etcd is unreachable, honouring
/// TERM/INT and the give-up time: Err(exit status) when one of those comes first. What retrying
/// cannot fix ends it: a refusal, or a certificate refused before etcd was ever `reached`.
async fn retrying<T, Fut>(
    signals: &mut Signals,
    give_up: &mut (impl Future<Output = ()> + Unpin),
    connection: &etcd::Connection,
    ttl: Duration,
    reached: bool,
    mut attempt: impl FnMut() -> Fut,
) -> Result<Result<T, u8>, Error>
where
    Fut: Future<Output = Result<T, EtcdError>>,
{
    let mut backoff = Backoff::etcd_retry(ttl);
    let mut trouble = Recurring::new("connecting to etcd");
    loop {
        match until_shutdown(signals, give_up, attempt()).await {
            Waited::Done(Ok(done)) => {
                trouble.clear();
                return Ok(Ok(done));
            }
            Waited::Done(Err(e)) if e.is_fatal() || (e.kind() == Kind::Tls && !reached) => {
                return Err(Error::on_connection(connection, e))
            }
            Waited::Done(Err(e)) => {
                let endpoints = connection.endpoints.join(",");
                trouble.report(format_args!("{endpoints}: {e}"));
            }
            Waited::Shutdown => return Ok(Err(0)),
            Waited::GaveUp => return Ok(Err(EXIT_NOT_LEADING)),
        }
        match until_shutdown(signals, give_up, sleep(backoff.next_delay())).await {
            Waited::Done(()) => {}
            Waited::Shutdown => return Ok(Err(0)),
            Waited::GaveUp => return Ok(Err(EXIT_NOT_LEADING)),
        }
    }
}

/// `fut`, or a time-out error after `wait`.
async fn within<T>(
    wait: Duration,
    fut: impl Future<Output = Result<T, EtcdError>>,
) -> Result<T, EtcdError> {
    tokio::time::timeout(wait, fut)
        .await
        .unwrap_or(Err(EtcdError::TimedOut {
            what: "connecting",
            after: wait,
        }))
}

async fn wait_child(run: &mut Run) -> ExitStatus {
    match run {
        Run::Running { child, .. } => child.wait().await,
        _ => std::future::pending().await,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::signals::Signals;
    use nix::sys::signal::Signal;

    /// The states that hold no lease, as text.
    fn shown(state: Result<State, Error>) -> String {
        match state {
            Ok(State::Connecting { after }) => format!("connecting after {after:?}"),
            Ok(State::Exit(code)) => format!("exit {code}"),
            Ok(State::Campaigning { .. }) => "campaigning".into(),
            Ok(State::Leading(_)) => "leading".into(),
            Ok(State::Stopping { .. }) => "stopping".into(),
            Err(e) => format!("error {}", e.exit_code()),
        }
    }

    #[test]
    fn each_end_of_a_term_leads_to_its_next_state() {
        let ran = |secs| End::ChildExited {
            ran: Duration::from_secs(secs),
        };
        let holdoff = Duration::from_secs(30);
        let status = ExitStatus::Code(3);
        let next = |end, run_started, on_exit| {
            shown(after_end(end, status, run_started, on_exit, holdoff))
        };
        let cases = [
            (End::Lost, OnExit::Exit, "connecting after 0ns"),
            (End::StepDown, OnExit::Exit, "connecting after 0ns"),
            (End::Unhealthy, OnExit::Exit, "connecting after 30s"),
            (End::Shutdown, OnExit::Recampaign, "exit 3"),
            (End::Exit(126), OnExit::Recampaign, "exit 126"),
            (ran(5), OnExit::Exit, "exit 3"),
            (ran(5), OnExit::Recampaign, "connecting after 0ns"),
            // A crash loop pauses before the next campaign.
            (ran(0), OnExit::Recampaign, "connecting after 1s"),
            (ran(5), OnExit::Restart, "connecting after 1s"),
        ];
        for (end, on_exit, want) in cases {
            let what = format!("{:?}", std::mem::discriminant(&end));
            assert_eq!(next(end, false, on_exit), want, "{what} {on_exit:?}");
        }
        // A run under --run-id never starts twice in one process, whatever ended it.
        for end in [End::Lost, End::StepDown, End::Unhealthy, ran(5)] {
            assert_eq!(next(end, true, OnExit::Recampaign), "exit 3");
        }
        let fatal = End::Fatal(Error::Usage("refused".into()));
        assert_eq!(next(fatal, false, OnExit::Exit), "error 2");
    }

    #[test]
    fn each_campaign_failure_kind_leads_to_its_next_state() {
        assert_eq!(after_refusal(Kind::Fatal), AfterRefusal::GiveUp);
        assert_eq!(
            after_refusal(Kind::AuthExpired),
            AfterRefusal::Reauthenticate
        );
        // Nothing reached a member: the same lease may campaign again.
        assert_eq!(after_refusal(Kind::NeverSent), AfterRefusal::SameLease);
        for kind in [Kind::Retry, Kind::LeaseGone, Kind::Tls] {
            assert_eq!(after_refusal(kind), AfterRefusal::NewLease, "{kind:?}");
        }
    }

    #[test]
    fn each_refusal_of_the_start_gate_leads_to_its_next_state() {
        let next = |not| {
            let (resign, state) = after_not_started(not, Some("nightly"), Duration::from_secs(30));
            format!("{resign} {}", shown(state))
        };
        let unverified = NotStarted::Unverified(election::Unverified::NotFirst);
        assert_eq!(next(unverified), "false connecting after 0ns");
        assert_eq!(next(NotStarted::TokenBehind), "true connecting after 1s");
        assert_eq!(next(NotStarted::RunTaken("b".into())), "true exit 0");
        assert_eq!(next(NotStarted::RunStartedBefore), "true exit 0");
        assert_eq!(next(NotStarted::Spawn(127)), "true exit 127");
        assert_eq!(next(NotStarted::SpawnLater), "true connecting after 1s");
        assert_eq!(next(NotStarted::Vetoed), "true connecting after 30s");
        let fatal = NotStarted::Fatal(Error::Usage("no".into()));
        assert_eq!(next(fatal), "true error 2");
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_on_term_or_int_and_passes_over_signals_for_the_child() {
        let (tx, mut signals) = Signals::injected();
        let mut never = pin!(give_up(None));
        tx.send(Request::Forward(Signal::SIGHUP)).unwrap();
        tx.send(Request::Shutdown(Signal::SIGTERM)).unwrap();
        let waited = until_shutdown(&mut signals, &mut never, std::future::pending::<()>());
        assert!(matches!(waited.await, Waited::Shutdown));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_gives_up_at_the_wait_timeout_on_the_paused_clock() {
        let (_tx, mut signals) = Signals::injected();
        let t0 = Instant::now();
        let mut at = pin!(give_up(Some(t0 + Duration::from_secs(30))));
        let work = sleep(Duration::from_secs(60));
        let waited = until_shutdown(&mut signals, &mut at, work).await;
        assert!(matches!(waited, Waited::GaveUp));
        assert_eq!(Instant::now(), t0 + Duration::from_secs(30));
        // Work that ends first is done.
        let mut never = pin!(give_up(None));
        let work = async { 5 };
        let waited = until_shutdown(&mut signals, &mut never, work).await;
        assert!(matches!(waited, Waited::Done(5)));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_of_an_unreachable_etcd_back_off_and_end_on_term() {
        let (tx, mut signals) = Signals::injected();
        let connection = etcd::Connection {
            endpoints: vec!["http://127.0.0.1:1".into()],
            ..Default::default()
        };
        let mut never = pin!(give_up(None));
        let t0 = Instant::now();
        let attempts = std::cell::Cell::new(Vec::new());
        let attempt = || {
            let mut at = attempts.take();
            at.push(Instant::now() - t0);
            let n = at.len();
            attempts.set(at);
            if n == 4 {
                tx.send(Request::Shutdown(Signal::SIGINT)).unwrap();
            }
            async {
                Err::<(), _>(EtcdError::TimedOut {
                    what: "connecting",
                    after: Duration::ZERO,
                })
            }
        };
        let ttl = Duration::from_secs(10);
        let r = retrying(&mut signals, &mut never, &connection, ttl, false, attempt).await;
        assert!(matches!(r, Ok(Err(0))), "TERM/INT: exit 0");
        let at = attempts.take();
        assert_eq!(at.len(), 4);
        // Each pause at least as long as the one before, the first one short.
        let gaps: Vec<_> = at.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps[0] <= Duration::from_millis(200), "{gaps:?}");
        assert!(gaps.windows(2).all(|g| g[1] >= g[0]), "{gaps:?}");
    }
}
