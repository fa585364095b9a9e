//! The supervisor's role, published on a watch channel: logs, and later the HTTP status endpoint
//! and metrics, read it from here.

use tokio::sync::watch;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// No lease yet: etcd not reached, or between candidacies.
    Connecting,
    /// Holding a lease and campaigning; another candidate leads.
    Standby,
    /// Elected, verified; the child runs.
    Leading {
        key: String,
        revision: i64,
        pid: u32,
    },
    /// Leadership is ending: the child is being stopped.
    Stopping,
}

/// The sending side, owned by the supervisor.
#[derive(Debug)]
pub struct Status {
    tx: watch::Sender<Role>,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            tx: watch::Sender::new(Role::Connecting),
        }
    }
}

impl Status {
    pub fn set(&self, role: Role) {
        self.tx.send_if_modified(|r| {
            if *r == role {
                return false;
            }
            *r = role;
            true
        });
    }

    pub fn subscribe(&self) -> watch::Receiver<Role> {
        self.tx.subscribe()
    }

    pub fn is_leading(&self) -> bool {
        matches!(*self.tx.borrow(), Role::Leading { .. })
    }
}
