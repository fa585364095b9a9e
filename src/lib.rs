//! leaderrun: run a command on exactly one host at a time, chosen by etcd leader election.
//!
//! The binary is a thin shell over [`cli::main`]; the role is published on [`status::Status`].
//! The safety rules each live in one place: the deadline in `timing` and `lease`; the start
//! gate (verify before start) and the end path (stop before release) in `term`; stop and reap
//! in `child`.

mod backoff;
mod child;
pub mod cli;
mod config;
mod config_file;
mod election;
mod error;
mod etcd;
mod flags;
pub mod generate;
mod guardian;
mod health;
mod holders;
mod http;
mod http1;
mod input_file;
mod job;
mod leader;
mod lease;
mod limits;
mod log;
mod metrics;
mod notify;
mod resign;
mod restart;
mod signals;
mod spawn;
pub mod status;
mod step_down;
mod supervisor;
mod term;
mod timing;
mod tls;
mod trouble;
mod watch;

/// The signals passed on to the child's process group (tests use the list).
pub use signals::FORWARDED as FORWARDED_SIGNALS;
