//! The supervisor's role, published on a watch channel: systemd's notifications (`notify`) and
//! the HTTP status endpoint (`http`) read it from here. Every change passes through
//! [`Status::set`], which also counts terms and child starts for the metrics.

pub mod http;
pub mod http1;
pub mod notify;

use crate::lease::LeaseView;
use crate::process::health::Health;
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// No lease yet: etcd not reached, or between candidacies.
    Connecting,
    /// Holding a lease and campaigning; another candidate leads.
    Standby,
    /// Elected, verified; the child runs (pid), or waits to be restarted in place (None).
    Leading {
        key: String,
        revision: i64,
        pid: Option<u32>,
    },
    /// Leadership is ending (lost, or the child exited): the child's group is being stopped;
    /// then leaderrun campaigns again, or exits.
    Stopping,
    /// leaderrun is exiting (TERM/INT, or nothing left to do): the child, if any, is being
    /// stopped, then the process ends.
    Exiting,
}

/// The sending side, owned by the supervisor.
#[derive(Debug)]
pub struct Status {
    tx: watch::Sender<Role>,
    /// The child's health while leading with a health check; None otherwise.
    health: Arc<watch::Sender<Option<Health>>>,
    /// The current lease: its own published state, read, never copied.
    lease: watch::Sender<Option<LeaseView>>,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            tx: watch::Sender::new(Role::Connecting),
            health: Arc::new(watch::Sender::new(None)),
            lease: watch::Sender::new(None),
        }
    }
}

impl Status {
    /// Publish `role`; subscribers wake only when it changed. Only the supervisor's state loop
    /// calls this.
    pub(crate) fn set(&self, role: Role) {
        self.tx.send_if_modified(|r| {
            if *r == role {
                return false;
            }
            count(r, &role);
            *r = role;
            true
        });
    }

    /// Follow the role: the HTTP status endpoint and sd_notify read it from here.
    pub fn subscribe(&self) -> watch::Receiver<Role> {
        self.tx.subscribe()
    }

    /// Where the health check reports (the supervisor's leading state).
    pub(crate) fn health_reporter(&self) -> HealthReporter {
        HealthReporter(self.health.clone())
    }

    /// The current lease (the supervisor, on every grant).
    pub(crate) fn set_lease(&self, lease: LeaseView) {
        self.lease.send_replace(Some(lease));
    }

    /// Follow the current lease: the status endpoint reads D from it.
    pub fn subscribe_lease(&self) -> watch::Receiver<Option<LeaseView>> {
        self.lease.subscribe()
    }

    /// Follow the child's health.
    pub fn subscribe_health(&self) -> watch::Receiver<Option<Health>> {
        self.health.subscribe()
    }
}

/// Publishes the child's health; subscribers wake only when it changed.
#[derive(Debug, Clone)]
pub(crate) struct HealthReporter(Arc<watch::Sender<Option<Health>>>);

impl HealthReporter {
    pub fn set(&self, health: Option<Health>) {
        self.0.send_if_modified(|h| {
            let changed = *h != health;
            *h = health;
            changed
        });
    }
}

/// Terms and child starts, from the change `from` → `to` (seen here, every one of them, where a
/// subscriber may see only the latest).
fn count(from: &Role, to: &Role) {
    let Role::Leading { pid: Some(pid), .. } = to else {
        return;
    };
    match from {
        Role::Leading { pid: before, .. } => {
            // A restart in place: the same term, a new child.
            if *before != Some(*pid) {
                crate::metrics::child_started();
            }
        }
        _ => {
            crate::metrics::term_started();
            crate::metrics::child_started();
        }
    }
}
