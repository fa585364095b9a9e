//! `leaderrun resign`: ask the leader of an election to hand over, and wait until another
//! candidate leads (the protocol is in [`crate::election::step_down`]).

use crate::cli::leader::{render, Format, Leader, View};
use crate::config::ResignConfig;
use crate::election::priority;
use crate::election::step_down::{request_key, request_value};
use crate::election::{classify, first_candidates, Candidate};
use crate::error::{Error, EXIT_NO_LEADER};
use crate::etcd::{self, EtcdError};
use crate::log::escape_controls;
use etcd_client::{
    Client, Compare, CompareOp, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget, Txn,
    WatchOptions,
};
use std::io::Write;
use std::time::Duration;
use tokio::time::{sleep, Instant};

/// How long one read or write may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The request outlives the wait by this much, then etcd deletes it.
const REQUEST_SLACK: Duration = Duration::from_secs(10);
/// Pause before re-opening a broken watch.
const WATCH_RETRY: Duration = Duration::from_millis(500);

/// Run the subcommand; returns the exit status.
pub async fn run(config: ResignConfig) -> Result<u8, Error> {
    let connection = &config.connection;
    let client = etcd::connect(connection)
        .await
        .map_err(|e| Error::on_connection(connection, e))?;
    let election = config.election.as_str();
    // The first read is the first contact: a TLS failure there names the endpoints and files.
    let (queue, _) = first_candidates(&client, election, 2, CALL_TIMEOUT)
        .await
        .map_err(|e| Error::on_connection(connection, e))?;
    let old = match View::of(election, queue.first()) {
        View::Leader(l) => l,
        view => {
            print(&render(&view, config.format));
            return Ok(EXIT_NO_LEADER);
        }
    };
    if queue.len() < 2 {
        return Err(Error::NoHandover(format!(
            "nobody waits in {election} but its leader ({}): nothing to hand over to",
            render(&View::Leader(old), Format::Text)
        )));
    }
    let lease = grant(&client, config.timeout + REQUEST_SLACK).await?;
    let result = match &config.to {
        Some(to) => switchover(&client, &config, &old, to, lease).await,
        None => ask_and_wait(&client, &config, &old, lease).await,
    };
    // The request is done with, answered or not: it goes now rather than at its lease's end.
    let _ = etcd::call("revoking the request", CALL_TIMEOUT, {
        let mut c = client.clone();
        async move { c.lease_revoke(lease).await }
    })
    .await;
    let new = result?;
    match config.format {
        Format::Text => {
            print(&format!(
                "old: {}",
                render(&View::Leader(old), Format::Text)
            ));
            print(&format!(
                "new: {}",
                render(&View::Leader(new), Format::Text)
            ));
        }
        Format::Json => print(&format!(
            "{{\"old\":{},\"new\":{}}}",
            render(&View::Leader(old), Format::Json),
            render(&View::Leader(new), Format::Json)
        )),
    }
    Ok(0)
}

/// `--to`: make way for the candidate `to` (every waiting candidate ahead of it passes), then
/// ask the leader to step down, and check that `to` took over.
async fn switchover(
    client: &Client,
    config: &ResignConfig,
    old: &Leader,
    to: &str,
    lease: i64,
) -> Result<Leader, Error> {
    let election = config.election.as_str();
    let until = Instant::now() + config.timeout;
    let within = |what: String| {
        Error::NoHandover(format!(
            "no switchover to {} within {}: {what}",
            escape_controls(to),
            humantime::format_duration(config.timeout)
        ))
    };
    // Make way: the switchover request names the target as it is now; every waiting leaderrun
    // ahead of it moves behind it.
    loop {
        let (queue, revision) = queue(client, election).await?;
        let target = find(election, &queue, to)?;
        if target.key == old.key {
            return Err(Error::NoHandover(format!(
                "{} leads {election} already: nothing to switch over",
                escape_controls(to)
            )));
        }
        let place = queue
            .iter()
            .position(|kv| kv.key() == target.key.as_bytes());
        if place == Some(1) {
            break;
        }
        let marker = priority::switchover_value(&target.key, target.revision);
        let put = etcd::call_as("writing the switchover", CALL_TIMEOUT, client, |mut c| {
            let (k, v) = (priority::switchover_key(election), marker.clone());
            async move { c.put(k, v, Some(PutOptions::new().with_lease(lease))).await }
        });
        put.await
            .map_err(|e| Error::on_range(priority::switchover_key(election), e))?;
        let changed = wait_for_change(client, election, revision);
        if tokio::time::timeout_at(until, changed).await.is_err() {
            let ahead: Vec<String> = queue[1..place.unwrap_or(queue.len())]
                .iter()
                .map(|kv| escape_controls(&String::from_utf8_lossy(kv.value())).into_owned())
                .collect();
            return Err(within(format!(
                "the candidates ahead of it did not make way ({}): only a leaderrun with \
                 --priority support passes, an etcdctl elect does not",
                ahead.join(", ")
            )));
        }
    }
    let new = ask_and_wait(client, config, old, lease).await?;
    let wanted = find(election, &queue(client, election).await?.0, to).ok();
    match wanted {
        Some(t) if t.key == new.key => Ok(new),
        _ => Err(Error::NoHandover(format!(
            "{} took over, not {}",
            render(&View::Leader(new), Format::Text),
            escape_controls(to)
        ))),
    }
}

/// Every key under `NAME/`, oldest first, with the revision of the read.
async fn queue(client: &Client, election: &str) -> Result<(Vec<KeyValue>, i64), Error> {
    let options = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Ascend);
    let mut resp = etcd::call_as("reading the election", CALL_TIMEOUT, client, |mut c| {
        let options = options.clone();
        let prefix = format!("{election}/");
        async move { c.get(prefix, Some(options)).await }
    })
    .await?;
    let revision = resp.header().map_or(0, |h| h.revision());
    Ok((resp.take_kvs(), revision))
}

