//! One term of leadership, and the two rules that bracket it, each written once:
//!
//! - the **start gate** ([`Gate::start`]): verify the election result, claim the run
//!   (`--run-id`), check the lease deadline again, spawn. Every start of the child, the first
//!   and each restart in place, goes through it;
//! - the **end path** ([`Tenure::end`]): stop the child, then release leadership. Nothing else
//!   resigns or revokes while a child may live.
//!
//! Both held by types: a lease lives in a [`Candidacy`] (no child) or a [`Tenure`] (a child
//! may live), each owning it privately. Revoking needs the lease by value, so a candidacy is
//! released once, through [`Candidacy::release`], and a term only through [`Tenure::end`].

use crate::backoff::Backoff;
use crate::config::{Config, RunId};
use crate::election::holders;
use crate::election::run_records::{self, Claim};
use crate::election::{self, Leadership, Unverified};
use crate::error::{Error, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND};
use crate::lease::Lease;
use crate::log::recurring::REMIND_EVERY;
use crate::process::child::{Child, Command, ExitStatus, Reaper};
use crate::process::hook::{Hooks, Kind, Reason};
use crate::process::role::{RoleChannel, Told};
use crate::status::notify;
use crate::supervisor::restart::Restarts;
use etcd_client::{Client, LeaderKey};
use nix::sys::signal::Signal;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::{sleep_until, Instant};

/// A hot standby child that exits is started again after this, doubling...
const HOT_RESTART_BASE: Duration = Duration::from_secs(1);
/// ...up to this.
const HOT_RESTART_CAP: Duration = Duration::from_secs(30);
/// A hot standby child that ran this long before it exited starts the backoff anew.
const HOT_HEALTHY_RUN: Duration = Duration::from_secs(60);
use tracing::{debug, error, info, warn};

/// The child's lifecycle within a term.
#[derive(Debug)]
pub enum Run {
    Running {
        child: Child,
        started: Instant,
    },
    /// `--on-exit restart`: exited; starts again at `at` through the gate.
    Restarting {
        at: Instant,
        last: ExitStatus,
    },
    /// Exited, its group gone; the term is ending.
    Finished(ExitStatus),
}

/// A lease with no child: granted, campaigning, or elected and not yet started.
pub struct Candidacy {
    lease: Lease,
}

impl Candidacy {
    pub fn new(lease: Lease) -> Candidacy {
        Candidacy { lease }
    }

    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// For waiting on its loss.
    pub fn lease_mut(&mut self) -> &mut Lease {
        &mut self.lease
    }

    /// Give the candidacy up: resign `key` if given, then revoke the lease. Whether `key` was
    /// resigned.
    pub async fn release(self, client: &Client, key: Option<&LeaderKey>) -> bool {
        release(client, self.lease, key).await
    }
}

/// One term: the lease, the verified leadership, the child. Built only by the start gate's
/// success ([`Tenure::begin`]); ended only by [`Tenure::end`].
pub struct Tenure {
    lease: Lease,
    leadership: Leadership,
    /// The campaign's watch stream, which watches our key (the term's first watch on it).
    watching: Option<holders::Watching>,
    /// The child's lifecycle; the supervisor moves it through restarts.
    pub run: Run,
    pub restarts: Restarts,
}

/// Why a start did not happen.
#[derive(Debug)]
pub enum NotStarted {
    /// The election result did not hold up, or the deadline came too near: campaign again.
    Unverified(Unverified),
    /// The fencing token would not be above a revision seen before.
    TokenBehind,
    /// `--run-id`: somebody ran it already.
    RunTaken(String),
    /// `--run-id`: this process started the run once; it never starts it again.
    RunStartedBefore,
    /// The command could not be spawned: exit with this status.
    Spawn(u8),
    /// The promote hook failed or timed out: hand over as for ill health.
    Vetoed,
    /// The command could not be spawned for now (no process or memory left: EAGAIN, ENOMEM):
    /// retrying can fix it.
    SpawnLater,
    /// etcd refused us for good.
    Fatal(Error),
}

/// Why the gate's last steps did not spawn.
#[derive(Debug)]
enum Refusal {
    DeadlineNear,
    Vetoed,
    /// `--hot-standby`: the child is down (restarting).
    HotDown,
    Spawn(std::io::Error),
}

