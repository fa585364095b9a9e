//! The election: the keys are `NAME/<lease id in hex>` as
//! `etcdctl elect NAME` and Go's concurrency.Election make them, and the leader is the live key
//! under `NAME/` with the lowest create revision.

pub mod history;
pub mod holders;
pub mod priority;
pub mod run_records;
pub mod step_down;
pub mod watch;

use crate::etcd::{self, EtcdError};
use crate::lease::Lease;
use crate::log::recurring::Recurring;
use etcd_client::{
    Client, Compare, CompareOp, Event, EventType, GetOptions, GetResponse, KeyValue, LeaderKey,
    SortOrder, SortTarget, Txn, TxnOp, WatchOptions, WatchStream,
};
use std::time::Duration;
use tokio::time::{sleep, Instant};
use watch::Ended;

/// Verified leadership: our key, first under the prefix, with this create revision.
#[derive(Debug, Clone)]
pub struct Leadership {
    leader_key: LeaderKey,
    /// `NAME/<lease hex>`.
    pub key: String,
    /// The key's create revision: grows strictly from one leader to the next (fencing token).
    pub revision: i64,
    /// The store revision at verification: events after it are watched.
    verified_at: i64,
    /// How: "queue" (the queue's proof) or "read" (the gate's read).
    pub verified_by: &'static str,
}

impl Leadership {
    /// What the campaign returned: verify it again before a restart in place.
    pub fn leader_key(&self) -> &LeaderKey {
        &self.leader_key
    }

    /// The store revision etcd reported when this leadership was verified.
    pub fn store_revision(&self) -> i64 {
        self.verified_at
    }
}

/// Why a campaign's "elected" was not believed.
#[derive(Debug, thiserror::Error)]
pub enum Unverified {
    /// Our key is there, but other keys are ahead of it.
    #[error("others are still ahead of our key")]
    NotFirst,
    #[error("our key is gone, or is no longer on our lease")]
    KeyGone,
    #[error("the lease deadline is too near to start the child")]
    DeadlineNear,
    #[error("our leader key changed or vanished while the run was recorded")]
    KeyChanged,
    #[error("verification failed: {0}")]
    Etcd(#[from] EtcdError),
}

/// The `n` first-created keys under `NAME/`, in the order of the queue, with the store revision
/// they were read at.
pub async fn first_candidates(
    client: &Client,
    name: &str,
    n: i64,
    wait: Duration,
) -> Result<(Vec<KeyValue>, i64), EtcdError> {
    let options = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Ascend)
        .with_limit(n);
    let prefix = prefix_of(name.as_bytes());
    let mut resp = etcd::call_as("reading the election", wait, client, |mut c| {
        let (prefix, options) = (prefix.clone(), options.clone());
        async move { c.get(prefix, Some(options)).await }
    })
    .await?;
    let revision = resp.header().map_or(0, |h| h.revision());
    Ok((resp.take_kvs(), revision))
}

/// The verify-before-start rule. A campaign can end although our lease expired while we
/// waited (phantom leadership), and a watch event can be seen late: believe the queue only on
/// its proof ([`holders::Proof`]: a linearizable read that listed every key ahead of ours, and
/// the deletions of enough of them watched since), or else read: our key must still exist with
/// the returned create revision and our lease, among the `holders` first-created keys under
/// the prefix (the first, with the default of one holder), in one read at one revision. The
/// proof says nothing of the lease: the gate ([`crate::supervisor::tenure::Gate::start`]), the only caller,
/// checks the lease deadline itself, last, right before the spawn, and while the lease lives
/// our key does (it goes only with the lease, or by an operator's delete).
pub async fn verify(
    client: &Client,
    elected: &LeaderKey,
    lease: &Lease,
    holders: u32,
    proof: Option<holders::Proof>,
) -> Result<Leadership, Unverified> {
    let leadership = |revision: i64, verified_by| Leadership {
        key: String::from_utf8_lossy(elected.key()).into_owned(),
        revision: elected.rev(),
        verified_at: revision.max(elected.rev()),
        verified_by,
        leader_key: elected.clone(),
    };
    if let Some(proof) = proof {
        return Ok(leadership(proof.read_at, "queue"));
    }
    let name = String::from_utf8_lossy(elected.name());
    let wait = lease.timing().request_timeout();
    let first = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Ascend)
        .with_limit(i64::from(holders));
    let reads = [
        TxnOp::get(prefix_of(name.as_bytes()), Some(first)),
        TxnOp::get(elected.key(), None),
    ];
    let (first, ours, revision) =
        etcd::read_pair("verifying the election", wait, client, reads).await?;
    let listed = |kvs: &[KeyValue]| {
        let kvs = kvs
            .iter()
            .map(|kv| (kv.key(), kv.create_revision(), kv.lease()));
        holds(kvs, elected, lease.id())
    };
    if !listed(ours.kvs()) {
        return Err(Unverified::KeyGone);
    }
    if !listed(first.kvs()) {
        return Err(Unverified::NotFirst);
    }
    Ok(leadership(revision, "read"))
}

