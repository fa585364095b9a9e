//! Singleton jobs: `--run-id` records each run in etcd, so that at most one host runs it, also
//! when a late host fires after the first run has finished.

use crate::config::RunId;
use crate::election::Leadership;
use crate::etcd::is_fatal;
use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use std::time::{Duration, SystemTime};
use tokio::time::timeout;

/// Where run records live: outside `NAME/`, so no record can pass for a candidate.
pub fn run_key(election: &str, run_id: &str) -> String {
    format!("leaderrun.runs/{election}/{run_id}")
}

/// The outcome of claiming a run.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// Recorded: this host runs it.
    Claimed,
    /// Somebody already ran it; the record says who.
    Taken(String),
    /// Our leader key changed or vanished: we are not the leader any more.
    NotLeader,
}

/// Record `run` for this leader, in one transaction with the check that our leader key still
/// exists with its create revision. The record is attached to a lease of its own (run.ttl),
/// never kept alive, so etcd forgets it after the TTL.
pub async fn claim(
    client: &Client,
    election: &str,
    candidate: &str,
    leadership: &Leadership,
    run: &RunId,
    wait: Duration,
) -> Result<Claim, String> {
    let mut client = client.clone();
    let key = run_key(election, &run.id);
    let record_lease = timeout(wait, client.lease_grant(run.ttl.as_secs() as i64, None))
        .await
        .map_err(|_| "run record: lease grant timed out".to_string())?
        .map_err(|e| format!("run record: {e}"))?
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
        .or_else(vec![TxnOp::get(key, None)]);
    let resp = match timeout(wait, client.txn(txn)).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) if is_fatal(&e) => return Err(format!("run record: {e}")),
        Ok(Err(e)) => return Err(format!("run record: {e}")),
        Err(_) => return Err("run record: transaction timed out".into()),
    };
    if resp.succeeded() {
        return Ok(Claim::Claimed);
    }
    // The record lease holds nothing: drop it rather than leave it for a day.
    let _ = timeout(wait, client.lease_revoke(record_lease)).await;
    let taken = resp.op_responses().into_iter().find_map(|r| match r {
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
