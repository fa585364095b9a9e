//! Who should lead: priorities, the fail-back policy, and a switchover to a named candidate.
//!
//! The election keys stay as `etcdctl elect` and Go write them (the first-created live key
//! leads), so a preference is carried out by moving keys, never by reading them differently:
//! a waiting candidate that has a candidate of higher priority behind it *passes*: it deletes
//! its key and writes it again, behind that one ([`should_pass`]). Waiting candidates do it as
//! soon as they see the better one join, so when leadership falls free the next key in line is
//! already the best, and the handover reads and writes nothing more than without priorities.
//!
//! What each candidate says of itself is one key of leaderrun's own, outside the election's
//! prefix: `leaderrun.candidates/NAME/<lease hex>`, a small JSON object ([`Published`]) on the
//! candidate's lease, written in the same transaction as its election key (so both have the same
//! create revision, and go together). A candidate with neither `--priority` nor `--preempt`
//! writes none (its role needs no permission there) and counts as priority 0 with no
//! preemption, as does an `etcdctl elect`.
//!
//! A switchover (`leaderrun resign --to ID`) writes `leaderrun.candidates/NAME/switchover`,
//! naming the target's key and create revision, on the requester's short lease: every waiting
//! candidate ahead of the target passes, then the leader is asked to step down.

use crate::etcd::{self, EtcdError};
use etcd_client::{Client, GetOptions, KeyValue, WatchOptions};
use std::time::Duration;

/// The highest `--priority`.
pub const MAX_PRIORITY: u32 = 1000;

/// Where candidates say who they are: `leaderrun.candidates/NAME/`.
pub fn prefix(election: &str) -> String {
    format!("leaderrun.candidates/{election}/")
}

/// The key of the candidate on `lease`.
pub fn key(election: &str, lease: i64) -> String {
    format!("{}{lease:x}", prefix(election))
}

/// The switchover request's key (not a lease id: it has letters beyond hex).
pub fn switchover_key(election: &str) -> String {
    format!("{}switchover", prefix(election))
}

/// The switchover request's value: the target's election key and its create revision.
pub fn switchover_value(target_key: &str, revision: i64) -> String {
    format!("{revision} {target_key}")
}

/// What a candidate publishes of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub id: String,
    pub priority: u32,
    /// `--preempt`: None is `never`.
    pub preempt: Option<Duration>,
    /// When it joined, in milliseconds since the epoch (its host's clock).
    pub since_ms: u64,
    /// `--hot-standby`: its child runs as a standby and is promoted in place.
    pub hot: bool,
}

impl Published {
    /// The JSON value of its key.
    pub fn value(&self) -> String {
        serde_json::json!({
            "id": self.id,
            "priority": self.priority,
            "preempt": preempt_word(self.preempt),
            "since_ms": self.since_ms,
            "hot": self.hot,
        })
        .to_string()
    }

    /// Read a value some candidate wrote: None when it is not one (a foreign write), so that
    /// nothing in etcd can make a candidate pass but a well-formed, higher priority.
    pub fn parse(value: &[u8]) -> Option<Published> {
        let v: serde_json::Value = serde_json::from_slice(value).ok()?;
        let priority = v.get("priority")?.as_u64()?;
        let priority = u32::try_from(priority)
            .ok()
            .filter(|p| *p <= MAX_PRIORITY)?;
        let preempt = match v.get("preempt").and_then(|p| p.as_str()) {
            None | Some("never") => None,
            Some(d) => Some(humantime::parse_duration(d).ok()?),
        };
        Some(Published {
            id: v.get("id").and_then(|i| i.as_str()).unwrap_or("").into(),
            priority,
            preempt,
            since_ms: v.get("since_ms").and_then(|s| s.as_u64()).unwrap_or(0),
            hot: v.get("hot").and_then(|h| h.as_bool()).unwrap_or(false),
        })
    }
}

/// `never`, or the duration as humantime writes it.
pub fn preempt_word(preempt: Option<Duration>) -> String {
    match preempt {
        None => "never".into(),
        Some(d) => humantime::format_duration(d).to_string(),
    }
}

/// One key under [`prefix`], as a waiting candidate weighs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A candidate, with the create revision of its key (its election key's) and its priority.
    Candidate { revision: i64, priority: u32 },
    /// A switchover to the election key `target`, created at `revision`.
    Switchover { target: String, revision: i64 },
    /// Anything else: ignored.
    Other,
}

