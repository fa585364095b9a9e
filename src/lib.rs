//! leaderrun: run a command on exactly one host at a time, chosen by etcd leader election.
//!
//! The binary is a thin shell over [`cli::main`]; the role is published on [`status::Status`].
//! The modules stand in layers, each using only those above it in this list:
//!
//! - `metrics`, `log`, `input_file`, `backoff`: counters, log lines, bounded reads, the one
//!   backoff; no domain knowledge.
//! - `etcd`: the connection (TLS included) and the one classification of etcd errors.
//! - `error`: leaderrun's errors and their exit statuses.
//! - `lease`: the timing model and the keepalive loop that moves the deadline.
//! - `election`: keys, the queue, verification, watches, step-down requests, run records.
//! - `process`: spawn, stop and reap the child; the guardian; signals; limits; health checks.
//! - `status`: the published role and facts, `/leader` and `/metrics`, sd_notify.
//! - `config`: the option table, its layers (flags, environment, file) and the settings.
//! - `supervisor`: the state machine, the term with its start gate and end path, restarts.
//! - `cli`: argv to exit status, and the subcommands.
//!
//! The safety rules each live in one place: the deadline in `lease`; the start gate (verify
//! before start) and the end path (stop before release) in `supervisor::tenure`; stop and reap
//! in `process::child`.

mod backoff;
pub mod cli;
mod config;
mod election;
mod error;
mod etcd;
mod input_file;
mod lease;
mod log;
mod metrics;
mod process;
pub mod status;
mod supervisor;

/// The signals passed on to the child's process group (tests use the list).
pub use process::signals::FORWARDED as FORWARDED_SIGNALS;
