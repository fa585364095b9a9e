//! Singleton jobs: `--run-id` records each run in etcd, so that at most one host runs it, also
//! when a late host fires after the first run has finished.

use crate::election::Leadership;
use crate::etcd::{self, EtcdError};
use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use std::time::{Duration, SystemTime};

/// `--run-id`: run at most once per this ID, recorded for `ttl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunId {
    pub id: String,
    pub ttl: Duration,
}

/// Where run records live: outside `NAME/`, so no record can pass for a candidate.
pub fn run_key(election: &str, run_id: &str) -> String {
    format!("leaderrun.runs/{election}/{run_id}")
}

/// The outcome of claiming a run.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// Recorded: this host runs it. Withdraw the record if the run does not start after all.
    Claimed(Record),
    /// Somebody already ran it; the record says who.
    Taken(String),
    /// Our leader key changed or vanished: we are not the leader any more.
    NotLeader,
}

/// A run record of ours: the record's own lease holds it.
#[derive(Debug, PartialEq, Eq)]
pub struct Record {
    pub key: String,
    lease: i64,
}

/// Record `run` for this leader, in one transaction with the check that our leader key still
/// exists with its create revision. The record is attached to a lease of its own (run.ttl),
/// never kept alive, so etcd forgets it after the TTL. Nothing is left behind when it fails.
pub async fn claim(
    client: &Client,
    election: &str,
    candidate: &str,
    leadership: &Leadership,
    run: &RunId,
    wait: Duration,
) -> Result<Claim, EtcdError> {
    let key = run_key(election, &run.id);
    let ttl = i64::try_from(run.ttl.as_secs()).unwrap_or(i64::MAX);
    let grant = |mut c: Client| async move { c.lease_grant(ttl, None).await };
    let record_lease = etcd::call_as("run record lease", wait, client, grant)
        .await?
        .id();
    let value = format!(
        "id={candidate} revision={} at={}",
        leadership.revision,
        humantime::format_rfc3339_seconds(SystemTime::now())
    );
    let txn = Txn::new()
        .when(vec![
            Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            Compare::create_revision(
                leadership.key.clone(),
                CompareOp::Equal,
                leadership.revision,
            ),
        ])
        .and_then(vec![TxnOp::put(
            key.clone(),
            value,
            Some(PutOptions::new().with_lease(record_lease)),
        )])
        .or_else(vec![TxnOp::get(key.clone(), None)]);
    let resp = etcd::call_as("run record", wait, client, |mut c| {
        let txn = txn.clone();
        async move { c.txn(txn).await }
    })
    .await;
    if let Ok(resp) = &resp {
        if resp.succeeded() {
            return Ok(Claim::Claimed(Record {
                key,
                lease: record_lease,
            }));
        }
    }
    // The record lease holds nothing: drop it rather than leave it for a day.
    let _ = revoke(client, record_lease, wait).await;
    let taken = resp?.op_responses().into_iter().find_map(|r| match r {
        TxnOpResponse::Get(g) => g
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
        _ => None,
    });
    Ok(match taken {
        Some(by) => Claim::Taken(by),
        None => Claim::NotLeader,
    })
}

/// The run did not start after all: delete its record (by revoking the record's lease), so that
/// another host may run it.
pub async fn withdraw(client: &Client, record: Record, wait: Duration) -> Result<(), EtcdError> {
    revoke(client, record.lease, wait).await
}

/// Revoke a record's lease, deleting the record with it.
async fn revoke(client: &Client, lease: i64, wait: Duration) -> Result<(), EtcdError> {
    let revoke = |mut c: Client| async move { c.lease_revoke(lease).await };
    etcd::call_as("run record lease revoke", wait, client, revoke)
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_records_live_outside_the_election_prefix() {
        let key = run_key("nightly", "2026-11-21");
        assert!(!key.starts_with("nightly/"));
        assert_eq!(key, "leaderrun.runs/nightly/2026-11-21");
    }
}
