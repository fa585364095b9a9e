//! The child and everything that touches processes: spawning into its own group, stopping and
//! reaping, the guardian that outlives a crashed supervisor, signals, resource limits, and the
//! health checks (which run commands of their own).

pub mod child;
pub mod guardian;
pub mod health;
pub mod hook;
pub mod limits;
pub mod role;
pub mod signals;
pub mod spawn;