/// Whether `elected`, on `lease`, is among `first` (key, create revision, lease): the
/// first-created keys under the prefix, as many as there are holders.
fn holds<'a>(
    first: impl IntoIterator<Item = (&'a [u8], i64, i64)>,
    elected: &LeaderKey,
    lease: i64,
) -> bool {
    first
        .into_iter()
        .any(|(key, rev, l)| key == elected.key() && rev == elected.rev() && l == lease)
}

/// What a key under `NAME/` is to the election `NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Candidate {
    /// `NAME/<its lease id in hex>`: a candidate, as the election API writes them.
    Live,
    /// A key without a lease (an `etcdctl put NAME/x`): it never goes away by itself and blocks
    /// every candidate behind it.
    NoLease,
    /// A candidate of the nested election `NAME/...` (Go's election allows `/` in names): it
    /// blocks `NAME` while it campaigns.
    Nested { election: String },
    /// A key with a lease whose name is not its lease id: not written by an election.
    Foreign,
}

/// Classify `kv`, a key under `election/`.
pub fn classify(election: &str, kv: &KeyValue) -> Candidate {
    let key = String::from_utf8_lossy(kv.key());
    let rest = key
        .strip_prefix(election)
        .and_then(|r| r.strip_prefix('/'))
        .unwrap_or(&key);
    if let Some((nested, _)) = rest.rsplit_once('/') {
        return Candidate::Nested {
            election: format!("{election}/{nested}"),
        };
    }
    if kv.lease() == 0 {
        return Candidate::NoLease;
    }
    if rest == format!("{:x}", kv.lease()) {
        Candidate::Live
    } else {
        Candidate::Foreign
    }
}

/// `NAME/`: the server's election keeps its keys under the name plus a slash.
fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'/');
    p
}

/// What a new term waits before it asks etcd anything beyond its first keepalive (the
/// step-down watch, the history record), and a waiting candidate before it reads the line
/// ahead again after a handover ([`holders::SETTLE`]): the handover's own writes and the new
/// child's exec take a few milliseconds, and requests among them compete with the child for
/// the CPU where etcd shares its host.
pub const SETTLE: Duration = holders::SETTLE;

/// Resolves when our key is deleted (an operator's `etcdctl del`, a revoked lease). Follows
/// `watching`, the campaign's stream, if given: it watches our key since the proof's read. A
/// broken watch is re-established from the last revision seen, after checking the key still
/// exists.
pub async fn key_deleted(
    client: &Client,
    leadership: &Leadership,
    retry: Duration,
    watching: Option<holders::Watching>,
) {
    let key = leadership.leader_key.key();
    watch_deleted(
        client,
        key,
        leadership.revision,
        leadership.verified_at,
        retry,
        watching.map(|w| w.0),
    )
    .await
}

/// How often --no-wait looks for our key until the campaign has written it (the campaign's
/// first request is in flight: milliseconds).
const OWN_KEY_POLL: Duration = Duration::from_millis(10);

/// Read one key, bounded (a hung member must not hold the loops above for ever).
async fn read_key(client: &Client, key: &[u8], retry: Duration) -> Result<GetResponse, EtcdError> {
    let wait = (retry * 4).max(Duration::from_secs(1));
    etcd::call_as("reading our key", wait, client, |mut c| {
        let key = key.to_vec();
        async move { c.get(key, None).await }
    })
    .await
}

