//! The etcd client: how we connect, which errors are worth retrying, and how long to wait.

use crate::error::Error;
use etcd_client::{Client, ConnectOptions};
use std::time::Duration;
use tonic::Code;

/// HTTP/2 ping interval: etcd's minimum (`--grpc-keepalive-min-time`); faster pings get the
/// connection closed with "too many pings".
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(5);
/// A ping unanswered this long marks the connection dead, so streams on a hung member fail and
/// are re-established elsewhere.
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(3);
/// TCP connect: loopback and LAN answer in milliseconds; a dead host should not hold us long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Build the client. No request is made here: the channel connects lazily, so an etcd that is
/// down is not an error yet (the supervisor retries), but a malformed endpoint is (exit 2).
///
/// No client-wide timeout: it would also cut `campaign`, which blocks until elected. Single
/// calls get `tokio::time::timeout` instead.
pub async fn connect(endpoints: &[String]) -> Result<Client, Error> {
    Client::connect(endpoints, Some(options()))
        .await
        .map_err(|e| match e {
            etcd_client::Error::InvalidUri(_) | etcd_client::Error::InvalidArgs(_) => {
                Error::Usage(format!("--endpoints: {e}"))
            }
            other => Error::EtcdFatal(other.to_string()),
        })
}

/// One client per endpoint, for the keepalive stream: the balanced client may open a new stream
/// on the very member that stopped answering (a frozen member keeps its TCP connection), so the
/// keepalive picks its member itself and moves to the next one whenever it reopens.
pub async fn connect_each(endpoints: &[String]) -> Result<Vec<Client>, Error> {
    let mut members = Vec::with_capacity(endpoints.len());
    for e in endpoints {
        members.push(connect(std::slice::from_ref(e)).await?);
    }
    Ok(members)
}

fn options() -> ConnectOptions {
    ConnectOptions::new()
        .with_keep_alive(HTTP2_PING_INTERVAL, HTTP2_PING_TIMEOUT)
        .with_keep_alive_while_idle(true)
        .with_connect_timeout(CONNECT_TIMEOUT)
        // A member cut off from the raft leader fails our streams instead of holding them.
        .with_require_leader(true)
}

/// etcd's messages for "who you are is not allowed", whatever gRPC code carries them: the
/// election service wraps them in `Unknown` (etcd 3.4), and leases need no authentication, so
/// the campaign is the first call to see them.
const AUTH_REFUSALS: &[&str] = &[
    "user name is empty",
    "user name not found",
    "authentication failed",
    "invalid auth token",
    "permission denied",
];

/// Errors that retrying cannot fix: etcd refuses who we are or what we ask.
pub fn is_fatal(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            matches!(
                s.code(),
                // OutOfRange: a TTL etcd refuses (above its maximum).
                Code::Unauthenticated
                    | Code::PermissionDenied
                    | Code::InvalidArgument
                    | Code::OutOfRange
            ) || AUTH_REFUSALS.iter().any(|m| s.message().contains(m))
        }
        etcd_client::Error::InvalidArgs(_) | etcd_client::Error::InvalidUri(_) => true,
        _ => false,
    }
}

/// The request never reached a member (no connection could be made): nothing of it can be
/// pending on the server, so retrying it cannot leave a duplicate behind.
pub fn never_sent(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            s.code() == Code::Unavailable && s.message().contains("connect error")
        }
        etcd_client::Error::TransportError(_) => true,
        _ => false,
    }
}

/// The server no longer knows the lease (expired or revoked).
pub fn is_lease_not_found(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => s.code() == Code::NotFound,
        etcd_client::Error::LeaseKeepAliveError(m) => m.contains("not found"),
        _ => false,
    }
}

/// Capped exponential backoff for retrying etcd while it is unreachable.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    cap: Duration,
}

/// First retry after this: quick enough that a restarting etcd is picked up at once.
const BACKOFF_BASE: Duration = Duration::from_millis(100);

impl Backoff {
    /// Backoff capped at `cap` (the supervisor uses TTL/2 within 1 s..5 s, so a candidate
    /// notices a returning etcd within about half a TTL).
    pub fn new(cap: Duration) -> Backoff {
        Backoff {
            next: BACKOFF_BASE.min(cap),
            cap,
        }
    }

    /// The delay before the next attempt; each call doubles the following one up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.cap);
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(500));
        let got: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 500, 500]);
    }

    #[test]
    fn auth_errors_are_fatal_and_unavailability_is_not() {
        let denied = etcd_client::Error::GRpcStatus(tonic::Status::permission_denied("no"));
        assert!(is_fatal(&denied));
        let down = etcd_client::Error::GRpcStatus(tonic::Status::unavailable("down"));
        assert!(!is_fatal(&down));
        let wrapped = tonic::Status::unknown("etcdserver: user name is empty");
        assert!(is_fatal(&etcd_client::Error::GRpcStatus(wrapped)));
    }
}