/// What the gate needs: the command and how to start it.
pub struct Gate {
    reaper: Reaper,
    election: String,
    id: String,
    program: PathBuf,
    args: Vec<OsString>,
    signal_defaults: Vec<Signal>,
    run_id: Option<RunId>,
    /// `--holders`: verification looks for our key among this many first keys.
    holders: u32,
    /// `--run-id`: the run has been started by this process (whatever became of it).
    run_started: bool,
    /// The fencing tokens handed out and the revisions seen.
    tokens: Tokens,
    /// The last refusal for a token behind (the revision seen, when said): said again only
    /// when that changes or every [`REMIND_EVERY`], as a recurring problem is, not at every
    /// campaign of a restored etcd.
    behind_said: Option<(i64, Instant)>,
    hooks: Hooks,
    /// `--hot-standby`: the child that runs in every role.
    hot: Option<Hot>,
}

/// A hot standby's child while it stands by, and its role channel.
struct Hot {
    channel: RoleChannel,
    /// The child while standing by; None while a term holds it, or while it is down.
    standby: Option<Child>,
    /// Down: started again then.
    restart_at: Option<Instant>,
    backoff: Backoff,
    /// When the standby child last started (a long run resets the backoff).
    started: Instant,
}

/// How a hot standby's demotion went.
enum Demoted {
    /// The child confirmed: it runs on as a standby.
    Confirmed(Child),
    /// It did not confirm in time (or exited): stopped, with this status.
    Stopped(ExitStatus),
}

/// The fencing token never goes back: a term's token (its key's create revision) must be above
/// every store revision this process has seen. etcd restored from an older copy reports lower
/// revisions, and would otherwise hand a new leader a token an old one already used.
#[derive(Debug, Default)]
struct Tokens {
    /// The highest store revision seen at a verification.
    seen: i64,
    /// The key and token of the current (or last) term: a restart in place hands it out again.
    current: Option<(String, i64)>,
}

/// A token that is not above a revision already seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TokenBehind {
    token: i64,
    seen: i64,
}

impl Tokens {
    /// Check the token of `key`, verified at `store_revision`, and remember what it shows.
    fn hand_out(&mut self, key: &str, token: i64, store_revision: i64) -> Result<(), TokenBehind> {
        let same_term = self
            .current
            .as_ref()
            .is_some_and(|(k, t)| k == key && *t == token);
        if !same_term && token <= self.seen {
            return Err(TokenBehind {
                token,
                seen: self.seen,
            });
        }
        self.current = Some((key.to_string(), token));
        self.seen = self.seen.max(store_revision);
        Ok(())
    }
}

impl Gate {
    pub fn new(config: &Config, reaper: Reaper, signal_defaults: &[Signal]) -> Gate {
        Gate {
            reaper,
            election: config.election.clone(),
            id: config.id.clone(),
            program: config.program.clone(),
            args: config.args.clone(),
            signal_defaults: signal_defaults.to_vec(),
            run_id: config.run_id.clone(),
            holders: config.holders,
            run_started: false,
            tokens: Tokens::default(),
            behind_said: None,
            hooks: config.hooks.clone(),
            hot: None,
        }
    }

    /// Tell the guardian the lease of this candidacy: after a crash it revokes it once the
    /// child's group (if any) is confirmed gone, so the next candidate need not wait the TTL.
    /// A standby's too: its key then leaves the queue at once.
    pub fn guard_lease(&self, lease: &Lease) {
        self.reaper.guard_lease(lease.id());
    }

    /// H: what the demote hook may take inside the stop budget (0 without one).
    pub fn demote_budget(&self) -> Duration {
        match self.hooks.demote {
            Some(_) => self.hooks.timeout,
            None => Duration::ZERO,
        }
    }

    /// Whether a `--run-id` run was started by this process: it is then done here for good.
    pub fn run_started(&self) -> bool {
        self.run_started
    }