/// The live candidate `to` names: its id, its key, or its lease in hex.
fn find(election: &str, queue: &[KeyValue], to: &str) -> Result<Leader, Error> {
    let live = || {
        queue
            .iter()
            .filter(|kv| classify(election, kv) == Candidate::Live)
    };
    let named = |kv: &&KeyValue| {
        kv.value() == to.as_bytes()
            || kv.key() == to.as_bytes()
            || format!("{:x}", kv.lease()) == to
    };
    match live().filter(named).count() {
        1 => Ok(Leader::from(live().find(named).expect("counted"))),
        0 => {
            let ids: Vec<String> = live()
                .map(|kv| escape_controls(&String::from_utf8_lossy(kv.value())).into_owned())
                .collect();
            Err(Error::NoHandover(format!(
                "no candidate {} in {election} (candidates: {})",
                escape_controls(to),
                ids.join(", ")
            )))
        }
        n => Err(Error::NoHandover(format!(
            "{n} candidates of {election} are named {}: name one by its key (leaderrun list)",
            escape_controls(to)
        ))),
    }
}

/// Resolves at the first change under `NAME/` after `revision` (or after a pause, when the
/// watch fails: the caller reads again either way).
async fn wait_for_change(client: &Client, election: &str, revision: i64) {
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1);
    let mut watcher = client.clone();
    if let Ok(mut stream) = watcher.watch(format!("{election}/"), Some(options)).await {
        while let Ok(Some(resp)) = stream.message().await {
            if !resp.events().is_empty() || resp.canceled() {
                return;
            }
        }
    }
    sleep(WATCH_RETRY).await;
}

async fn grant(client: &Client, ttl: Duration) -> Result<i64, Error> {
    let ttl = ttl.as_secs() as i64;
    let resp = etcd::call_as(
        "granting the request's lease",
        CALL_TIMEOUT,
        client,
        |mut c| async move { c.lease_grant(ttl, None).await },
    )
    .await?;
    Ok(resp.id())
}

/// Write the request for `old` (only while `old` still leads), then wait for another key to
/// lead. Returns the new leader.
async fn ask_and_wait(
    client: &Client,
    config: &ResignConfig,
    old: &Leader,
    lease: i64,
) -> Result<Leader, Error> {
    let key = request_key(&config.election);
    // Bound to the leader's key and create revision: if it no longer leads, nothing is written.
    let txn = Txn::new()
        .when(vec![Compare::create_revision(
            old.key.as_bytes(),
            CompareOp::Equal,
            old.revision,
        )])
        .and_then(vec![etcd_client::TxnOp::put(
            key.clone(),
            request_value(old.key.as_bytes(), old.revision),
            Some(PutOptions::new().with_lease(lease)),
        )]);
    let resp = etcd::call_as("writing the request", CALL_TIMEOUT, client, |mut c| {
        let txn = txn.clone();
        async move { c.txn(txn).await }
    })
    .await
    .map_err(|e| Error::on_range(key.clone(), e))?;
    let since = resp.header().map_or(0, |h| h.revision());
    if !resp.succeeded() {
        // The leader changed between the read and the request: someone else leads already.
        return next_leader(client, &config.election, old)
            .await?
            .ok_or_else(|| {
                Error::NoHandover(format!(
                    "the leader changed while asking it to step down; nobody leads {} now",
                    config.election
                ))
            });
    }
    let until = Instant::now() + config.timeout;
    match tokio::time::timeout_at(
        until,
        wait_for_another(client, &config.election, old, since),
    )
    .await
    {
        Ok(new) => Ok(new),
        Err(_) => Err(Error::NoHandover(format!(
            "no handover within {}: the leader ({}) did not step down; only a leaderrun leader \
             listens (an etcdctl elect does not), and it must be able to read {key}",
            humantime::format_duration(config.timeout),
            render(&View::Leader(old.clone()), Format::Text)
        ))),
    }
}

/// Resolves when a live candidate other than `old` leads. Any change under the prefix after
/// revision `since` may change who is first: each is followed by a read.
async fn wait_for_another(client: &Client, election: &str, old: &Leader, mut since: i64) -> Leader {
    let prefix = format!("{election}/");
    let mut watcher = client.clone();
    loop {
        match next_leader(client, election, old).await {
            Ok(Some(new)) => return new,
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the election; retrying"),
        }
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(since + 1);
        let changed = async {
            let mut stream = watcher.watch(prefix.clone(), Some(options)).await?;
            while let Some(resp) = stream.message().await? {
                if let Some(h) = resp.header() {
                    since = since.max(h.revision());
                }
                if !resp.events().is_empty() || resp.canceled() {
                    return Ok(());
                }
            }
            Ok::<(), etcd_client::Error>(())
        };
        if let Err(e) = changed.await {
            tracing::warn!(error = %crate::etcd::cause(&e), "watch failed; re-establishing");
            sleep(WATCH_RETRY).await;
        }
    }
}

/// The leader now, if it is a live candidate other than `old`.
async fn next_leader(
    client: &Client,
    election: &str,
    old: &Leader,
) -> Result<Option<Leader>, EtcdError> {
    let (first, _) = first_candidates(client, election, 1, CALL_TIMEOUT).await?;
    Ok(match View::of(election, first.first()) {
        View::Leader(l) if l.key != old.key || l.revision != old.revision => Some(l),
        _ => None,
    })
}

/// One line on stdout; a closed stdout is not worth a panic.
fn print(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(format!("{line}\n").as_bytes());
    let _ = out.flush();
}
