//! The election's history: each leader records its term under leaderrun's own keys,
//! `leaderrun.history/NAME/<fencing token, 20 digits>` (so that keys sort as terms began), a
//! JSON object ([`Term`]): when it began, when and why it ended.
//!
//! Written off the handover's path: a task of its own takes the records in order, each
//! [`crate::election::SETTLE`] after the child started or leadership was released, so a record
//! costs the gap nothing, neither as a wait nor as requests competing with the new child's
//! start. Bounded: the writer keeps the last [`KEPT`] terms and deletes older ones. A term
//! whose leader could not close it (a crash, a host cut off) is closed by the next leader as
//! `lost`, with its own start as the end; a late record of the old leader, should it come, has
//! the better end and wins. A role that may not write there gets one warning and leads on.

use crate::etcd::{self, EtcdError};
use crate::log::escape_controls;
use etcd_client::{Client, Compare, CompareOp, GetOptions, SortOrder, SortTarget, Txn, TxnOp};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// How many terms are kept.
pub const KEPT: u32 = 100;

/// The reason a term closed by its successor gets.
pub const LOST: &str = "lost";

/// Records waiting to be written; more are dropped (with one warning): a history must never
/// hold leadership up.
const QUEUE: usize = 16;

/// How long a record is retried (etcd unreachable) before it is given up.
const RETRY_FOR: Duration = Duration::from_secs(30);

pub fn prefix(election: &str) -> String {
    format!("leaderrun.history/{election}/")
}

fn key(election: &str, token: i64) -> String {
    format!("{}{token:020}", prefix(election))
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One term, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    pub id: String,
    /// The leader key, `NAME/<lease hex>`.
    pub key: String,
    pub token: i64,
    pub start_ms: u64,
    pub end_ms: Option<u64>,
    /// Why it ended (see docs/usage.md); None while it lasts.
    pub reason: Option<String>,
    /// How the child ended, when it ran and ended (`exit 0`, `signal 9`).
    pub status: Option<String>,
}

impl Term {
    pub fn value(&self) -> String {
        serde_json::json!({
            "id": self.id,
            "key": self.key,
            "token": self.token,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "reason": self.reason,
            "status": self.status,
        })
        .to_string()
    }

    /// A record as some leader wrote it; None when it is not one.
    pub fn parse(value: &[u8]) -> Option<Term> {
        let v: serde_json::Value = serde_json::from_slice(value).ok()?;
        let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(String::from);
        Some(Term {
            id: text("id").unwrap_or_default(),
            key: text("key").unwrap_or_default(),
            token: v.get("token")?.as_i64()?,
            start_ms: v.get("start_ms")?.as_u64()?,
            end_ms: v.get("end_ms").and_then(|x| x.as_u64()),
            reason: text("reason"),
            status: text("status"),
        })
    }
}

/// What the writer is asked to do.
enum Event {
    Begin(Client, Term),
    /// The term of this token ended (the record's end fields).
    End(Client, i64, Ending),
}

/// How a term ended.
#[derive(Debug, Clone)]
pub struct Ending {
    pub end_ms: u64,
    pub reason: String,
    pub status: Option<String>,
}

/// The history's writer: a task that writes records in the order they come.
#[derive(Clone)]
pub struct Writer {
    events: mpsc::Sender<Event>,
}

impl Writer {
    /// Start the writer of `election` on the current runtime.
    pub fn start(election: &str) -> Writer {
        let (events, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_all(election.to_string(), rx));
        Writer { events }
    }

    /// A term began.
    pub fn begin(&self, client: &Client, term: Term) {
        self.send(Event::Begin(client.clone(), term));
    }

    /// The term of `token` ended.
    pub fn end(&self, client: &Client, token: i64, ending: Ending) {
        self.send(Event::End(client.clone(), token, ending));
    }

    fn send(&self, event: Event) {
        if self.events.try_send(event).is_err() {
            tracing::debug!("history: too many records waiting; one dropped");
        }
    }
}