    /// The start gate: verify (on the queue's proof, or by a read when there is none), claim
    /// the run, check the deadline, the promote hook (for a `new_term`, not a restart in place),
    /// spawn.
    pub async fn start(
        &mut self,
        client: &Client,
        lease: &Lease,
        elected: &LeaderKey,
        proof: Option<holders::Proof>,
        new_term: bool,
    ) -> Result<(Leadership, Child), NotStarted> {
        if self.run_started {
            return Err(NotStarted::RunStartedBefore);
        }
        // Keepalives at the leader's pace from now, the first at once. Its answer is not waited
        // for: the stop time only moves forward, so waiting would move the start, never the
        // stop (docs/SAFETY.md, "A standby's keepalives are sparser").
        lease.lead();
        let verified = election::verify(client, elected, lease, self.holders, proof).await;
        let leadership = verified.map_err(NotStarted::Unverified)?;
        let (key, token) = (&leadership.key, leadership.revision);
        if let Err(behind) = self
            .tokens
            .hand_out(key, token, leadership.store_revision())
        {
            crate::metrics::fencing_token_behind();
            let again = matches!(self.behind_said, Some((seen, at)) if seen == behind.seen && at.elapsed() < REMIND_EVERY);
            if again {
                debug!(
                    token = behind.token,
                    seen = behind.seen,
                    "fencing token still behind"
                );
            } else {
                self.behind_said = Some((behind.seen, Instant::now()));
                error!(
                    token = behind.token,
                    seen = behind.seen,
                    "etcd reports revision {} for our key, below revision {} seen before: was it restored from an older copy? Not starting: the fencing token would go back (said again every 30 s while it lasts)",
                    behind.token,
                    behind.seen
                );
            }
            return Err(NotStarted::TokenBehind);
        }
        let wait = lease.timing().request_timeout();
        let record = match &self.run_id {
            None => None,
            Some(run) => {
                let claim =
                    run_records::claim(client, &self.election, &self.id, &leadership, run, wait);
                match claim.await {
                    Ok(Claim::Claimed(record)) => Some(record),
                    Ok(Claim::Taken(by)) => return Err(NotStarted::RunTaken(by)),
                    Ok(Claim::NotLeader) => {
                        return Err(NotStarted::Unverified(Unverified::KeyChanged))
                    }
                    Err(e) if e.is_fatal() => {
                        let range = run_records::run_key(&self.election, "");
                        return Err(NotStarted::Fatal(Error::on_range(range, e)));
                    }
                    Err(e) => return Err(NotStarted::Unverified(e.into())),
                }
            }
        };
        // The guardian forgets the lease while the child's group is not yet known to it: a crash
        // in between must let the lease expire, not revoke it under a group that may live.
        self.reaper.guard_lease(0);
        let command = self.command(&leadership, lease);
        // The promote hook, once per term, after the deadline rule and before the spawn; the
        // deadline kills it in time for a demote hook to undo it.
        let promoted = if !new_term || self.hooks.promote.is_none() {
            Ok(false)
        } else if !lease.may_start() {
            Err(Refusal::DeadlineNear)
        } else {
            let until = lease.kill_at();
            let hook = self
                .hooks
                .run(Kind::Promote, None, &self.reaper, &command, until);
            hook.await.map(|()| true).map_err(|_| Refusal::Vetoed)
        };
        let hook_ran = matches!(promoted, Ok(true) | Err(Refusal::Vetoed));
        // The deadline rule, checked here, last: verifying, claiming and the hook took time.
        let spawned = match promoted {
            Ok(_) if lease.may_start() && self.hot.is_some() => {
                self.promote_hot(&leadership, lease)
            }
            Ok(_) if lease.may_start() => {
                tracing::debug!("verified, the deadline checked: spawning the child");
                self.reaper.spawn(&command).map_err(Refusal::Spawn)
            }
            Ok(_) => Err(Refusal::DeadlineNear),
            Err(refusal) => Err(refusal),
        };
        // The group is known now (or there is none).
        self.guard_lease(lease);
        let child = match spawned {
            Ok(child) => child,
            Err(refusal) => {
                if hook_ran {
                    // Whatever the promote hook did (or half did) is undone before release.
                    let reason = match refusal {
                        Refusal::Vetoed => Reason::Vetoed,
                        _ => Reason::Exit,
                    };
                    self.demote(lease, &command, reason).await;
                }
                if let Some(record) = record {
                    // A run that did not start must not count as done.
                    let key = record.key.clone();
                    match run_records::withdraw(client, record, wait).await {
                        Ok(()) => {
                            warn!(run_key = %key, "the run did not start: its record is withdrawn, another host may run it")
                        }
                        Err(w) => {
                            error!(run_key = %key, error = %w, "the run did not start, and its record could not be withdrawn: delete it by hand to run it")
                        }
                    }
                }
                let e = match refusal {
                    Refusal::DeadlineNear => {
                        return Err(NotStarted::Unverified(Unverified::DeadlineNear))
                    }
                    Refusal::Vetoed => return Err(NotStarted::Vetoed),
                    Refusal::HotDown => {
                        warn!("the hot standby's child is down: handing over");
                        return Err(NotStarted::SpawnLater);
                    }
                    Refusal::Spawn(e) => e,
                };
                if is_transient(&e) {
                    error!(error = %e, "cannot start the command for now");
                    return Err(NotStarted::SpawnLater);
                }
                error!(error = %e, "cannot start the command");
                return Err(NotStarted::Spawn(match e.kind() {
                    std::io::ErrorKind::NotFound => EXIT_NOT_FOUND,
                    _ => EXIT_NOT_EXECUTABLE,
                }));
            }
        };
        if let Some(run) = &self.run_id {
            info!(run_id = %run.id, "run recorded and started");
            self.run_started = true;
        }
        info!(
            key = %leadership.key,
            revision = leadership.revision,
            pid = child.pid(),
            verified = %leadership.verified_by,
            "leading: child started"
        );
        Ok((leadership, child))
    }

