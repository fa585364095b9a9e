//! The queue, kept by the client: at most N children across all hosts at once (`--holders N`,
//! like `consul lock -n`; N = 1 by default). The first N candidates by create revision hold.
//!
//! As Go's concurrency.Election does, and not through etcd's Campaign RPC: the key is
//! `NAME/<lease hex>` with the id as value, on the candidacy's lease (so `etcdctl elect` and Go
//! see the same queue), written by a put-if-absent; its create revision is the fencing token.
//! Waiting is a watch on the keys ahead, so a deletion reaches the candidate in one event and
//! the start gate's verification is the one read that follows (it tells whether others are
//! still ahead), without the server's own read and answer in between;
//! and nothing is left pending in a member that hangs (a server-side campaign abandoned there
//! resigns when the member resumes).
//!
//! Waiting without a herd: a candidate with r keys ahead of it (created before its own) holds
//! when r < N. It watches exactly the N nearest keys ahead for deletion: while those N exist, at
//! least N keys are ahead, and nothing else can move it into the first N (create revisions only
//! grow, so no key can appear ahead of it). Watching only the nearest one would miss a deletion
//! further ahead, which moves it up as well. Each deletion wakes at most N candidates.
//!
//! Every candidate of one election must use the same N: each N > 1 candidate writes
//! `leaderrun.holders/NAME/<lease hex>` = N on its lease, with its candidate key, then checks
//! that the election agrees ([`agree`]); a default leaderrun checks that prefix is empty
//! ([`check_single`]).

use crate::election::{classify, Candidate};
use crate::etcd::{self, EtcdError};
use crate::log::escape_controls;
use crate::trouble::Trouble;
use crate::watch::{self, Ended};
use etcd_client::{
    Client, Compare, CompareOp, Event, EventType, GetOptions, GetResponse, KeyValue, LeaderKey,
    PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, WatchFilterType, WatchOptions,
};
use std::time::Duration;
use tokio::time::sleep;

/// The largest `--holders`: every waiting candidate watches up to N keys, on one stream.
pub const MAX_HOLDERS: u32 = 1000;

/// Where each N > 1 candidate says its N: `leaderrun.holders/NAME/`, outside the election's
/// prefix (every key under `NAME/` takes part in the election).
pub fn prefix(election: &str) -> String {
    format!("leaderrun.holders/{election}/")
}

/// How the wait for a place ended: what the start gate's verification is to expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// A read showed fewer than N keys ahead: the verification should agree.
    Read,
    /// A watched key ahead was deleted: others may still be ahead.
    Deleted,
}

/// Why an N-holder campaign ended without a place.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    /// The election's candidates use another N: the one line to exit 2 with.
    #[error("{0}")]
    Disagree(String),
}

/// Campaign for one of `n` places with `lease`: write our key, check that the election agrees
/// on `n`, then wait until fewer than `n` keys are ahead of ours. Blocks for as long as `n`
/// others hold. One campaign per lease: the caller ends the
/// lease after a failure (only an error that never reached etcd may be retried on it, and the
/// write below is idempotent for that).
pub async fn campaign(
    client: &Client,
    election: &str,
    id: &str,
    lease: i64,
    n: u32,
    wait: Duration,
    retry: Duration,
) -> Result<(LeaderKey, Turn), Refused> {
    let ours = enter(client, election, id, lease, n, wait).await?;
    if n > 1 {
        agree(client, election, n, wait).await?;
    }
    let turn = wait_turn(client, election, &ours, n, wait, retry).await?;
    Ok((ours, turn))
}

/// One transaction: if our key does not exist, put it (`id`, on `lease`) and our holders key
/// (`n`, on `lease`); else read it (a retry of a write that did reach etcd). Returns our key
/// with its create revision.
async fn enter(
    client: &Client,
    election: &str,
    id: &str,
    lease: i64,
    n: u32,
    wait: Duration,
) -> Result<LeaderKey, EtcdError> {
    let key = format!("{election}/{lease:x}");
    let holders_key = format!("{}{lease:x}", prefix(election));
    let on_lease = || Some(PutOptions::new().with_lease(lease));
    // One holder says nothing under the holders prefix: its role needs no permission there.
    let mut put = vec![TxnOp::put(key.clone(), id, on_lease())];
    if n > 1 {
        put.push(TxnOp::put(holders_key, n.to_string(), on_lease()));
    }
    put.push(TxnOp::get(key.clone(), None));
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then(put)
        .or_else([TxnOp::get(key.clone(), None)]);
    let resp = etcd::call_as("campaigning", wait, client, |mut c| {
        let txn = txn.clone();
        async move { c.txn(txn).await }
    })
    .await?;
    let ours = resp.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(get) => get.kvs().first().cloned(),
        _ => None,
    });
    let ours = ours.ok_or_else(|| EtcdError::Unexpected {
        what: "campaigning",
        detail: format!("our key {key} is not there after writing it"),
    })?;
    Ok(LeaderKey::new()
        .with_name(election)
        .with_key(key)
        .with_rev(ours.create_revision())
        .with_lease(lease))
}

