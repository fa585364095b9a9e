//! `leaderrun leader`: who leads an election (with `--holders N`: who holds), once or
//! (`--watch`) at every change.

use crate::config::LeaderConfig;
use crate::election::{classify, first_candidates, Candidate};
use crate::error::{Error, EXIT_NO_LEADER};
use crate::etcd;
use crate::log::escape_controls;
use crate::log::recurring::Recurring;
use etcd_client::{Client, KeyValue, WatchOptions};
use std::io::{ErrorKind, Write};
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::sleep;

pub use crate::config::Format;

/// How long one read of the election may take before we report etcd unreachable.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before re-establishing a broken watch.
const WATCH_RETRY: Duration = Duration::from_secs(1);
/// Exit status when stdout is closed (its reader went away): a local failure, said quietly.
const EXIT_STDOUT_CLOSED: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub id: String,
    pub key: String,
    pub revision: i64,
    pub lease: i64,
}

impl From<&KeyValue> for Leader {
    fn from(kv: &KeyValue) -> Leader {
        Leader {
            id: String::from_utf8_lossy(kv.value()).into_owned(),
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            revision: kv.create_revision(),
            lease: kv.lease(),
        }
    }
}

/// A key that is first under `NAME/` but not a candidate of `NAME`: nobody leads while it is
/// there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub key: String,
    pub revision: i64,
    pub reason: String,
}

/// What the first key under `NAME/` makes of the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    Nobody,
    Leader(Leader),
    Blocked(Blocked),
}

impl View {
    /// The view of `election` whose first-created key is `first`.
    pub fn of(election: &str, first: Option<&KeyValue>) -> View {
        let Some(kv) = first else {
            return View::Nobody;
        };
        let reason = match classify(election, kv) {
            Candidate::Live => return View::Leader(Leader::from(kv)),
            Candidate::NoLease => {
                "no lease, not a candidate; it blocks the election until deleted".to_string()
            }
            Candidate::Nested { election: nested } => format!(
                "a candidate of the nested election {nested}, not of {election}; it blocks \
                 {election} while it campaigns"
            ),
            Candidate::Foreign => format!(
                "its name is not its lease id ({:x}), not a candidate; it blocks the election \
                 until deleted or its lease ends",
                kv.lease()
            ),
        };
        View::Blocked(Blocked {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            revision: kv.create_revision(),
            reason,
        })
    }

    /// The exit status of a single look: 0 when somebody leads, 3 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            View::Leader(_) => 0,
            View::Nobody | View::Blocked(_) => EXIT_NO_LEADER,
        }
    }
}

/// One line: the leader, that there is none, or what blocks the election. Text from etcd is
/// escaped: control characters cannot split or forge lines.
pub fn render(view: &View, format: Format) -> String {
    match (view, format) {
        (View::Leader(l), Format::Text) => format!(
            "id={} key={} revision={} lease={:x}",
            escape_controls(&l.id),
            escape_controls(&l.key),
            l.revision,
            l.lease
        ),
        (View::Nobody, Format::Text) => "no leader".into(),
        (View::Blocked(b), Format::Text) => format!(
            "blocked by key={}: {}",
            escape_controls(&b.key),
            escape_controls(&b.reason)
        ),
        (View::Leader(l), Format::Json) => serde_json::json!({
            "id": l.id,
            "key": l.key,
            "revision": l.revision,
            "lease": format!("{:x}", l.lease),
        })
        .to_string(),
        (View::Nobody, Format::Json) => "null".into(),
        (View::Blocked(b), Format::Json) => serde_json::json!({
            "blocked_by": b.key,
            "revision": b.revision,
            "reason": b.reason,
        })
        .to_string(),
    }
}

/// The first `holders` keys under `NAME/`, a view each (the holders, or what takes a place
/// without being a candidate), or `[Nobody]`; with the revision they were read at.
async fn read(client: &Client, election: &str, holders: u32) -> Result<(Vec<View>, i64), Error> {
    let (first, revision) =
        first_candidates(client, election, i64::from(holders), READ_TIMEOUT).await?;
    let views = match first.is_empty() {
        true => vec![View::Nobody],
        false => first
            .iter()
            .map(|kv| View::of(election, Some(kv)))
            .collect(),
    };
    Ok((views, revision))
}

/// The exit status of a single look: 0 when somebody leads (holds), 3 otherwise.
fn exit_code(views: &[View]) -> u8 {
    views
        .iter()
        .map(View::exit_code)
        .min()
        .unwrap_or(EXIT_NO_LEADER)
}

/// Print the views, a line each.
fn print_all(views: &[View], format: Format) -> Result<(), Closed> {
    views.iter().try_for_each(|v| print(&render(v, format)))
}