    /// The demote hook, if any, for `reason`: killed by the deadline's share `D - m`, or by its
    /// own timeout alone when the lease is already gone (the order can no longer be kept, but
    /// what the promote hook took must still go).
    async fn demote(&self, lease: &Lease, command: &Command, reason: Reason) {
        let until = if lease.is_gone() {
            Instant::now() + self.hooks.timeout
        } else {
            lease.timing().hook_kill_at(lease.deadline())
        };
        let hook = self
            .hooks
            .run(Kind::Demote, Some(reason), &self.reaper, command, until);
        let _ = hook.await;
    }

    /// What a health check needs: a reaper that leaves the guardian alone, and the child's
    /// command (its environment is the check's).
    pub fn for_checks(&self, leadership: &Leadership, lease: &Lease) -> (Reaper, Command) {
        (self.reaper.clone(), self.command(leadership, lease))
    }

    /// `--hot-standby`: make the role channel and start the child as a standby, before the
    /// first campaign. Err(exit status) when the command cannot be run at all.
    pub fn start_hot(&mut self, signal: Signal) -> Result<(), u8> {
        let channel = RoleChannel::new(signal).map_err(|e| {
            error!(error = %e, "cannot make the hot standby's role file and notify socket");
            EXIT_NOT_EXECUTABLE
        })?;
        self.hot = Some(Hot {
            channel,
            standby: None,
            restart_at: Some(Instant::now()),
            backoff: Backoff::new(HOT_RESTART_BASE, HOT_RESTART_CAP),
            started: Instant::now(),
        });
        self.tend_hot()
    }

    pub fn is_hot(&self) -> bool {
        self.hot.is_some()
    }

    /// Resolves when the hot standby's child needs tending: it exited, or its restart is due.
    /// Never without one. Cancel-safe.
    pub async fn hot_event(&mut self) {
        let Some(hot) = &mut self.hot else {
            return std::future::pending().await;
        };
        match (&mut hot.standby, hot.restart_at) {
            (Some(child), _) => {
                child.wait().await;
            }
            (None, Some(at)) => sleep_until(at).await,
            (None, None) => std::future::pending().await,
        }
    }

    /// Restart a hot standby child that is due, note one that exited. Err(exit status): the
    /// command cannot be run at all.
    pub fn tend_hot(&mut self) -> Result<(), u8> {
        let command = self.hot_command();
        let Some(hot) = &mut self.hot else {
            return Ok(());
        };
        if let Some(child) = &mut hot.standby {
            let Some(status) = child.try_status() else {
                return Ok(());
            };
            // What is left of its group goes with it (a standby holds nothing to stop).
            child.signal_group(Signal::SIGKILL);
            if hot.started.elapsed() >= HOT_HEALTHY_RUN {
                hot.backoff.reset();
            }
            let delay = hot.backoff.next_delay();
            warn!(%status, retry_in_ms = crate::log::ms(delay), "the hot standby's child exited: starting it again");
            hot.standby = None;
            hot.restart_at = Some(Instant::now() + delay);
            return Ok(());
        }
        match hot.restart_at {
            Some(at) if at <= Instant::now() => {}
            _ => return Ok(()),
        }
        hot.channel.drain();
        match self.reaper.spawn(&command) {
            Ok(child) => {
                info!(pid = child.pid(), "hot standby: child started as standby");
                hot.standby = Some(child);
                hot.restart_at = None;
                hot.started = Instant::now();
                Ok(())
            }
            Err(e) if is_transient(&e) => {
                let delay = hot.backoff.next_delay();
                error!(error = %e, retry_in_ms = crate::log::ms(delay), "cannot start the command for now");
                hot.restart_at = Some(Instant::now() + delay);
                Ok(())
            }
            Err(e) => {
                error!(error = %e, "cannot start the command");
                Err(match e.kind() {
                    std::io::ErrorKind::NotFound => EXIT_NOT_FOUND,
                    _ => EXIT_NOT_EXECUTABLE,
                })
            }
        }
    }