/// Every candidate of the election uses `n`: each holders value is `n`, and each live
/// candidate under `NAME/` has a holders key (one without is an `etcdctl elect`, or a leaderrun
/// with the default `--holders 1`). Both prefixes are read in one transaction, at one revision.
async fn agree(client: &Client, election: &str, n: u32, wait: Duration) -> Result<(), Refused> {
    let all = || Some(GetOptions::new().with_prefix());
    let reads = [
        TxnOp::get(prefix(election), all()),
        TxnOp::get(format!("{election}/"), all()),
    ];
    let (said, candidates, _) = etcd::read_pair("checking --holders", wait, client, reads).await?;
    let holders_prefix = prefix(election);
    let said: Vec<(String, String)> = said
        .kvs()
        .iter()
        .filter_map(|kv| {
            let key = String::from_utf8_lossy(kv.key());
            let lease = key.strip_prefix(&holders_prefix)?.to_string();
            Some((lease, String::from_utf8_lossy(kv.value()).into_owned()))
        })
        .collect();
    let live: Vec<String> = candidates
        .kvs()
        .iter()
        .filter(|kv| classify(election, kv) == Candidate::Live)
        .map(|kv| format!("{:x}", kv.lease()))
        .collect();
    match disagreement(election, n, &said, &live) {
        Some(line) => Err(Refused::Disagree(line)),
        None => Ok(()),
    }
}

/// What is wrong with an election whose candidates said `said` (lease hex, value) under the
/// holders prefix and whose live candidates have the leases `live`, for a candidate with `n`.
fn disagreement(
    election: &str,
    n: u32,
    said: &[(String, String)],
    live: &[String],
) -> Option<String> {
    let election = escape_controls(election);
    let rule = "every candidate of one election must use the same --holders";
    // A nested election's keys (`NAME/inner/...`) are not this election's.
    let said: Vec<&(String, String)> = said.iter().filter(|(l, _)| !l.contains('/')).collect();
    if let Some((_, other)) = said.iter().find(|(_, v)| v.parse::<u32>() != Ok(n)) {
        return Some(format!(
            "--holders {n} disagrees with a candidate of the election {election} that has \
             --holders {}: {rule}",
            escape_controls(other)
        ));
    }
    if live.iter().any(|l| !said.iter().any(|(s, _)| s == l)) {
        return Some(format!(
            "--holders {n}: the election {election} has a candidate without --holders (a \
             leaderrun with the default --holders 1, or etcdctl elect): {rule}"
        ));
    }
    None
}

/// A default (`--holders 1`) candidate joins only an election without N-holder candidates:
/// Some(the line to exit 2 with) when `leaderrun.holders/NAME/` has a key. A role that cannot
/// read that prefix (or an etcd that does not answer) skips the check: it is a courtesy, not a
/// safety rule, and a candidate's role need not cover it.
pub async fn check_single(client: &Client, election: &str, wait: Duration) -> Option<String> {
    let options = GetOptions::new().with_prefix().with_limit(1);
    let read = etcd::call_as("checking --holders", wait, client, |mut c| {
        let options = options.clone();
        let key = prefix(election);
        async move { c.get(key, Some(options)).await }
    });
    let kv = match read.await {
        Ok(resp) => resp.kvs().first().cloned()?,
        Err(e) => {
            tracing::debug!(error = %e, range = %prefix(election), "cannot check --holders of the other candidates; campaigning");
            return None;
        }
    };
    let key = String::from_utf8_lossy(kv.key());
    let lease = key.strip_prefix(&prefix(election)).unwrap_or_default();
    if lease.contains('/') {
        return None; // a nested election's
    }
    let said = String::from_utf8_lossy(kv.value());
    Some(format!(
        "--holders 1 (the default) disagrees with the candidates of the election {} that have \
         --holders {}: every candidate of one election must use the same --holders",
        escape_controls(election),
        escape_controls(&said)
    ))
}

