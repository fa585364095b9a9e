//! The queue, kept by the client: at most N children across all hosts at once (`--holders N`,
//! like `consul lock -n`; N = 1 by default). The first N candidates by create revision hold.
//!
//! As Go's concurrency.Election does, and not through etcd's Campaign RPC: the key is
//! `NAME/<lease hex>` with the id as value, on the candidacy's lease (so `etcdctl elect` and Go
//! see the same queue), written by a put-if-absent; its create revision is the fencing token.
//! Waiting is a watch on the keys ahead, and the wait ends with a proof that our turn has come
//! ([`Proof`]), so the start gate reads nothing more between the deletion and the spawn;
//! and nothing is left pending in a member that hangs (a server-side campaign abandoned there
//! resigns when the member resumes).
//!
//! Waiting without a herd: a candidate with r keys ahead of it (created before its own) holds
//! when r < N, and r only falls (create revisions only grow, so no key can appear ahead of it).
//! It reads the nearest keys ahead and watches the N + 1 nearest for deletion: while N of
//! them exist it cannot hold, whatever happens further ahead. When the read listed the whole
//! line ahead (at most N + 1 keys), the deletions it watches count the line down to fewer
//! than N: that is the proof. Otherwise a deletion among them makes it read again; the key
//! N + 1 ahead goes only once the line ahead has moved up, so that read usually lists it whole,
//! well before the turn comes. Each deletion wakes at most N + 1 candidates.
//!
//! Every candidate of one election must use the same N: each N > 1 candidate writes
//! `leaderrun.holders/NAME/<lease hex>` = N on its lease, with its candidate key, then checks
//! that the election agrees ([`agree`]); a default leaderrun checks that prefix is empty
//! ([`check_single`]).

use crate::election::priority::{self, should_pass, Place, Published, Seen};
use crate::election::watch::{self, Ended};
use crate::election::{classify, Candidate};
use crate::etcd::{self, EtcdError};
use crate::log::escape_controls;
use crate::log::recurring::Recurring;
use etcd_client::{
    Client, Compare, CompareOp, Event, EventType, GetOptions, LeaderKey, PutOptions, SortOrder,
    SortTarget, Txn, TxnOp, TxnOpResponse, WatchFilterType, WatchOptions, WatchStream,
};
use std::time::Duration;
use tokio::time::{sleep, timeout};

/// The largest `--holders`: every waiting candidate watches up to N keys, on one stream.
pub const MAX_HOLDERS: u32 = 1000;

/// How long a waiting candidate lets a handover pass before it reads the line ahead again
/// (see [`Watched::until_moved`]): the handover's writes, the new leader's start and its
/// child's exec take a few milliseconds; the read would compete with them for etcd and, where
/// etcd or other candidates share the host, for the CPU.
pub const SETTLE: Duration = Duration::from_millis(100);

/// How long a round waits for the priorities' read once the line ahead is read.
const PRIORITY_GRACE: Duration = Duration::from_millis(50);

/// Where each N > 1 candidate says its N: `leaderrun.holders/NAME/`, outside the election's
/// prefix (every key under `NAME/` takes part in the election).
pub fn prefix(election: &str) -> String {
    format!("leaderrun.holders/{election}/")
}

/// The queue's proof that our turn has come: fewer than N keys are ahead of ours. Made only by
/// [`wait_turn`], from a linearizable read that listed every key ahead of ours and showed our
/// key as ours, and, when that read found N or more ahead, a watch on each of them from the
/// revision after it that saw enough of them deleted. Keys only ever join the queue behind
/// ours (create revisions grow), so what was ahead can only shrink: nothing is left to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proof {
    /// The revision of that read: our key was ours there, and the watch on it while leading
    /// starts after it.
    pub read_at: i64,
}

/// Why an N-holder campaign ended without a place.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    /// The election's candidates use another N: the one line to exit 2 with.
    #[error("{0}")]
    Disagree(String),
    /// Our key was deleted while we waited, or is no longer ours (an operator's delete):
    /// campaign again with a new lease.
    #[error("our candidate key {0} was deleted while waiting")]
    KeyGone(String),
}