    /// Tell the hot standby child it leads: no fork, no exec. Err when it is down.
    fn promote_hot(&mut self, leadership: &Leadership, lease: &Lease) -> Result<Child, Refusal> {
        let Some(hot) = &mut self.hot else {
            return Err(Refusal::HotDown);
        };
        let Some(child) = hot.standby.take() else {
            return Err(Refusal::HotDown);
        };
        let told = Told::Leader {
            revision: leadership.revision,
            key: leadership.key.clone(),
            lease: lease.hex_id(),
        };
        hot.channel.drain();
        match hot.channel.tell(&child, &told) {
            Ok(()) => Ok(child),
            Err(e) => {
                error!(error = %e, "cannot write the role file");
                hot.standby = Some(child);
                Err(Refusal::HotDown)
            }
        }
    }

    /// Demote a hot standby's leading child: tell it, wait for its confirmation within the
    /// stop timeout (and by `D - m - H`), or stop it as a cold child is stopped.
    async fn demote_hot(
        &mut self,
        mut child: Child,
        lease: &Lease,
        stop_signal: Signal,
    ) -> Demoted {
        let Some(hot) = &mut self.hot else {
            let status = stop(&mut child, lease, stop_signal).await;
            return Demoted::Stopped(status);
        };
        let until = (Instant::now() + lease.timing().stop_timeout).min(lease.kill_at());
        hot.channel.drain();
        let told = hot.channel.tell(&child, &Told::Standby);
        if let Err(e) = &told {
            error!(error = %e, "cannot write the role file: stopping the child");
        }
        let pid = child.pid();
        let confirmed = told.is_ok()
            && tokio::select! {
                () = hot.channel.confirmed_standby(pid) => true,
                _ = child.wait() => false,
                _ = sleep_until(until) => {
                    warn!(pid = child.pid(), "the child did not confirm its demotion in time: stopping it");
                    false
                }
            };
        if confirmed {
            info!(
                pid = child.pid(),
                "hot standby: the child confirmed its demotion"
            );
            return Demoted::Confirmed(child);
        }
        let status = stop(&mut child, lease, stop_signal).await;
        Demoted::Stopped(status)
    }

    /// What a health check of the hot standby's child needs, while it stands by: None when
    /// there is none standing by.
    pub fn for_hot_checks(&self) -> Option<(Reaper, Command, Instant)> {
        let hot = self.hot.as_ref()?;
        hot.standby.as_ref()?;
        Some((self.reaper.clone(), self.hot_command(), hot.started))
    }

    /// leaderrun is exiting: the standby child goes, gracefully (no lease depends on it).
    pub async fn stop_hot(&mut self, stop_signal: Signal, grace: Duration) {
        let Some(child) = self.hot.as_mut().and_then(|h| h.standby.as_mut()) else {
            return;
        };
        child.stop(stop_signal, Instant::now() + grace).await;
    }

    /// A term ended: its hot child stands by again, or is started again after a pause.
    fn hot_back(&mut self, child: Option<Child>) {
        if let Some(hot) = &mut self.hot {
            if child.is_none() {
                hot.restart_at = Some(Instant::now() + hot.backoff.next_delay());
            }
            hot.standby = child;
        }
    }

