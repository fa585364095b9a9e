//! Following a watch stream: the one loop behind every wait on a key (our key deleted, a
//! step-down request arriving, a holder ahead gone). Re-opening, and reading what a broken
//! watch may have missed, stay with each caller: what to read differs.

use crate::log::recurring::Recurring;
use etcd_client::{Client, Event, WatchStream};

/// How following a stream ended.
pub enum Ended {
    /// An event the caller waits for arrived.
    Event,
    /// The history from the watch's start revision was compacted: what happened since must be
    /// read.
    Compacted,
    /// etcd cancelled the watch (a refused permission, a stale token), with its reason. The
    /// token has been refreshed: a watch opened with a stale one is cancelled as "permission
    /// denied", so it is refreshed before the caller re-opens.
    Canceled(String),
    /// The stream failed or ended.
    Broken(String),
}

/// Read `stream` until an event matches `wanted`, or until it stops. Every event of the
/// answer that holds the match is given to `wanted` (one revision can delete several watched
/// keys: a caller may weigh them all). `seen` follows the revisions the stream reports;
/// `trouble` is cleared by every answer (the watch works).
pub async fn follow(
    client: &mut Client,
    stream: &mut WatchStream,
    mut wanted: impl FnMut(&Event) -> bool,
    seen: &mut i64,
    trouble: &mut Recurring,
) -> Ended {
    loop {
        match stream.message().await {
            Ok(Some(resp)) => {
                // Not `any`: it would stop at the first match.
                let matched = resp.events().iter().filter(|e| wanted(e)).count();
                if matched > 0 {
                    return Ended::Event;
                }
                if resp.compact_revision() > 0 {
                    return Ended::Compacted;
                }
                if resp.canceled() {
                    let reason = resp.cancel_reason().to_string();
                    return Ended::Canceled(match client.refresh_token().await {
                        Ok(()) => reason,
                        Err(e) => format!("{reason}; authenticating: {}", crate::etcd::cause(&e)),
                    });
                }
                if let Some(h) = resp.header() {
                    *seen = (*seen).max(h.revision());
                }
                trouble.clear();
            }
            Ok(None) => return Ended::Broken("watch ended".into()),
            Err(e) => return Ended::Broken(crate::etcd::cause(&e)),
        }
    }
}
