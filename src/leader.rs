//! `leaderrun leader`: who leads an election, once or (`--watch`) at every change.

use crate::config::EtcdArgs;
use crate::election::first_candidate;
use crate::error::{Error, EXIT_NO_LEADER};
use crate::etcd;
use clap::{Parser, ValueEnum};
use etcd_client::{Client, KeyValue, WatchOptions};
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::sleep;

/// Print the current leader of an election (exit 0), or exit 3 when nobody leads.
#[derive(Debug, Parser)]
#[command(name = "leaderrun leader", version, long_about = None)]
pub struct LeaderCli {
    #[command(flatten)]
    pub etcd: EtcdArgs,

    /// The election to ask about.
    #[arg(long, env = "LEADERRUN_ELECTION")]
    pub election: String,

    /// Output: `text` (id=... key=... revision=... lease=...) or `json` (one object per line).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Print every change of leader until interrupted, like `etcdctl elect -l`.
    #[arg(long)]
    pub watch: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// How long one read of the election may take before we report etcd unreachable.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before re-establishing a broken watch.
const WATCH_RETRY: Duration = Duration::from_secs(1);

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

/// One line: the leader, or that there is none.
pub fn render(leader: Option<&Leader>, format: Format) -> String {
    match (leader, format) {
        (Some(l), Format::Text) => format!(
            "id={} key={} revision={} lease={:x}",
            l.id, l.key, l.revision, l.lease
        ),
        (None, Format::Text) => "no leader".into(),
        (Some(l), Format::Json) => serde_json::json!({
            "id": l.id,
            "key": l.key,
            "revision": l.revision,
            "lease": format!("{:x}", l.lease),
        })
        .to_string(),
        (None, Format::Json) => "null".into(),
    }
}

async fn read(client: &Client, election: &str) -> Result<(Option<Leader>, i64), Error> {
    let (first, revision) = first_candidate(client, election, READ_TIMEOUT)
        .await
        .map_err(|e| Error::EtcdFatal(format!("cannot read election {election}: {e}")))?;
    Ok((first.as_ref().map(Leader::from), revision))
}

/// Run the subcommand; returns the exit status.
pub async fn run(cli: LeaderCli) -> Result<u8, Error> {
    if cli.election.is_empty() {
        return Err(Error::Usage("--election must not be empty".into()));
    }
    let client = etcd::connect(&cli.etcd.endpoints()?).await?;
    let (mut current, mut revision) = read(&client, &cli.election).await?;
    println!("{}", render(current.as_ref(), cli.format));
    if !cli.watch {
        return Ok(if current.is_some() { 0 } else { EXIT_NO_LEADER });
    }
    let mut term = signal(SignalKind::terminate()).map_err(|e| Error::io("signal handler", e))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| Error::io("signal handler", e))?;
    let prefix = format!("{}/", cli.election);
    let mut watcher = client.clone();
    loop {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let watched = async {
            let mut stream = watcher.watch(prefix.clone(), Some(options)).await?;
            // Any change under the prefix may change who is first: read it again.
            while let Some(resp) = stream.message().await? {
                if !resp.events().is_empty() {
                    return Ok(());
                }
            }
            Err(etcd_client::Error::WatchError("watch ended".into()))
        };
        tokio::select! {
            r = watched => if let Err(e) = r {
                tracing::warn!(error = %e, "watch failed; re-establishing");
                sleep(WATCH_RETRY).await;
            },
            _ = term.recv() => return Ok(0),
            _ = int.recv() => return Ok(0),
        }
        match read(&client, &cli.election).await {
            Ok((leader, rev)) => {
                revision = rev;
                if leader != current {
                    println!("{}", render(leader.as_ref(), cli.format));
                    current = leader;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the election; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_text_and_json() {
        let l = Leader {
            id: "db-1:42".into(),
            key: "web/694d".into(),
            revision: 7,
            lease: 0x694d,
        };
        assert_eq!(
            render(Some(&l), Format::Text),
            "id=db-1:42 key=web/694d revision=7 lease=694d"
        );
        let v: serde_json::Value = serde_json::from_str(&render(Some(&l), Format::Json)).unwrap();
        assert_eq!(v["revision"], 7);
        assert_eq!(render(None, Format::Json), "null");
    }
}