    /// The hot standby's command: the child's, without a term's variables, with the channel's.
    fn hot_command(&self) -> Command {
        let mut env = vec![
            ("LEADERRUN_ELECTION".into(), self.election.clone()),
            ("LEADERRUN_ID".into(), self.id.clone()),
        ];
        if let Some(hot) = &self.hot {
            env.extend(hot.channel.env());
        }
        Command {
            program: self.program.clone(),
            args: self.args.clone(),
            env,
            env_remove: [&["LEADERRUN_PASSWORD"][..], &notify::VARS].concat(),
            signal_defaults: self.signal_defaults.clone(),
        }
    }

    fn command(&self, leadership: &Leadership, lease: &Lease) -> Command {
        Command {
            program: self.program.clone(),
            args: self.args.clone(),
            env: vec![
                ("LEADERRUN_ELECTION".into(), self.election.clone()),
                ("LEADERRUN_ID".into(), self.id.clone()),
                ("LEADERRUN_KEY".into(), leadership.key.clone()),
                ("LEADERRUN_REVISION".into(), leadership.revision.to_string()),
                ("LEADERRUN_LEASE".into(), lease.hex_id()),
            ],
            // The child needs the fencing variables, not leaderrun's credentials, nor systemd's
            // notify socket and watchdog, which are leaderrun's (crate::status::notify).
            env_remove: [&["LEADERRUN_PASSWORD"][..], &notify::VARS].concat(),
            signal_defaults: self.signal_defaults.clone(),
        }
    }
}

impl Tenure {
    /// A term begins with a child the gate started on `candidacy`'s lease.
    pub fn begin(
        candidacy: Candidacy,
        leadership: Leadership,
        child: Child,
        restarts: Restarts,
        watching: Option<holders::Watching>,
    ) -> Tenure {
        Tenure {
            lease: candidacy.lease,
            leadership,
            watching,
            run: Run::Running {
                child,
                started: Instant::now(),
            },
            restarts,
        }
    }

    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// For waiting on the child and on the lease's loss at once.
    pub fn run_and_lease(&mut self) -> (&mut Run, &mut Lease) {
        (&mut self.run, &mut self.lease)
    }

    pub fn leadership(&self) -> &Leadership {
        &self.leadership
    }

    /// The campaign's watch stream, once: it watches our key since the proof's read.
    pub fn take_watching(&mut self) -> Option<holders::Watching> {
        self.watching.take()
    }

    /// Stop what is left of a child that exited on its own (its group), by the deadline, before
    /// anything else happens. Nothing when no child runs.
    pub async fn stop_child(&mut self, stop_signal: Signal) {
        if let Run::Running { child, .. } = &mut self.run {
            stop(child, &self.lease, stop_signal).await;
        }
    }

    /// The pid of the running child, if any.
    pub fn pid(&self) -> Option<u32> {
        match &self.run {
            Run::Running { child, .. } => Some(child.pid()),
            _ => None,
        }
    }

    /// The end path: stop the child (stop signal, then SIGKILL by the deadline), run the demote
    /// hook (killed by the deadline), and only then release leadership: resign when `resign`
    /// (the next candidate wins at once). Returns how the child ended, if it ever ran this
    /// term, and the lease, whose revoke is the caller's last step ([`Released::revoke`]).
    pub async fn end(
        mut self,
        client: &Client,
        gate: &mut Gate,
        stop_signal: Signal,
        reason: Reason,
        resign: bool,
    ) -> (ExitStatus, Released) {
        // A hot standby's child is demoted (or stopped), unless leaderrun is exiting.
        let demote = gate.is_hot() && !matches!(reason, Reason::Shutdown);
        let run = std::mem::replace(&mut self.run, Run::Finished(ExitStatus::Code(0)));
        let (status, kept) = match run {
            Run::Running { child, .. } if demote => {
                match gate.demote_hot(child, &self.lease, stop_signal).await {
                    Demoted::Confirmed(child) => (ExitStatus::Code(0), Some(child)),
                    Demoted::Stopped(status) => {
                        crate::metrics::child_exited(crate::metrics::Exit::Stopped);
                        (status, None)
                    }
                }
            }
            Run::Running { mut child, .. } => {
                let status = stop(&mut child, &self.lease, stop_signal).await;
                crate::metrics::child_exited(crate::metrics::Exit::Stopped);
                (status, None)
            }
            Run::Restarting { last, .. } => (last, None),
            Run::Finished(status) => (status, None),
        };
        gate.hot_back(kept);
        // The child's group is gone: the demote hook, before anyone else can lead.
        let command = gate.command(&self.leadership, &self.lease);
        gate.demote(&self.lease, &command, reason).await;
        let key = resign.then(|| self.leadership.leader_key());
        (status, let_go(client, self.lease, key).await)
    }
}

