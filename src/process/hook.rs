//! Role hooks: `--on-promote` runs after leadership is verified and before the child starts;
//! `--on-demote` after the child's group is gone and before leadership is released. Each is
//! `/bin/sh -c CMD` in a process group of its own, with the child's environment plus
//! `LEADERRUN_ROLE` (and `LEADERRUN_REASON` for a demotion), bounded by `--hook-timeout` and by
//! the deadline; its group is killed when it ends or is killed. Its output is drained and its
//! tail logged under the hook's name. One hook at a time: the supervisor awaits each in turn,
//! and nothing but its own timeout or the deadline cuts it short.

use crate::process::child::{Command, Reaper};
use crate::process::health::{self, Failure};
use std::time::Duration;
use tokio::time::Instant;
use tracing::{info, warn};

/// Which hook, by its flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Promote,
    Demote,
}

impl Kind {
    pub fn flag(self) -> &'static str {
        match self {
            Kind::Promote => "on-promote",
            Kind::Demote => "on-demote",
        }
    }

    fn role(self) -> &'static str {
        match self {
            Kind::Promote => "leader",
            Kind::Demote => "standby",
        }
    }
}

/// The hooks of a candidate, as configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    pub promote: Option<String>,
    pub demote: Option<String>,
    /// Each hook's bound (`--hook-timeout`).
    pub timeout: Duration,
}

/// Why a term ended, as the demote hook reads it in `LEADERRUN_REASON`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Exit,
    Lost,
    Shutdown,
    StepDown,
    Unhealthy,
    Vetoed,
    Preempted,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Exit => "exit",
            Reason::Lost => "lost",
            Reason::Shutdown => "shutdown",
            Reason::StepDown => "step-down",
            Reason::Unhealthy => "unhealthy",
            Reason::Vetoed => "vetoed",
            Reason::Preempted => "preempted",
        }
    }
}

impl Hooks {
    /// Run hook `kind`, if configured, with the child's environment `env`, until `timeout` or
    /// `until` (the deadline's share), whichever is first. Ok when there is none or it exited 0.
    pub async fn run(
        &self,
        kind: Kind,
        reason: Option<Reason>,
        reaper: &Reaper,
        env: &Command,
        until: Instant,
    ) -> Result<(), Failure> {
        let script = match kind {
            Kind::Promote => self.promote.as_deref(),
            Kind::Demote => self.demote.as_deref(),
        };
        let Some(script) = script else {
            return Ok(());
        };
        let started = Instant::now();
        let limit = self.timeout.min(until.saturating_duration_since(started));
        let mut env = env.clone();
        env.env.push(("LEADERRUN_ROLE".into(), kind.role().into()));
        if let Some(reason) = reason {
            env.env
                .push(("LEADERRUN_REASON".into(), reason.as_str().into()));
        }
        let (result, said) = if limit.is_zero() {
            let failure = Failure::Error("no time left before the lease deadline".into());
            (Err(failure), None)
        } else {
            health::run_cmd(script, limit, reaper, &env).await
        };
        // Microseconds: a hook takes a few milliseconds.
        let took_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let hook = kind.flag();
        let reason = reason.map(Reason::as_str);
        match &result {
            Ok(()) => info!(hook, reason, took_us, output = said, "hook done"),
            Err(e) => warn!(hook, reason, took_us, error = %e, output = said, "hook failed"),
        }
        crate::metrics::hook_ran(kind == Kind::Promote, result.is_ok());
        result
    }
}