/// Why output stopped.
enum Closed {
    /// Its reader went away: end quietly.
    Quietly,
    Error(Error),
}

/// Print one line on stdout, without panicking when stdout is closed.
fn print(line: &str) -> Result<(), Closed> {
    let mut out = std::io::stdout().lock();
    out.write_all(format!("{line}\n").as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            ErrorKind::BrokenPipe => Closed::Quietly,
            _ => Closed::Error(Error::io("writing to stdout", e)),
        })
}

/// Run the subcommand; returns the exit status.
pub async fn run(config: LeaderConfig) -> Result<u8, Error> {
    match watch(config).await {
        Ok(code) => Ok(code),
        Err(Closed::Quietly) => Ok(EXIT_STDOUT_CLOSED),
        Err(Closed::Error(e)) => Err(e),
    }
}

async fn watch(config: LeaderConfig) -> Result<u8, Closed> {
    let client = etcd::connect(&config.connection)
        .await
        .map_err(|e| Closed::Error(Error::on_connection(&config.connection, e)))?;
    // The first read is the first contact: a TLS failure there names the endpoints and files.
    let (mut current, mut revision) = read(&client, &config.election, config.holders)
        .await
        .map_err(|e| match e {
            Error::Etcd(e) => Closed::Error(Error::on_connection(&config.connection, e)),
            e => Closed::Error(e),
        })?;
    print_all(&current, config.format)?;
    if !config.watch {
        return Ok(exit_code(&current));
    }
    let handler = |e| Closed::Error(Error::io("signal handler", e));
    let mut term = signal(SignalKind::terminate()).map_err(handler)?;
    let mut int = signal(SignalKind::interrupt()).map_err(handler)?;
    let prefix = format!("{}/", config.election);
    let mut watcher = client.clone();
    // One condition while etcd is away (the watch and the reads fail alike): logged when it
    // starts, then every 30 s, and when it ends.
    let mut trouble = Recurring::new("following the election");
    loop {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let watched = async {
            let mut stream = watcher.watch(prefix.clone(), Some(options)).await?;
            // Any change under the prefix may change who is first (who holds): read again.
            while let Some(resp) = stream.message().await? {
                if !resp.events().is_empty() {
                    return Ok(());
                }
            }
            Err(etcd_client::Error::WatchError("watch ended".into()))
        };
        let watch_worked = tokio::select! {
            r = watched => match r {
                Ok(()) => true,
                Err(e) => {
                    trouble.report(format_args!("watch: {}", crate::etcd::cause(&e)));
                    sleep(WATCH_RETRY).await;
                    false
                }
            },
            _ = term.recv() => return Ok(0),
            _ = int.recv() => return Ok(0),
        };
        match read(&client, &config.election, config.holders).await {
            Ok((views, rev)) => {
                // Both work again (a read alone may work while the watch is refused).
                if watch_worked {
                    trouble.clear();
                }
                revision = rev;
                if views != current {
                    print_all(&views, config.format)?;
                    current = views;
                }
            }
            Err(e) => trouble.report(format_args!("reading: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_text_and_json() {
        let l = View::Leader(Leader {
            id: "db-1:42".into(),
            key: "web/694d".into(),
            revision: 7,
            lease: 0x694d,
        });
        assert_eq!(
            render(&l, Format::Text),
            "id=db-1:42 key=web/694d revision=7 lease=694d"
        );
        let v: serde_json::Value = serde_json::from_str(&render(&l, Format::Json)).unwrap();
        assert_eq!(v["revision"], 7);
        assert_eq!(render(&View::Nobody, Format::Json), "null");
        assert_eq!(render(&View::Nobody, Format::Text), "no leader");
    }

    #[test]
    fn renders_what_blocks_the_election() {
        let b = View::Blocked(Blocked {
            key: "web/x".into(),
            revision: 3,
            reason: "no lease".into(),
        });
        assert_eq!(render(&b, Format::Text), "blocked by key=web/x: no lease");
        let v: serde_json::Value = serde_json::from_str(&render(&b, Format::Json)).unwrap();
        assert_eq!(
            (v["blocked_by"].as_str(), v["reason"].as_str()),
            (Some("web/x"), Some("no lease"))
        );
        assert_eq!(b.exit_code(), EXIT_NO_LEADER);
    }

    #[test]
    fn text_from_etcd_cannot_split_the_line() {
        let l = View::Leader(Leader {
            id: "evil\nid=forged".into(),
            key: "web/694d".into(),
            revision: 7,
            lease: 0x694d,
        });
        let line = render(&l, Format::Text);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.starts_with("id=evil\\nid=forged "), "{line}");
        assert_eq!(render(&l, Format::Json).lines().count(), 1);
    }
}