/// Whether a spawn failed for want of processes or memory, which may be had again: the
/// process limit (`ulimit -u`) reached, the kernel's tables full. Not "cannot be executed".
/// The spawn's error names the program, so its kind is what is left of the errno.
fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{OutOfMemory, WouldBlock};
    matches!(e.kind(), WouldBlock | OutOfMemory)
}

/// Stop the child within its stop timeout, and in any case by `D - m`.
async fn stop(child: &mut Child, lease: &Lease, stop_signal: Signal) -> ExitStatus {
    let kill_at = (Instant::now() + lease.timing().stop_timeout).min(lease.kill_at());
    child.stop(stop_signal, kill_at).await
}

/// Resign `key` if given, then revoke the lease: the last step of both ends.
async fn release(client: &Client, lease: Lease, key: Option<&LeaderKey>) -> bool {
    let released = let_go(client, lease, key).await;
    let resigned = released.resigned;
    released.revoke(client).await;
    resigned
}

/// Resign `key` if given; the lease is then the caller's to revoke.
async fn let_go(client: &Client, lease: Lease, key: Option<&LeaderKey>) -> Released {
    let wait = lease.timing().request_timeout();
    // The key first, then the lease, as `etcdctl lock` lets go: the next candidate sees a key's
    // delete about 0.2 ms sooner than a lease's revoke, which etcd applies with more work (in
    // flight together, the revoke was applied first). The next candidate's start reads nothing
    // (the queue's proof), so the second write holds nothing up. A standby's key goes with its
    // lease.
    let resigned = match key {
        Some(key) => {
            tracing::debug!("deleting our key");
            let resigned = election::resign(client, key, wait).await;
            if resigned {
                tracing::info!(key = %String::from_utf8_lossy(key.key()), "resigned");
            }
            resigned
        }
        None => false,
    };
    Released { lease, resigned }
}

/// A lease whose leadership was let go (the child's group gone, the key resigned or not): only
/// its revoke is left. Dropped unrevoked, it would expire by itself a TTL later.
#[must_use = "revoke the lease: its keys stay until it expires"]
pub struct Released {
    lease: Lease,
    resigned: bool,
}

impl Released {
    /// Revoke the lease. After a resign the next candidate leads from the delete's answer on
    /// and its child is starting: the revoke (the lease holds no key of the election any more)
    /// waits [`crate::election::SETTLE`], as the new leader's own bookkeeping does, rather than
    /// make etcd work beside the new child's start where they share a host.
    pub async fn revoke(self, client: &Client) {
        if self.resigned {
            tokio::time::sleep(crate::election::SETTLE).await;
        }
        let wait = self.lease.timing().request_timeout();
        self.lease.revoke(client, wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fencing_token_never_goes_back() {
        let mut t = Tokens::default();
        assert_eq!(t.hand_out("e/a", 5, 6), Ok(()));
        // A restart in place: the same term, the same token.
        assert_eq!(t.hand_out("e/a", 5, 9), Ok(()));
        assert_eq!(t.hand_out("e/b", 12, 12), Ok(()));
        // etcd restored from an older copy: a new key at a lower revision, or at the very
        // revision a former term had, is refused.
        let behind = TokenBehind { token: 7, seen: 12 };
        assert_eq!(t.hand_out("e/c", 7, 8), Err(behind));
        let behind = TokenBehind {
            token: 12,
            seen: 12,
        };
        assert_eq!(t.hand_out("e/d", 12, 13), Err(behind));
        // Refusals teach nothing; a token above every revision seen passes.
        assert_eq!(t.hand_out("e/e", 13, 13), Ok(()));
    }

    #[test]
    fn only_a_lack_of_processes_or_memory_is_worth_a_retry() {
        let os = std::io::Error::from_raw_os_error;
        assert!(is_transient(&os(nix::libc::EAGAIN)));
        assert!(is_transient(&os(nix::libc::ENOMEM)));
        for e in [nix::libc::ENOENT, nix::libc::EACCES, nix::libc::ENOEXEC] {
            assert!(!is_transient(&os(e)), "{e}");
        }
    }
}
