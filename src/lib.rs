//! leaderrun: run a command on exactly one host at a time, chosen by etcd leader election.
//!
//! The binary is a thin shell over [`cli::main`]; the safety rules each live in one place:
//! the deadline in [`timing`] and [`lease`], verify-before-start in [`election::verify`],
//! stop and reap in [`child`].

pub mod child;
pub mod cli;
pub mod config;
pub mod election;
pub mod error;
pub mod etcd;
pub mod flags;
pub mod guardian;
pub mod job;
pub mod leader;
pub mod lease;
pub mod log;
pub mod restart;
pub mod signals;
pub mod status;
pub mod supervisor;
pub mod timing;
