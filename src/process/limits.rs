//! The resource limits leaderrun needs for itself: a stack for its own start (argument parsing
//! alone takes more than an absurd `ulimit -s` leaves), and file descriptors for its
//! connections. A soft limit below the need is raised, as far as the hard limit allows (Go's
//! runtime does the same for descriptors); below the hard limit, leaderrun ends with one line
//! before anything starts, where it would otherwise abort on a stack overflow, panic, or retry
//! a connection for ever. The child gets the limits leaderrun was started with
//! ([`for_child`]).

use crate::error::Error;
use nix::libc;
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use std::sync::Mutex;

/// The stack leaderrun needs: a run (lead, stop, resign) takes about 160 KiB; three times that.
const NEEDED_STACK: u64 = 512 * 1024;
/// What a raised stack limit becomes (the usual default), the hard limit permitting.
const RAISED_STACK: u64 = 8 * 1024 * 1024;
/// Descriptors beyond the connections: standard streams, the runtime's, the guardian's pipe,
/// the files leaderrun reads, a health check's pipes.
const BASE_FILES: u64 = 64;
/// Per endpoint: a connection, another while it is replaced, and the lease's keepalive stream.
const FILES_PER_ENDPOINT: u64 = 4;
/// What a raised descriptor limit becomes at least (the usual default).
const RAISED_FILES: u64 = 1024;

/// The soft limits leaderrun raised, as they were: (resource, soft, hard).
static ORIGINAL: Mutex<Vec<(Resource, u64, u64)>> = Mutex::new(Vec::new());

/// Make sure the stack is large enough for leaderrun. Call it first: the argument parsing
/// after it is what needs the stack.
pub fn stack() -> Result<(), Error> {
    raise(Resource::RLIMIT_STACK, NEEDED_STACK, RAISED_STACK).map_err(|(soft, hard)| {
        Error::Limit(format!(
            "the stack limit is {} KiB (ulimit -s {}, hard limit {} KiB): leaderrun needs at \
             least {} KiB",
            soft / 1024,
            soft / 1024,
            hard / 1024,
            NEEDED_STACK / 1024
        ))
    })
}

/// Make sure there are descriptors enough for `endpoints` etcd endpoints and, if `serving`,
/// the status endpoint's connections (`connections` at most).
pub fn files(endpoints: usize, serving: Option<usize>) -> Result<(), Error> {
    let needed = files_needed(endpoints, serving);
    raise(Resource::RLIMIT_NOFILE, needed, needed.max(RAISED_FILES)).map_err(|(soft, hard)| {
        Error::Limit(format!(
            "the open file limit is {soft} (ulimit -n {soft}, hard limit {hard}): leaderrun needs \
             at least {needed} for {endpoints} endpoint{}{}",
            if endpoints == 1 { "" } else { "s" },
            if serving.is_some() {
                " and --status-addr"
            } else {
                ""
            }
        ))
    })
}

fn files_needed(endpoints: usize, serving: Option<usize>) -> u64 {
    BASE_FILES + FILES_PER_ENDPOINT * endpoints as u64 + serving.unwrap_or(0) as u64
}

/// Raise `resource`'s soft limit to `to` (or the hard limit, if lower) when it is below
/// `needed`; Err((soft, hard)) when the hard limit is below `needed` too.
fn raise(resource: Resource, needed: u64, to: u64) -> Result<(), (u64, u64)> {
    // Unreadable: nothing is known to be wrong; go on as before.
    let Ok((soft, hard)) = getrlimit(resource) else {
        return Ok(());
    };
    if soft >= needed {
        return Ok(());
    }
    if hard < needed {
        return Err((soft, hard));
    }
    if setrlimit(resource, to.min(hard), hard).is_ok() {
        let mut original = ORIGINAL.lock().unwrap_or_else(|e| e.into_inner());
        if !original.iter().any(|(r, _, _)| *r == resource) {
            original.push((resource, soft, hard));
        }
    }
    Ok(())
}

/// The limits the child gets back (those leaderrun raised, as they were), for
/// `setrlimit` between its fork and its exec.
pub fn for_child() -> Vec<(Resource, libc::rlimit)> {
    let original = ORIGINAL.lock().unwrap_or_else(|e| e.into_inner());
    original
        .iter()
        .map(|&(resource, soft, hard)| {
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            (resource, limit)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_needed_grow_with_the_endpoints_and_the_status_endpoint() {
        assert_eq!(files_needed(1, None), 68);
        assert_eq!(files_needed(3, None), 76);
        assert_eq!(files_needed(1, Some(128)), 196);
    }

    #[test]
    fn a_limit_high_enough_is_left_alone() {
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert!(raise(Resource::RLIMIT_NOFILE, 1, 1).is_ok());
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap(), (soft, hard));
        assert!(for_child().is_empty());
    }
}