/// Resolves when fewer than `n` keys under `NAME/` were created before ours, or may have been:
/// a deletion among the watched keys ends the wait without a read, and the start gate's
/// verification ([`crate::election::verify`]) is the one read that tells (if others are still
/// ahead, the caller waits here again). Errors that retrying can fix are retried (logged as
/// one trouble); a refusal ends it.
async fn wait_turn(
    client: &Client,
    election: &str,
    ours: &LeaderKey,
    n: u32,
    wait: Duration,
    retry: Duration,
) -> Result<Turn, EtcdError> {
    let mut trouble = Trouble::new("waiting for a place among the holders");
    loop {
        let (ahead, revision) = match keys_ahead(client, election, ours.rev(), n, wait).await {
            Ok(read) => read,
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => {
                trouble.report(e);
                sleep(retry).await;
                continue;
            }
        };
        if ahead.len() < n as usize {
            return Ok(Turn::Read);
        }
        let keys: Vec<Vec<u8>> = ahead.iter().map(|kv| kv.key().to_vec()).collect();
        tracing::debug!(ahead = keys.len(), "waiting for one of the holders to go");
        match any_deleted(client, &keys, revision).await {
            Ok(()) => {
                trouble.clear();
                return Ok(Turn::Deleted);
            }
            Err(e) => {
                trouble.report(e);
                sleep(retry).await;
            }
        }
    }
}

/// The `n` keys under `NAME/` created last before `rev` (ours), and the revision read at.
async fn keys_ahead(
    client: &Client,
    election: &str,
    rev: i64,
    n: u32,
    wait: Duration,
) -> Result<(Vec<KeyValue>, i64), EtcdError> {
    let options = GetOptions::new()
        .with_prefix()
        .with_max_create_revision(rev - 1)
        .with_sort(SortTarget::Create, SortOrder::Descend)
        .with_limit(i64::from(n));
    let mut resp: GetResponse = etcd::call_as("reading the holders", wait, client, |mut c| {
        let (key, options) = (format!("{election}/"), options.clone());
        async move { c.get(key, Some(options)).await }
    })
    .await?;
    let revision = resp.header().map_or(0, |h| h.revision());
    Ok((resp.take_kvs(), revision))
}

/// Resolves Ok when one of `keys` is deleted after `revision`, all watched on one stream
/// (deletions only). Err when the watch breaks or is cancelled (a compaction, a stale token):
/// the caller reads again, which also covers what happened meanwhile.
async fn any_deleted(client: &Client, keys: &[Vec<u8>], revision: i64) -> Result<(), String> {
    let mut client = client.clone();
    let options = || {
        Some(
            WatchOptions::new()
                .with_start_revision(revision + 1)
                .with_filters([WatchFilterType::NoPut]),
        )
    };
    let (first, rest) = keys.split_first().ok_or("nothing to watch")?;
    let mut stream = client
        .watch(first.clone(), options())
        .await
        .map_err(|e| e.to_string())?;
    for key in rest {
        stream
            .watch(key.clone(), options())
            .await
            .map_err(|e| e.to_string())?;
    }
    let deleted = |e: &Event| e.event_type() == EventType::Delete;
    let mut seen = revision;
    // Its own answers need no logging: the caller reports what ends the watch.
    let mut quiet = Trouble::new("watch on the holders ahead");
    match watch::follow(&mut client, &mut stream, deleted, &mut seen, &mut quiet).await {
        Ended::Event => Ok(()),
        Ended::Canceled(why) => Err(format!("watch canceled: {why}")),
        Ended::Broken(why) => Err(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(l, v)| (l.to_string(), v.to_string()))
            .collect()
    }

    fn live(leases: &[&str]) -> Vec<String> {
        leases.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn an_election_that_agrees_passes() {
        let s = said(&[("a1", "3"), ("b2", "3")]);
        assert_eq!(disagreement("web", 3, &s, &live(&["a1", "b2"])), None);
        // Keys that are not live candidates (no lease, nested) are not asked.
        assert_eq!(disagreement("web", 3, &s, &live(&["a1"])), None);
    }

    #[test]
    fn another_n_is_named_with_ours() {
        let s = said(&[("a1", "2"), ("b2", "3")]);
        let line = disagreement("web", 3, &s, &live(&["a1", "b2"])).unwrap();
        assert!(line.contains("--holders 3"), "{line}");
        assert!(line.contains("--holders 2"), "{line}");
        assert!(line.contains("web"), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn a_candidate_without_holders_is_named() {
        let s = said(&[("b2", "3")]);
        let line = disagreement("web", 3, &s, &live(&["a1", "b2"])).unwrap();
        assert!(line.contains("without --holders"), "{line}");
        assert!(line.contains("etcdctl elect"), "{line}");
    }

    #[test]
    fn a_value_from_etcd_cannot_forge_a_line() {
        let s = said(&[("a1", "2\nforged")]);
        let line = disagreement("web", 3, &s, &live(&["a1"])).unwrap();
        assert!(!line.contains('\n'), "{line}");
    }

    #[test]
    fn a_nested_elections_keys_are_not_ours() {
        let s = said(&[("inner/a1", "5"), ("b2", "3")]);
        assert_eq!(disagreement("web", 3, &s, &live(&["b2"])), None);
    }

    #[test]
    fn the_holders_prefix_is_outside_the_election() {
        assert_eq!(prefix("web"), "leaderrun.holders/web/");
        assert!(!prefix("web").starts_with("web/"));
    }
}