/// Resolves when `key` (created at `created`) is deleted after revision `seen`; `kept`, a
/// stream that already watches it from `seen` + 1, is followed first.
async fn watch_deleted(
    client: &Client,
    key: &[u8],
    created: i64,
    mut seen: i64,
    retry: Duration,
    mut kept: Option<WatchStream>,
) {
    let mut client = client.clone();
    let key = key.to_vec();
    let mut trouble = Recurring::new("watch on own key");
    loop {
        let options = WatchOptions::new().with_start_revision(seen + 1);
        let stream = match kept.take() {
            Some(stream) => Ok(stream),
            None => client.watch(key.clone(), Some(options)).await,
        };
        let failed = match stream {
            Ok(mut stream) => {
                // The kept stream watches other keys too.
                let deleted = |e: &Event| {
                    e.event_type() == EventType::Delete
                        && e.kv().is_some_and(|kv| kv.key() == key.as_slice())
                };
                match watch::follow(&mut client, &mut stream, deleted, &mut seen, &mut trouble)
                    .await
                {
                    Ended::Event => return,
                    // Watched from a revision etcd compacted since (a leader started on the
                    // queue's proof watches from the read that began it, maybe long ago): no
                    // trouble, the read below tells at once.
                    Ended::Compacted => None,
                    Ended::Canceled(why) => Some(format!("canceled: {why}")),
                    Ended::Broken(why) => Some(why),
                }
            }
            Err(e) => Some(etcd::cause(&e)),
        };
        if let Some(why) = failed {
            trouble.report(why);
            sleep(retry).await;
        }
        // Events may be compacted away while the watch was down: look at the key itself.
        match read_key(&client, &key, retry).await {
            Ok(resp) => {
                let alive = resp
                    .kvs()
                    .first()
                    .is_some_and(|kv| kv.create_revision() == created);
                if !alive {
                    return;
                }
                if let Some(h) = resp.header() {
                    seen = seen.max(h.revision());
                }
            }
            Err(e) => {
                trouble.report(e);
                sleep(retry).await;
            }
        }
    }
}

/// Give up leadership: delete our key, if it is still the one we created, so the next
/// candidate is elected at once. What the election API's Resign does, as one transaction of our
/// own rather than through the server's election service. Whether etcd answered.
pub async fn resign(client: &Client, leader_key: &LeaderKey, wait: Duration) -> bool {
    let key = leader_key.key().to_vec();
    let txn = Txn::new()
        .when([Compare::create_revision(
            key.clone(),
            CompareOp::Equal,
            leader_key.rev(),
        )])
        .and_then([TxnOp::delete(key, None)]);
    let resigned = etcd::call_as("resign", wait, client, |mut c| {
        let txn = txn.clone();
        async move { c.txn(txn).await }
    });
    match resigned.await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "could not resign");
            false
        }
    }
}

/// --no-wait: resolves when our key, once it exists, is not among the first `holders` keys
/// under the prefix (or when that cannot be told within `wait`: not knowing counts as not
/// holding). Never resolves when ours is among them: the campaign wins then.
pub async fn behind_another(
    client: &Client,
    election: &str,
    ours: &str,
    holders: u32,
    wait: Duration,
) {
    let until = Instant::now() + wait;
    while Instant::now() < until {
        match first_candidates(client, election, i64::from(holders), wait).await {
            Ok((first, _)) if first.iter().any(|kv| kv.key() == ours.as_bytes()) => {
                return std::future::pending().await
            }
            // Our campaign's key is not written yet while fewer keys than places exist.
            Ok((first, _)) if first.len() >= holders as usize => return,
            Ok(_) | Err(_) => sleep(OWN_KEY_POLL).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader_key(key: &str, rev: i64, lease: i64) -> LeaderKey {
        LeaderKey::new()
            .with_name("web")
            .with_key(key)
            .with_rev(rev)
            .with_lease(lease)
    }

    #[test]
    fn verify_believes_a_key_among_the_first_n_only() {
        let first = [
            (&b"web/a"[..], 10, 0xa),
            (&b"web/b"[..], 11, 0xb),
            (&b"web/c"[..], 12, 0xc),
        ];
        // One holder: only the first.
        assert!(holds(
            first[..1].to_vec(),
            &leader_key("web/a", 10, 0xa),
            0xa
        ));
        assert!(!holds(
            first[..1].to_vec(),
            &leader_key("web/b", 11, 0xb),
            0xb
        ));
        // Three holders: any of the three, with its create revision and our lease.
        assert!(holds(first.to_vec(), &leader_key("web/c", 12, 0xc), 0xc));
        assert!(!holds(first.to_vec(), &leader_key("web/d", 13, 0xd), 0xd));
        // The key again, but created anew (another revision) or on another lease: not ours.
        assert!(!holds(first.to_vec(), &leader_key("web/b", 9, 0xb), 0xb));
        assert!(!holds(first.to_vec(), &leader_key("web/b", 11, 0xb), 0xe));
        assert!(!holds([], &leader_key("web/a", 10, 0xa), 0xa));
    }
}