impl Seen {
    pub fn of(election: &str, kv: &KeyValue) -> Seen {
        let key = String::from_utf8_lossy(kv.key());
        let Some(rest) = key.strip_prefix(&prefix(election)) else {
            return Seen::Other;
        };
        if rest == "switchover" {
            let value = String::from_utf8_lossy(kv.value());
            return match value.split_once(' ') {
                Some((rev, target)) => match rev.parse() {
                    Ok(revision) => Seen::Switchover {
                        target: target.into(),
                        revision,
                    },
                    Err(_) => Seen::Other,
                },
                None => Seen::Other,
            };
        }
        // A candidate's key is named by its lease, and lives on it.
        if kv.lease() == 0 || rest != format!("{:x}", kv.lease()) {
            return Seen::Other;
        }
        match Published::parse(kv.value()) {
            Some(p) => Seen::Candidate {
                revision: kv.create_revision(),
                priority: p.priority,
            },
            None => Seen::Other,
        }
    }
}

/// Where we wait: our key, its create revision, our priority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place<'a> {
    pub key: &'a str,
    pub revision: i64,
    pub priority: u32,
}

/// Whether a waiting candidate at `place` should move behind the others, having seen `seen`:
/// a switchover names a candidate behind us (not us), or, unless a switchover names us, a
/// candidate of higher priority is behind us. Keys ahead of ours never make us pass, so a
/// pass (which puts our key behind every key there is) cannot be followed by another but for a
/// candidate that joins later.
pub fn should_pass(place: &Place, seen: &[Seen]) -> bool {
    let targeted = seen.iter().any(
        |s| matches!(s, Seen::Switchover { target, revision } if target == place.key && *revision == place.revision),
    );
    seen.iter().any(|s| match s {
        Seen::Switchover { target, revision } => target != place.key && *revision > place.revision,
        Seen::Candidate { revision, priority } => {
            !targeted && *revision > place.revision && *priority > place.priority
        }
        Seen::Other => false,
    })
}

/// Everything under [`prefix`], with the revision it was read at.
pub async fn read(
    client: &Client,
    election: &str,
    wait: Duration,
) -> Result<(Vec<KeyValue>, i64), EtcdError> {
    let options = GetOptions::new().with_prefix();
    let mut resp = etcd::call_as(
        "reading the candidates' priorities",
        wait,
        client,
        |mut c| {
            let (key, options) = (prefix(election), options.clone());
            async move { c.get(key, Some(options)).await }
        },
    )
    .await?;
    let revision = resp.header().map_or(0, |h| h.revision());
    Ok((resp.take_kvs(), revision))
}

/// Fail-back (`--preempt after`): resolves when a candidate of higher priority than ours
/// (`priority`) has been waiting, the same key all along, for `after` as we saw it, confirmed
/// by a read of etcd right then. So an etcd that does not answer never makes a leader step
/// down, and a candidate that joins and leaves again starts its wait anew each time: leadership
/// cannot bounce faster than once per `after`. An unhealthy candidate is not waiting (it
/// withdraws its key until healthy). Never resolves for a role that may not read the range
/// (said once).
pub async fn preempted(
    client: &Client,
    election: &str,
    own_lease: i64,
    priority: u32,
    after: Duration,
    retry: Duration,
) {
    use std::collections::HashMap;
    use tokio::time::{sleep, sleep_until, Instant};
    let own = key(election, own_lease);
    let mut waiting: HashMap<(Vec<u8>, i64), Instant> = HashMap::new();
    let mut watcher = client.clone();
    loop {
        let (kvs, revision) = match read(client, election, retry * 4).await {
            Ok(read) => read,
            Err(e) if e.is_fatal() => {
                tracing::warn!(range = %prefix(election), error = %e, "--preempt is off: the user's role cannot read this range");
                return std::future::pending().await;
            }
            Err(_) => {
                sleep(retry).await;
                continue;
            }
        };
        let now = Instant::now();
        let better: Vec<(Vec<u8>, i64)> = kvs
            .iter()
            .filter(|kv| kv.key() != own.as_bytes())
            .filter(|kv| matches!(Seen::of(election, kv), Seen::Candidate { priority: p, .. } if p > priority))
            .map(|kv| (kv.key().to_vec(), kv.create_revision()))
            .collect();
        waiting.retain(|k, _| better.contains(k));
        for b in better {
            waiting.entry(b).or_insert(now);
        }
        let due = waiting.values().min().map(|since| *since + after);
        if due.is_some_and(|d| d <= now) {
            return;
        }
        // Until the first is due, or anything under the prefix changes.
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let changed = async {
            match watcher.watch(prefix(election), Some(options)).await {
                Ok(mut stream) => {
                    while let Ok(Some(resp)) = stream.message().await {
                        if !resp.events().is_empty() || resp.canceled() {
                            return;
                        }
                    }
                    sleep(retry).await
                }
                Err(_) => sleep(retry).await,
            }
        };
        tokio::select! {
            _ = changed => {}
            _ = sleep_until(due.unwrap_or(now)), if due.is_some() => {}
        }
    }
}