async fn write_all(election: String, mut events: mpsc::Receiver<Event>) {
    let mut off = false;
    // The term begun last: its end completes it.
    let mut current: Option<Term> = None;
    while let Some(event) = events.recv().await {
        if off {
            continue;
        }
        let (client, term, first) = match event {
            Event::Begin(client, term) => {
                current = Some(term.clone());
                (client, term, true)
            }
            Event::End(client, token, ending) => {
                let mut term = match current.take() {
                    Some(t) if t.token == token => t,
                    _ => continue,
                };
                term.start_ms = term.start_ms.min(ending.end_ms);
                term.end_ms = Some(ending.end_ms);
                term.reason = Some(ending.reason);
                term.status = ending.status;
                (client, term, false)
            }
        };
        // Off the handover's path in time too: the record it follows (a term begun, one
        // ended) came with a handover, whose new child is starting.
        tokio::time::sleep(crate::election::SETTLE).await;
        let until = tokio::time::Instant::now() + RETRY_FOR;
        loop {
            let done = match first {
                true => begin(&client, &election, &term).await,
                false => put(&client, &election, &term).await,
            };
            match done {
                Ok(()) => break,
                Err(e) if e.is_fatal() => {
                    tracing::warn!(range = %prefix(&election), error = %e, "the history is off: the user's role cannot write this range (leaderrun history shows nothing new)");
                    off = true;
                    break;
                }
                Err(e) if tokio::time::Instant::now() >= until => {
                    tracing::debug!(error = %e, "history: a record could not be written; dropped");
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
}

const CALL: Duration = Duration::from_secs(5);

/// A term begins: close the term before it if its leader could not, write ours, prune.
async fn begin(client: &Client, election: &str, term: &Term) -> Result<(), EtcdError> {
    let newest = read_kvs(client, election, 1).await?;
    if let Some(kv) = newest.first() {
        let open = Term::parse(kv.value()).filter(|t| t.end_ms.is_none() && t.token < term.token);
        if let Some(mut last) = open {
            last.end_ms = Some(term.start_ms.max(last.start_ms));
            last.reason = Some(LOST.into());
            // Unless its leader closed it meanwhile: its own end is the better one.
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    kv.key(),
                    CompareOp::Equal,
                    kv.mod_revision(),
                )])
                .and_then([TxnOp::put(kv.key(), last.value(), None)]);
            etcd::call_as("writing the history", CALL, client, |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        }
    }
    put(client, election, term).await?;
    prune(client, election).await
}

async fn put(client: &Client, election: &str, term: &Term) -> Result<(), EtcdError> {
    let (k, v) = (key(election, term.token), term.value());
    etcd::call_as("writing the history", CALL, client, |mut c| {
        let (k, v) = (k.clone(), v.clone());
        async move { c.put(k, v, None).await }
    })
    .await?;
    Ok(())
}

/// Whether `key` is a record of `election` itself: its prefix and a token of 20 digits (a
/// nested election `NAME/x` has its records under the same prefix, as `x/<token>`).
fn is_record(election: &str, key: &[u8]) -> bool {
    let prefix = prefix(election);
    key.strip_prefix(prefix.as_bytes())
        .is_some_and(|t| t.len() == 20 && t.iter().all(u8::is_ascii_digit))
}

/// The range of the records' keys: the prefix followed by a digit.
fn range(election: &str) -> (String, String) {
    let prefix = prefix(election);
    (format!("{prefix}0"), format!("{prefix}:"))
}

/// Delete all but the newest [`KEPT`] records (a few at a time: it runs at every term).
async fn prune(client: &Client, election: &str) -> Result<(), EtcdError> {
    let (from, to) = range(election);
    let keys = etcd::call_as("pruning the history", CALL, client, |mut c| {
        let options = GetOptions::new()
            .with_range(to.clone())
            .with_keys_only()
            .with_sort(SortTarget::Key, SortOrder::Ascend);
        let from = from.clone();
        async move { c.get(from, Some(options)).await }
    })
    .await?;
    let records: Vec<&[u8]> = keys
        .kvs()
        .iter()
        .map(|kv| kv.key())
        .filter(|k| is_record(election, k))
        .collect();
    let extra = records.len().saturating_sub(KEPT as usize).min(64);
    if extra == 0 {
        return Ok(());
    }
    let deletes: Vec<TxnOp> = records[..extra]
        .iter()
        .map(|k| TxnOp::delete(k.to_vec(), None))
        .collect();
    let txn = Txn::new().and_then(deletes);
    etcd::call_as("pruning the history", CALL, client, |mut c| {
        let txn = txn.clone();
        async move { c.txn(txn).await }
    })
    .await?;
    Ok(())
}

/// The newest `limit` terms, newest first. Records that do not parse are skipped.
pub async fn read(client: &Client, election: &str, limit: u32) -> Result<Vec<Term>, EtcdError> {
    let kvs = read_kvs(client, election, limit).await?;
    Ok(kvs
        .iter()
        .filter(|kv| is_record(election, kv.key()))
        .filter_map(|kv| Term::parse(kv.value()))
        .collect())
}

async fn read_kvs(
    client: &Client,
    election: &str,
    limit: u32,
) -> Result<Vec<etcd_client::KeyValue>, EtcdError> {
    let (from, to) = range(election);
    let mut resp = etcd::call_as("reading the history", CALL, client, |mut c| {
        let options = GetOptions::new()
            .with_range(to.clone())
            .with_sort(SortTarget::Key, SortOrder::Descend)
            .with_limit(i64::from(limit));
        let from = from.clone();
        async move { c.get(from, Some(options)).await }
    })
    .await?;
    Ok(resp.take_kvs())
}

/// A term as a line of `leaderrun history`, with the gap to the term after it (newer), if any.
pub fn line(term: &Term, next_start_ms: Option<u64>) -> String {
    let at = |ms: u64| {
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
    };
    let lasted = term
        .end_ms
        .map(|e| format_ms(e.saturating_sub(term.start_ms)))
        .unwrap_or_else(|| "-".into());
    let gap = match (term.end_ms, next_start_ms) {
        (Some(e), Some(n)) => format_ms(n.saturating_sub(e)),
        _ => "-".into(),
    };
    let reason = match (&term.reason, &term.status) {
        (Some(r), Some(s)) => format!("{r} ({s})"),
        (Some(r), None) => r.clone(),
        (None, _) => "leading".into(),
    };
    format!(
        "{:<20} {:>10} {:<24} {:<24} {:>10} {:>10}  {}",
        escape_controls(&term.id),
        term.token,
        at(term.start_ms),
        term.end_ms.map(at).unwrap_or_else(|| "-".into()),
        lasted,
        gap,
        escape_controls(&reason)
    )
}

pub const HEADER: &str = "ID                        TOKEN START                    END                          LASTED        GAP  REASON";

fn format_ms(ms: u64) -> String {
    if ms < 10_000 {
        format!("{ms}ms")
    } else {
        humantime::format_duration(Duration::from_secs(ms / 1000)).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term() -> Term {
        Term {
            id: "host-a".into(),
            key: "web/694d".into(),
            token: 42,
            start_ms: 1_700_000_000_000,
            end_ms: Some(1_700_000_005_000),
            reason: Some("step-down".into()),
            status: Some("exit 0".into()),
        }
    }

    #[test]
    fn a_record_reads_back_and_keys_sort_as_terms_began() {
        let t = term();
        assert_eq!(Term::parse(t.value().as_bytes()), Some(t.clone()));
        let open = Term {
            end_ms: None,
            reason: None,
            status: None,
            ..t
        };
        assert_eq!(Term::parse(open.value().as_bytes()), Some(open));
        assert!(key("web", 9) < key("web", 10));
        // A nested election's records share the prefix, not the shape.
        assert!(is_record("web", key("web", 42).as_bytes()));
        assert!(!is_record("web", key("web/x", 42).as_bytes()));
        assert!(!is_record("web", b"leaderrun.history/web/42"));
        let (from, to) = range("web");
        assert!(from <= key("web", 0) && key("web", i64::MAX) < to);
        assert_eq!(Term::parse(b"garbage"), None);
        assert_eq!(Term::parse(b"{\"token\":\"1\"}"), None);
    }

    #[test]
    fn a_line_gives_the_span_the_reason_and_the_gap() {
        let l = line(&term(), Some(1_700_000_005_007));
        assert!(l.contains("host-a") && l.contains("42"), "{l}");
        assert!(l.contains("5000ms") && l.contains("7ms"), "{l}");
        assert!(l.contains("step-down (exit 0)"), "{l}");
        let open = Term {
            end_ms: None,
            reason: None,
            ..term()
        };
        assert!(line(&open, None).ends_with("leading"));
    }
}