/// Who campaigns, and how: everything a campaign needs but the client.
#[derive(Debug, Clone)]
pub struct Join<'a> {
    pub election: &'a str,
    pub id: &'a str,
    pub lease: i64,
    /// `--holders N`.
    pub n: u32,
    /// `--priority`.
    pub priority: u32,
    /// What we say of ourselves under [`priority::prefix`] (`--priority`, `--preempt`): None
    /// when neither is given, so that a default candidate writes nothing there.
    pub published: Option<Published>,
    /// How long one request may take, and the pause before a retry.
    pub wait: Duration,
    pub retry: Duration,
}

/// Campaign for one of `n` places with `lease`: write our key, check that the election agrees
/// on `n`, then wait until fewer than `n` keys are ahead of ours, with the proof of it (our key
/// deleted meanwhile: [`Refused::KeyGone`]), passing better candidates on the way
/// ([`priority`]). Blocks for as long as `n` others hold. One campaign per lease: the caller
/// ends the lease after a failure (only an error that never reached etcd may be retried on
/// it, and the write below is idempotent for that). Returns our key as it is at the end (a
/// pass writes it anew).
pub async fn campaign(client: &Client, join: &Join<'_>) -> Result<Turn, Refused> {
    let mut ours = enter(client, join).await?;
    if join.n > 1 {
        agree(client, join.election, join.n, join.wait).await?;
    }
    match wait_turn(client, join, &mut ours).await? {
        Some((proof, watching)) => Ok(Turn {
            key: ours,
            proof,
            watching,
        }),
        None => Err(Refused::KeyGone(
            String::from_utf8_lossy(ours.key()).into_owned(),
        )),
    }
}

/// A campaign's end: our key as it is then, the proof, and the wait's watch stream when the
/// turn came by a deletion it saw.
pub struct Turn {
    pub key: LeaderKey,
    pub proof: Proof,
    pub watching: Option<Watching>,
}

/// The wait's watch stream, kept once the turn is proven: among others, it watches our own
/// key from the revision after the proof's read (deletions only). The new leader's watch on
/// its key ([`crate::election::key_deleted`]) follows it, so the handover opens no stream and
/// creates no watcher in etcd while the child starts.
pub struct Watching(pub(crate) WatchStream);

