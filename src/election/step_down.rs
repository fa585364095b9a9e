//! Remote step-down: `leaderrun resign` asks the leader of an election to hand over.
//!
//! The request is one key of leaderrun's own, `leaderrun.resign/NAME` (never under the
//! election's prefix, where every key counts as a candidate), whose value names the leader it is
//! meant for: its key and that key's create revision. A leader acts only on a request naming its
//! own key and revision, so a request cannot unseat a later leader, and one made before its key
//! existed cannot name it. The requester writes it under a short lease of its own, so it goes
//! away by itself.
//!
//! The leader's side is optional: a role that cannot read the request key gets one warning and
//! no remote step-down; leadership is never at stake.

use crate::election::watch::{self, Ended};
use crate::election::Leadership;
use crate::etcd;
use crate::log::recurring::Recurring;
use etcd_client::{Client, Event, EventType, WatchOptions};
use std::time::Duration;
use tokio::time::sleep;

/// The request key of election `name`.
pub fn request_key(name: &str) -> String {
    format!("leaderrun.resign/{name}")
}

/// The request for the leader whose key is `key`, created at `revision`.
pub fn request_value(key: &[u8], revision: i64) -> Vec<u8> {
    let mut v = format!("{revision} ").into_bytes();
    v.extend_from_slice(key);
    v
}

/// Resolves when a step-down request for `leadership` arrives. Never resolves when the role
/// may not read the request key (said once). A broken watch is re-opened after reading the key
/// again, so a request made while it was down is not missed.
pub async fn requested(client: &Client, election: &str, leadership: &Leadership, retry: Duration) {
    let mut client = client.clone();
    let key = request_key(election);
    let wanted = request_value(leadership.key.as_bytes(), leadership.revision);
    let mut trouble = Recurring::new("watch for step-down requests");
    // A stale token is refused like a missing permission: one fresh token before believing it.
    let mut refused_once = false;
    loop {
        let read = etcd::call_as("reading step-down requests", retry * 4, &client, |mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        })
        .await;
        let seen = match read {
            Ok(resp) => {
                if resp.kvs().iter().any(|kv| kv.value() == wanted) {
                    return;
                }
                resp.header().map_or(0, |h| h.revision())
            }
            Err(e) if e.is_fatal() => return off(&key, e).await,
            Err(e) => {
                trouble.report(e);
                sleep(retry).await;
                continue;
            }
        };
        let mut seen = seen;
        let options = WatchOptions::new().with_start_revision(seen + 1);
        match client.watch(key.clone(), Some(options)).await {
            Ok(mut stream) => {
                let asked = |e: &Event| {
                    e.event_type() == EventType::Put
                        && e.kv().is_some_and(|kv| kv.value() == wanted)
                };
                match watch::follow(&mut client, &mut stream, asked, &mut seen, &mut trouble).await
                {
                    Ended::Event => return,
                    Ended::Canceled(why) => {
                        let refused = why.contains("permission denied");
                        if refused && refused_once {
                            return off(&key, why).await;
                        }
                        refused_once |= refused;
                        trouble.report(format_args!("canceled: {why}"));
                    }
                    Ended::Compacted => trouble.report("canceled: history compacted"),
                    Ended::Broken(why) => trouble.report(why),
                }
            }
            Err(e) => trouble.report(crate::etcd::cause(&e)),
        }
        sleep(retry).await;
    }
}

/// The role cannot read the request key: say so once, and never resolve.
async fn off(key: &str, why: impl std::fmt::Display) {
    tracing::warn!(
        %key,
        error = %why,
        "remote step-down (leaderrun resign) is off: the user's role cannot read this key"
    );
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_names_one_key_and_its_revision() {
        assert_eq!(request_key("web"), "leaderrun.resign/web");
        assert_eq!(request_value(b"web/694d", 7), b"7 web/694d".to_vec());
        // A later leader of the same lease-less name would differ in its revision.
        assert_ne!(
            request_value(b"web/694d", 7),
            request_value(b"web/694d", 70)
        );
    }
}