/// The policies of the others that differ from ours (`preempt`), for one warning: each as
/// `id (--preempt X)`.
pub fn disagreeing(ours: Option<Duration>, others: &[Published]) -> Vec<String> {
    others
        .iter()
        .filter(|p| p.preempt != ours)
        .map(|p| format!("{} (--preempt {})", p.id, preempt_word(p.preempt)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(revision: i64, priority: u32) -> Place<'static> {
        Place {
            key: "web/ours",
            revision,
            priority,
        }
    }

    fn candidate(revision: i64, priority: u32) -> Seen {
        Seen::Candidate { revision, priority }
    }

    #[test]
    fn a_waiting_candidate_passes_only_a_better_one_behind_it() {
        // Higher behind: pass.
        assert!(should_pass(&place(10, 0), &[candidate(12, 5)]));
        // Higher ahead (it waits before us anyway), equal or lower behind: stay.
        assert!(!should_pass(&place(10, 0), &[candidate(8, 5)]));
        assert!(!should_pass(&place(10, 5), &[candidate(12, 5)]));
        assert!(!should_pass(&place(10, 5), &[candidate(12, 1)]));
        assert!(!should_pass(&place(10, 5), &[]));
        // Our own entry (same revision) never counts.
        assert!(!should_pass(&place(10, 0), &[candidate(10, 5)]));
    }

    #[test]
    fn a_switchover_moves_everyone_ahead_of_its_target_and_holds_the_target() {
        let to = |target: &str, revision| Seen::Switchover {
            target: target.into(),
            revision,
        };
        // Ahead of the target: pass, whatever the priorities.
        assert!(should_pass(&place(10, 9), &[to("web/t", 12)]));
        // Behind it: stay.
        assert!(!should_pass(&place(14, 0), &[to("web/t", 12)]));
        // The target itself stays, even with a better one behind it.
        let seen = [to("web/ours", 10), candidate(12, 7)];
        assert!(!should_pass(&place(10, 0), &seen));
        // A switchover to our key as it was before (another revision) is not to us.
        assert!(should_pass(
            &place(10, 0),
            &[to("web/ours", 4), candidate(12, 7)]
        ));
    }

    #[test]
    fn a_published_value_reads_back_and_garbage_is_nothing() {
        let p = Published {
            id: "host-a".into(),
            priority: 7,
            preempt: Some(Duration::from_secs(30)),
            since_ms: 1_700_000_000_000,
            hot: true,
        };
        assert_eq!(Published::parse(p.value().as_bytes()), Some(p.clone()));
        let never = Published { preempt: None, ..p };
        assert!(never.value().contains("\"never\""));
        assert_eq!(Published::parse(never.value().as_bytes()), Some(never));
        for bad in [
            &b"7"[..],
            b"{}",
            b"{\"priority\":-1}",
            b"{\"priority\":1001}",
            b"{\"priority\":\"7\"}",
            b"{\"priority\":7,\"preempt\":\"soon\"}",
            b"\xff",
        ] {
            assert_eq!(Published::parse(bad), None, "{:?}", bad);
        }
    }

    #[test]
    fn policies_that_differ_are_named() {
        let p = |id: &str, preempt| Published {
            id: id.into(),
            priority: 1,
            preempt,
            since_ms: 0,
            hot: false,
        };
        let others = [p("a", None), p("b", Some(Duration::from_secs(30)))];
        assert_eq!(
            disagreeing(Some(Duration::from_secs(30)), &others),
            vec!["a (--preempt never)"]
        );
        assert_eq!(disagreeing(None, &others), vec!["b (--preempt 30s)"]);
    }
}
