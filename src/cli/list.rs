//! `leaderrun list`: every key under `NAME/` in the order of the queue, with its role and what
//! the candidate publishes of itself ([`crate::election::priority`]).

use crate::config::{AskConfig, Format};
use crate::election::priority::{self, Published};
use crate::election::{classify, holders, Candidate};
use crate::error::{Error, EXIT_NO_LEADER};
use crate::etcd::{self, EtcdError};
use crate::log::escape_controls;
use etcd_client::{Client, GetOptions, KeyValue, SortOrder, SortTarget};
use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// One line of the list.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// `leader`, `holder k of N`, `standby`, or what a key that is no candidate is.
    pub role: String,
    pub id: String,
    pub key: String,
    /// The key's create revision: its place in the queue, and its fencing token once it leads.
    pub revision: i64,
    pub priority: u32,
    pub published: Option<Published>,
    /// Seconds left on its lease (None: no lease, or it could not be read).
    pub ttl_left: Option<i64>,
}

/// The rows of `election`: `keys` (everything under `NAME/`, oldest first), what candidates
/// published (`published`: key of the lease hex → value) and `n` places.
pub fn rows(
    election: &str,
    keys: &[KeyValue],
    published: &HashMap<String, Published>,
    n: u32,
) -> Vec<Row> {
    keys.iter()
        .enumerate()
        .map(|(i, kv)| {
            let lease = format!("{:x}", kv.lease());
            let role = match classify(election, kv) {
                Candidate::Live if (i as u32) < n && n > 1 => format!("holder {} of {n}", i + 1),
                Candidate::Live if i == 0 => "leader".into(),
                Candidate::Live => "standby".into(),
                Candidate::NoLease => "blocking: no lease".into(),
                Candidate::Nested { election } => format!("nested election {election}"),
                Candidate::Foreign => "foreign key".into(),
            };
            let p = published.get(&lease).cloned();
            Row {
                role,
                id: String::from_utf8_lossy(kv.value()).into_owned(),
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                revision: kv.create_revision(),
                priority: p.as_ref().map_or(0, |p| p.priority),
                published: p,
                ttl_left: None,
            }
        })
        .collect()
}

pub fn render(rows: &[Row], format: Format) -> String {
    match format {
        Format::Json => {
            let all: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| {
                    let p = r.published.as_ref();
                    serde_json::json!({
                        "role": r.role,
                        "id": r.id,
                        "key": r.key,
                        "revision": r.revision,
                        "priority": r.priority,
                        "preempt": p.map(|p| priority::preempt_word(p.preempt)),
                        "hot_standby": p.map(|p| p.hot),
                        "since_ms": p.map(|p| p.since_ms),
                        "ttl_left": r.ttl_left,
                    })
                })
                .collect();
            serde_json::Value::Array(all).to_string()
        }
        Format::Text => {
            let mut out = format!(
                "{:<14} {:<24} {:>8} {:<9} {:<4} {:<20} {:>7} {:>10}  KEY",
                "ROLE", "ID", "PRIORITY", "PREEMPT", "HOT", "SINCE", "TTL", "REVISION"
            );
            for r in rows {
                let p = r.published.as_ref();
                let since = p.filter(|p| p.since_ms > 0).map_or("-".into(), |p| {
                    humantime::format_rfc3339_seconds(
                        UNIX_EPOCH + Duration::from_millis(p.since_ms),
                    )
                    .to_string()
                });
                out.push_str(&format!(
                    "\n{:<14} {:<24} {:>8} {:<9} {:<4} {:<20} {:>7} {:>10}  {}",
                    escape_controls(&r.role),
                    escape_controls(&r.id),
                    r.priority,
                    p.map_or("-".into(), |p| priority::preempt_word(p.preempt)),
                    p.map_or("-", |p| if p.hot { "yes" } else { "no" }),
                    since,
                    r.ttl_left.map_or("-".into(), |t| format!("{t}s")),
                    r.revision,
                    escape_controls(&r.key),
                ));
            }
            out
        }
    }
}

/// Run the subcommand; returns the exit status.
pub async fn run(config: AskConfig) -> Result<u8, Error> {
    let connection = &config.connection;
    let client = etcd::connect(connection)
        .await
        .map_err(|e| Error::on_connection(connection, e))?;
    let election = config.election.as_str();
    let keys = read_all(&client, format!("{election}/"), SortTarget::Create)
        .await
        .map_err(|e| Error::on_connection(connection, e))?;
    let published = match read_all(&client, priority::prefix(election), SortTarget::Key).await {
        Ok(kvs) => kvs
            .iter()
            .filter_map(|kv| {
                let key = String::from_utf8_lossy(kv.key());
                let lease = key.strip_prefix(&priority::prefix(election))?.to_string();
                Some((lease, Published::parse(kv.value())?))
            })
            .collect(),
        Err(e) => {
            tracing::warn!(range = %priority::prefix(election), error = %e, "cannot read what the candidates publish: priorities show as 0");
            HashMap::new()
        }
    };
    // N of a --holders N election, as its candidates say it.
    let n = read_all(&client, holders::prefix(election), SortTarget::Key)
        .await
        .ok()
        .and_then(|kvs| {
            kvs.iter()
                .find_map(|kv| String::from_utf8_lossy(kv.value()).parse::<u32>().ok())
        })
        .unwrap_or(1);
    let mut rows = rows(election, &keys, &published, n);
    for (row, kv) in rows.iter_mut().zip(&keys) {
        if kv.lease() != 0 {
            row.ttl_left = ttl_left(&client, kv.lease()).await;
        }
    }
    print(&render(&rows, config.format))?;
    let leads = rows
        .first()
        .is_some_and(|r| r.role == "leader" || r.role.starts_with("holder"));
    Ok(if leads { 0 } else { EXIT_NO_LEADER })
}

async fn read_all(
    client: &Client,
    prefix: String,
    order: SortTarget,
) -> Result<Vec<KeyValue>, EtcdError> {
    let options = GetOptions::new()
        .with_prefix()
        .with_sort(order, SortOrder::Ascend);
    let mut resp = etcd::call_as("listing the candidates", CALL_TIMEOUT, client, |mut c| {
        let (prefix, options) = (prefix.clone(), options.clone());
        async move { c.get(prefix, Some(options)).await }
    })
    .await?;
    Ok(resp.take_kvs())
}

async fn ttl_left(client: &Client, lease: i64) -> Option<i64> {
    let resp = etcd::call("reading a lease", CALL_TIMEOUT, {
        let mut c = client.clone();
        async move { c.lease_time_to_live(lease, None).await }
    })
    .await
    .ok()?;
    (resp.ttl() >= 0).then_some(resp.ttl())
}

/// One block of text on stdout; a closed stdout is an error of its own.
pub fn print(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    out.write_all(format!("{text}\n").as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("writing to stdout", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_a_header_and_a_line_per_row_and_json_is_one_array() {
        let row = Row {
            role: "leader".into(),
            id: "a\nforged".into(),
            key: "web/1".into(),
            revision: 5,
            priority: 3,
            published: None,
            ttl_left: Some(9),
        };
        let text = render(std::slice::from_ref(&row), Format::Text);
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("a\\nforged") && text.contains("9s"), "{text}");
        let v: serde_json::Value = serde_json::from_str(&render(&[row], Format::Json)).unwrap();
        assert_eq!(v[0]["priority"], 3);
        assert_eq!(v[0]["role"], "leader");
    }
}
