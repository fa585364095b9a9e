//! `leaderrun history`: the last terms of an election, newest first
//! ([`crate::election::history`]).

use crate::cli::list::print;
use crate::config::{AskConfig, Format};
use crate::election::history::{self, Term};
use crate::error::Error;
use crate::etcd;

pub fn render(terms: &[Term], format: Format) -> String {
    // Newest first: the term after each is the one before it in the list.
    let next_start = |i: usize| i.checked_sub(1).map(|j| terms[j].start_ms);
    match format {
        Format::Json => {
            let all: Vec<serde_json::Value> = terms
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let gap = t
                        .end_ms
                        .zip(next_start(i))
                        .map(|(e, n)| n.saturating_sub(e));
                    serde_json::json!({
                        "id": t.id,
                        "key": t.key,
                        "token": t.token,
                        "start_ms": t.start_ms,
                        "end_ms": t.end_ms,
                        "lasted_ms": t.end_ms.map(|e| e.saturating_sub(t.start_ms)),
                        "reason": t.reason,
                        "status": t.status,
                        "gap_to_next_ms": gap,
                    })
                })
                .collect();
            serde_json::Value::Array(all).to_string()
        }
        Format::Text => {
            let mut out = history::HEADER.to_string();
            for (i, t) in terms.iter().enumerate() {
                out.push('\n');
                out.push_str(&history::line(t, next_start(i)));
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
    let terms = history::read(&client, &config.election, config.limit)
        .await
        .map_err(|e| Error::on_connection(connection, e))?;
    print(&render(&terms, config.format))?;
    Ok(0)
}