/// One transaction: if our key does not exist, put it (`id`, on `lease`), our holders key
/// (`n`, on `lease`) and what we publish; else read it (a retry of a write that did reach
/// etcd). Returns our key with its create revision.
async fn enter(client: &Client, join: &Join<'_>) -> Result<LeaderKey, EtcdError> {
    let (election, lease) = (join.election, join.lease);
    let key = format!("{election}/{lease:x}");
    let holders_key = format!("{}{lease:x}", prefix(election));
    let on_lease = || Some(PutOptions::new().with_lease(lease));
    // One holder says nothing under the holders prefix: its role needs no permission there.
    let mut put = vec![TxnOp::put(key.clone(), join.id, on_lease())];
    if join.n > 1 {
        put.push(TxnOp::put(holders_key, join.n.to_string(), on_lease()));
    }
    if let Some(p) = &join.published {
        put.push(TxnOp::put(
            priority::key(election, lease),
            p.value(),
            on_lease(),
        ));
    }
    put.push(TxnOp::get(key.clone(), None));
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then(put)
        .or_else([TxnOp::get(key.clone(), None)]);
    let resp = etcd::call_as("campaigning", join.wait, client, |mut c| {
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

/// Move behind: delete our key (and what we publish), if it is still the one we wrote; the
/// caller writes it again ([`enter`]), behind every key there is.
async fn step_back(client: &Client, join: &Join<'_>, ours: &LeaderKey) -> Result<(), EtcdError> {
    let mut delete = vec![TxnOp::delete(ours.key(), None)];
    if join.published.is_some() {
        delete.push(TxnOp::delete(
            priority::key(join.election, join.lease),
            None,
        ));
    }
    let txn = Txn::new()
        .when([Compare::create_revision(
            ours.key(),
            CompareOp::Equal,
            ours.rev(),
        )])
        .and_then(delete);
    etcd::call_as("passing a better candidate", join.wait, client, |mut c| {
        let txn = txn.clone();
        async move { c.txn(txn).await }
    })
    .await?;
    Ok(())
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

/// Resolves when fewer than `n` keys under `NAME/` were created before ours, with the proof of
/// it; None when our key is not ours in a read, or is deleted while we wait. Errors that
/// retrying can fix are retried (logged as one trouble); a refusal ends it.
///
/// Each round reads up to `n + 2` keys ahead (newest first) with our own key, then watches the
/// `n + 1` nearest and ours. When the read listed every key ahead (at most `n + 1`), their
/// deletions alone tell when fewer than `n` are left, and that is the proof. When it did not,
/// a deletion among the watched ones starts a new round: that candidate moves up, and its next
/// read lists the whole line ahead before its turn comes. Each deletion wakes at most `n + 1`
/// candidates, never the whole line.
///
/// Beside it, the same round reads and watches what the candidates publish ([`priority`]): a
/// better candidate behind us, or a switchover to one, makes us pass: our key is written again,
/// behind it, and the rounds go on with the new key in `ours`.
async fn wait_turn(
    client: &Client,
    join: &Join<'_>,
    ours: &mut LeaderKey,
) -> Result<Option<(Proof, Option<Watching>)>, EtcdError> {
    let (election, n, retry) = (join.election, join.n as usize, join.retry);
    let mut trouble = Recurring::new("waiting for a place among the holders");
    // Off for good once the role is refused the prefix (said once): priorities are a
    // preference, never a reason not to lead.
    let mut priorities = true;
    let mut policies_checked = false;
    // Our key was deleted by a pass and is still to be written again.
    let mut reenter = false;
    loop {
        if reenter {
            match enter(client, join).await {
                Ok(key) => {
                    *ours = key;
                    reenter = false;
                }
                Err(e) if e.is_fatal() => return Err(e),
                Err(e) => {
                    trouble.report(e);
                    sleep(retry).await;
                    continue;
                }
            }
        }
        let read_priorities = priorities;
        let read_seen = async move {
            match read_priorities {
                true => Some(priority::read(client, election, join.wait).await),
                false => None,
            }
        };
        let line_read = line_ahead(client, election, ours, n, join.wait);
        tokio::pin!(read_seen, line_read);
        let mut seen = None;
        let line = loop {
            tokio::select! {
                biased;
                s = &mut read_seen, if seen.is_none() => seen = Some(s),
                l = &mut line_read => break l,
            }
        };
        // The line decides; the priorities are a preference: a read of them that lags the
        // line's (a slow or hung member) is given a moment, not the round (the next round
        // reads them again).
        let seen = match seen {
            Some(seen) => seen,
            None => timeout(PRIORITY_GRACE, &mut read_seen)
                .await
                .unwrap_or(None),
        };
        let line = match line {
            Ok(line) => line,
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => {
                crate::metrics::leader_known(false);
                trouble.report(e);
                sleep(retry).await;
                continue;
            }
        };
        let (seen, seen_at) = match seen {
            Some(Ok((kvs, revision))) => {
                if !policies_checked {
                    policies_checked = true;
                    warn_policies(join, &kvs);
                }
                let seen = kvs.iter().map(|kv| Seen::of(election, kv)).collect();
                (seen, revision.min(line.revision))
            }
            Some(Err(e)) if e.is_fatal() => {
                // Once per process, not at every campaign.
                static SAID: std::sync::atomic::AtomicBool =
                    std::sync::atomic::AtomicBool::new(false);
                if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(range = %priority::prefix(election), error = %e, "priorities are off: the user's role cannot read this range; waiting in the order of the queue");
                }
                priorities = false;
                (Vec::new(), line.revision)
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "priorities not read this round");
                (Vec::new(), line.revision)
            }
            None => (Vec::new(), line.revision),
        };
        let Some(mut ahead) = line.ahead else {
            return Ok(None);
        };
        // For the gauge of seconds without a leader: a key ahead of ours is (or will be) one.
        crate::metrics::leader_known(!ahead.is_empty());
        let proof = Proof {
            read_at: line.revision,
        };
        let key = String::from_utf8_lossy(ours.key()).into_owned();
        let place = Place {
            key: &key,
            revision: ours.rev(),
            priority: join.priority,
        };
        if should_pass(&place, &seen) {
            match step_back(client, join, ours).await {
                Ok(()) => {
                    tracing::info!(
                        "a better candidate waits behind us: passing it (our key moves behind it)"
                    );
                    crate::metrics::passed();
                    reenter = true;
                }
                Err(e) if e.is_fatal() => return Err(e),
                Err(e) => {
                    trouble.report(e);
                    sleep(retry).await;
                }
            }
            continue;
        }
        if ahead.len() < n {
            return Ok(Some((proof, None)));
        }
        // Listed whole: at most n + 1 keys ahead came back of the n + 2 asked for.
        let whole = ahead.len() <= n + 1;
        ahead.truncate(n + 1);
        tracing::debug!(
            ahead = ahead.len(),
            whole,
            "waiting for one of the holders to go"
        );
        let mut watched = Watched {
            ahead,
            whole_line: whole.then_some(n),
            ours: ours.key().to_vec(),
            ranks: priorities.then(|| Ranks {
                election: election.to_string(),
                key: key.clone(),
                revision: ours.rev(),
                priority: join.priority,
                seen,
                from: seen_at,
            }),
        };
        match watched.until_moved(client, line.revision).await {
            Ok((Moved::Proven, stream)) => {
                tracing::debug!("the last key ahead went: our turn, by the queue's proof");
                crate::metrics::leader_known(false);
                return Ok(Some((proof, Some(Watching(stream)))));
            }
            Ok((Moved::Up | Moved::Pass, _)) => trouble.clear(),
            Ok((Moved::OursGone, _)) => return Ok(None),
            Err(e) => {
                crate::metrics::leader_known(false);
                trouble.report(e);
                sleep(retry).await;
            }
        }
    }
}

/// Candidates of the election whose `--preempt` differs from ours: one warning, naming them.
fn warn_policies(join: &Join<'_>, kvs: &[etcd_client::KeyValue]) {
    let ours = join.published.as_ref().and_then(|p| p.preempt);
    let own = priority::key(join.election, join.lease);
    let others: Vec<Published> = kvs
        .iter()
        .filter(|kv| kv.key() != own.as_bytes())
        .filter(|kv| matches!(Seen::of(join.election, kv), Seen::Candidate { .. }))
        .filter_map(|kv| Published::parse(kv.value()))
        .collect();
    let differ = priority::disagreeing(ours, &others);
    if !differ.is_empty() {
        tracing::warn!(
            ours = %priority::preempt_word(ours),
            others = %escape_controls(&differ.join(", ")),
            "candidates of this election disagree on --preempt: the leader's own policy decides when it steps down for a better candidate"
        );
    }
}

/// One read of the line ahead of our key.
struct Line {
    /// Up to `n + 2` keys created last before ours, newest first; None when our key is not
    /// ours (gone, or created anew, or on another lease).
    ahead: Option<Vec<Vec<u8>>>,
    revision: i64,
}

/// The keys created last before ours (up to `n + 2`) and our own key, in one transaction.
async fn line_ahead(
    client: &Client,
    election: &str,
    ours: &LeaderKey,
    n: usize,
    wait: Duration,
) -> Result<Line, EtcdError> {
    let nearest = GetOptions::new()
        .with_prefix()
        .with_keys_only()
        .with_max_create_revision(ours.rev() - 1)
        .with_sort(SortTarget::Create, SortOrder::Descend)
        .with_limit(n as i64 + 2);
    let reads = [
        TxnOp::get(format!("{election}/"), Some(nearest)),
        TxnOp::get(ours.key(), None),
    ];
    let (ahead, own, revision) =
        etcd::read_pair("reading the holders", wait, client, reads).await?;
    let ours_there = own
        .kvs()
        .first()
        .is_some_and(|kv| kv.create_revision() == ours.rev() && kv.lease() == ours.lease());
    let ahead = ours_there.then(|| ahead.kvs().iter().map(|kv| kv.key().to_vec()).collect());
    Ok(Line { ahead, revision })
}

/// How a round ends, having ended `before` by an earlier event of the same answer, with the
/// next event's `now`: the first that ends it, unless our own key went in the same answer.
fn weigh(before: Option<Moved>, now: Option<Moved>) -> Option<Moved> {
    match (before, now) {
        (_, Some(Moved::OursGone)) => Some(Moved::OursGone),
        (Some(before), _) => Some(before),
        (None, now) => now,
    }
}

/// What a round of waiting watches: the nearest keys ahead, and our own; and, with priorities,
/// what the candidates publish.
struct Watched {
    ahead: Vec<Vec<u8>>,
    /// Some(n) when `ahead` is the whole line ahead: the turn comes when fewer than n are left.
    whole_line: Option<usize>,
    ours: Vec<u8>,
    ranks: Option<Ranks>,
}

/// What a waiting candidate weighs to pass: our place, and what it has seen published.
struct Ranks {
    election: String,
    key: String,
    revision: i64,
    priority: u32,
    seen: Vec<Seen>,
    /// The revision that `seen` was read at: published keys are watched from the one after.
    from: i64,
}

/// How a round of waiting ended.
#[derive(Debug, PartialEq, Eq)]
enum Moved {
    /// The whole line ahead was watched and fewer than n of it are left.
    Proven,
    /// A watched key ahead went, in a line not known whole: read again.
    Up,
    /// Our own key was deleted.
    OursGone,
    /// A better candidate joined behind us, or a switchover asks us to make way: read again,
    /// which passes.
    Pass,
}

impl Watched {
    /// Watch every key of the round, on one stream and for deletions only, from `revision` + 1
    /// (nothing after the read is missed), until the round ends; with the stream, which still
    /// watches our key. Err when the watch breaks or is cancelled (a compaction, a stale token):
    /// the caller reads again, which covers what happened meanwhile.
    ///
    /// A line not known whole moves up by a deletion among the keys watched, and the next read
    /// would come in the very milliseconds of that handover, beside the new leader's start (at
    /// least n of the watched keys are still there, so it is not our turn). It waits [`SETTLE`]
    /// first, watching on: another deletion among them, our key's, or a better candidate ends
    /// the wait at once.
    async fn until_moved(
        &mut self,
        client: &Client,
        revision: i64,
    ) -> Result<(Moved, WatchStream), String> {
        let mut client = client.clone();
        let options = || {
            Some(
                WatchOptions::new()
                    .with_start_revision(revision + 1)
                    .with_filters([WatchFilterType::NoPut]),
            )
        };
        let mut stream = client
            .watch(self.ours.clone(), options())
            .await
            .map_err(|e| crate::etcd::cause(&e))?;
        for key in &self.ahead {
            stream
                .watch(key.clone(), options())
                .await
                .map_err(|e| crate::etcd::cause(&e))?;
        }
        if let Some(ranks) = &self.ranks {
            let published = WatchOptions::new()
                .with_prefix()
                .with_start_revision(ranks.from + 1)
                .with_filters([WatchFilterType::NoDelete]);
            stream
                .watch(priority::prefix(&ranks.election), Some(published))
                .await
                .map_err(|e| e.to_string())?;
        }
        let mut seen = revision;
        // Its own answers need no logging: the caller reports what ends the watch.
        let mut quiet = Recurring::new("watch on the holders ahead");
        let mut moved = self
            .follow(&mut client, &mut stream, &mut seen, &mut quiet)
            .await?;
        if moved == Moved::Up {
            let settling = self.follow(&mut client, &mut stream, &mut seen, &mut quiet);
            if let Ok(next) = timeout(SETTLE, settling).await {
                moved = next?;
            }
        }
        Ok((moved, stream))
    }

    /// Follow `stream` until an event ends the round (how), weighing every event of an answer:
    /// our key's deletion beside the last key ahead's, in one revision, is no turn.
    async fn follow(
        &mut self,
        client: &mut Client,
        stream: &mut WatchStream,
        seen: &mut i64,
        quiet: &mut Recurring,
    ) -> Result<Moved, String> {
        let mut moved = None;
        let wanted = |e: &Event| {
            let now = e.kv().and_then(|kv| match e.event_type() {
                EventType::Delete => self.deleted(kv.key()),
                EventType::Put => self.published(kv),
            });
            moved = weigh(moved.take(), now);
            moved.is_some()
        };
        match watch::follow(client, stream, wanted, seen, quiet).await {
            Ended::Event => Ok(moved.unwrap_or(Moved::Up)),
            Ended::Compacted => Err("watch canceled: history compacted".into()),
            Ended::Canceled(why) => Err(format!("watch canceled: {why}")),
            Ended::Broken(why) => Err(why),
        }
    }

    /// Take in a candidate's published key (or a switchover): Some(Pass) if we should pass.
    fn published(&mut self, kv: &etcd_client::KeyValue) -> Option<Moved> {
        let ranks = self.ranks.as_mut()?;
        ranks.seen.push(Seen::of(&ranks.election, kv));
        let place = Place {
            key: &ranks.key,
            revision: ranks.revision,
            priority: ranks.priority,
        };
        should_pass(&place, &ranks.seen).then_some(Moved::Pass)
    }

    /// Take in the deletion of `key`: Some(how the round ends) if it ends it.
    fn deleted(&mut self, key: &[u8]) -> Option<Moved> {
        if key == self.ours {
            return Some(Moved::OursGone);
        }
        let before = self.ahead.len();
        self.ahead.retain(|k| k != key);
        match self.whole_line {
            _ if self.ahead.len() == before => None,
            Some(n) if self.ahead.len() < n => Some(Moved::Proven),
            Some(_) => None,
            None => Some(Moved::Up),
        }
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

    fn watched(ahead: &[&str], whole_line: Option<usize>) -> Watched {
        Watched {
            ahead: ahead.iter().map(|k| k.as_bytes().to_vec()).collect(),
            whole_line,
            ours: b"web/ours".to_vec(),
            ranks: None,
        }
    }

    #[test]
    fn the_whole_line_ahead_counted_down_below_n_is_the_proof() {
        // One holder, two keys ahead, the whole line: the second deletion proves the turn.
        let mut w = watched(&["web/b", "web/a"], Some(1));
        assert_eq!(w.deleted(b"web/a"), None);
        assert_eq!(
            w.deleted(b"web/a"),
            None,
            "a deletion seen twice counts once"
        );
        assert_eq!(
            w.deleted(b"web/zz"),
            None,
            "a key not watched does not count"
        );
        assert_eq!(w.deleted(b"web/b"), Some(Moved::Proven));
        // Three holders, four ahead: two must go.
        let mut w = watched(&["web/d", "web/c", "web/b", "web/a"], Some(3));
        assert_eq!(w.deleted(b"web/c"), None);
        assert_eq!(w.deleted(b"web/a"), Some(Moved::Proven));
    }

    #[test]
    fn a_line_not_known_whole_is_read_again_and_never_proven_by_deletions() {
        let mut w = watched(&["web/b", "web/a"], None);
        assert_eq!(w.deleted(b"web/zz"), None);
        assert_eq!(w.deleted(b"web/a"), Some(Moved::Up));
    }

    #[test]
    fn our_key_deleted_in_the_answer_that_deletes_the_last_key_ahead_is_no_turn() {
        // `etcdctl del --prefix NAME/` deletes both in one revision: one answer.
        let mut w = watched(&["web/a"], Some(1));
        let mut moved = None;
        for key in [&b"web/a"[..], b"web/ours"] {
            moved = weigh(moved, w.deleted(key));
        }
        assert_eq!(moved, Some(Moved::OursGone));
        // The first event that ends a round decides it otherwise.
        assert_eq!(
            weigh(Some(Moved::Proven), Some(Moved::Pass)),
            Some(Moved::Proven)
        );
        assert_eq!(weigh(None, None), None);
        assert_eq!(weigh(Some(Moved::Up), None), Some(Moved::Up));
    }

    #[test]
    fn our_own_key_deleted_ends_the_wait_without_a_proof() {
        let mut w = watched(&["web/a"], Some(1));
        assert_eq!(w.deleted(b"web/ours"), Some(Moved::OursGone));
    }

    #[test]
    fn the_holders_prefix_is_outside_the_election() {
        assert_eq!(prefix("web"), "leaderrun.holders/web/");
        assert!(!prefix("web").starts_with("web/"));
    }
}
