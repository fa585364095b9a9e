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

/// How to reach etcd: what every subcommand connects with, validated at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Connection {
    /// Normalized `http://host:port` or `https://host:port`, without duplicates, at most 64.
    pub endpoints: Vec<String>,
    /// TLS (https:// endpoints): the files are read again at every new connection.
    pub tls: Option<TlsFiles>,
    /// User authentication.
    pub user: Option<Credentials>,
}

/// `--cacert`, `--cert`, `--key`: paths, read when a connection is made (certificates rotate).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA bundle that signs etcd's server certificates; None: the system's roots.
    pub cacert: Option<std::path::PathBuf>,
    /// The client certificate and its key, for etcd's `--client-cert-auth` (both or neither).
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

/// `--user` and its password (from `--password-file` or `LEADERRUN_PASSWORD`, never argv).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub name: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Build the client. No request is made here: the channel connects lazily, so an etcd that is
/// down is not an error yet (the supervisor retries), but a malformed endpoint is (exit 2).
///
/// No client-wide timeout: it would also cut `campaign`, which blocks until elected. Single
/// calls get `tokio::time::timeout` instead.
pub async fn connect(connection: &Connection) -> Result<Client, Error> {
    Client::connect(&connection.endpoints, Some(options()))
        .await
        .map_err(|e| match e {
            etcd_client::Error::InvalidUri(_) | etcd_client::Error::InvalidArgs(_) => {
                Error::Usage(format!("--endpoints: {e}"))
            }
            other => EtcdError::new("connecting", other).into(),
        })
}

/// One member's own client, for the keepalive stream: the balanced client may open a new stream
/// on the very member that stopped answering (a frozen member keeps its TCP connection), so the
/// keepalive picks its member itself and moves to the next one whenever it reopens.
#[derive(Clone)]
pub struct Member {
    pub endpoint: String,
    pub client: Client,
}

pub async fn connect_each(connection: &Connection) -> Result<Vec<Member>, Error> {
    let mut members = Vec::with_capacity(connection.endpoints.len());
    for e in &connection.endpoints {
        let one = Connection {
            endpoints: vec![e.clone()],
            ..connection.clone()
        };
        members.push(Member {
            endpoint: e.clone(),
            client: connect(&one).await?,
        });
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

/// What an etcd error means for the caller: the one place etcd's answers are classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Unreachable, slow, or a leader election in the cluster: try again.
    Retry,
    /// The request never reached a member (no connection could be made): nothing of it can be
    /// pending on the server, so retrying it cannot leave a duplicate behind.
    NeverSent,
    /// The server no longer knows the lease (expired or revoked).
    LeaseGone,
    /// The auth token expired or the auth store moved on: authenticate again, never fatal.
    AuthExpired,
    /// etcd refuses who we are or what we ask: retrying cannot fix it.
    Fatal,
}

/// etcd's messages for "who you are is not allowed", whatever gRPC code carries them: the
/// election service wraps them in `Unknown` (etcd 3.4), and leases need no authentication, so
/// the campaign is the first call to see them.
const AUTH_REFUSALS: &[&str] = &[
    "user name is empty",
    "user name not found",
    "authentication failed",
    "permission denied",
];

/// A token that expired while we were idle, or an auth store that changed under it: Go's client
/// authenticates again on these.
const AUTH_EXPIRED: &[&str] = &["invalid auth token", "revision of auth store is old"];

/// Classify one error from etcd-client.
pub fn kind_of(e: &etcd_client::Error) -> Kind {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            let message = s.message();
            if AUTH_EXPIRED.iter().any(|m| message.contains(m)) {
                Kind::AuthExpired
            } else if s.code() == Code::NotFound {
                Kind::LeaseGone
            } else if matches!(
                s.code(),
                // OutOfRange: a TTL etcd refuses (above its maximum).
                Code::Unauthenticated
                    | Code::PermissionDenied
                    | Code::InvalidArgument
                    | Code::OutOfRange
            ) || AUTH_REFUSALS.iter().any(|m| message.contains(m))
            {
                Kind::Fatal
            } else if s.code() == Code::Unavailable && message.contains("connect error") {
                Kind::NeverSent
            } else {
                Kind::Retry
            }
        }
        etcd_client::Error::LeaseKeepAliveError(m) if m.contains("not found") => Kind::LeaseGone,
        etcd_client::Error::TransportError(_) => Kind::NeverSent,
        etcd_client::Error::InvalidArgs(_) | etcd_client::Error::InvalidUri(_) => Kind::Fatal,
        _ => Kind::Retry,
    }
}

/// An etcd call that failed, with what we were doing and the client's error as its source.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("{what}: {source}")]
    Failed {
        what: &'static str,
        kind: Kind,
        #[source]
        source: etcd_client::Error,
    },
    #[error("{what}: no answer within {}", humantime::format_duration(*after))]
    TimedOut { what: &'static str, after: Duration },
    /// An answer no etcd should give (a lease granted with TTL 0): we cannot work with it.
    #[error("{what}: {detail}")]
    Unexpected { what: &'static str, detail: String },
}

impl EtcdError {
    pub fn new(what: &'static str, source: etcd_client::Error) -> EtcdError {
        EtcdError::Failed {
            what,
            kind: kind_of(&source),
            source,
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            EtcdError::Failed { kind, .. } => *kind,
            EtcdError::TimedOut { .. } => Kind::Retry,
            EtcdError::Unexpected { .. } => Kind::Fatal,
        }
    }

    pub fn is_fatal(&self) -> bool {
        self.kind() == Kind::Fatal
    }
}

/// One unary call, bounded by `wait` (never a client-wide timeout: it would cut `campaign`).
pub async fn call<T>(
    what: &'static str,
    wait: Duration,
    fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, EtcdError> {
    match tokio::time::timeout(wait, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(EtcdError::new(what, e)),
        Err(_) => Err(EtcdError::TimedOut { what, after: wait }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_errors_are_fatal_and_unavailability_is_not() {
        let status = |s: tonic::Status| kind_of(&etcd_client::Error::GRpcStatus(s));
        assert_eq!(status(tonic::Status::permission_denied("no")), Kind::Fatal);
        assert_eq!(status(tonic::Status::unavailable("down")), Kind::Retry);
        let wrapped = tonic::Status::unknown("etcdserver: user name is empty");
        assert_eq!(status(wrapped), Kind::Fatal);
        assert_eq!(status(tonic::Status::not_found("lease")), Kind::LeaseGone);
    }

    #[test]
    fn an_expired_token_is_never_fatal() {
        let status = |s: tonic::Status| kind_of(&etcd_client::Error::GRpcStatus(s));
        let token = tonic::Status::unauthenticated("etcdserver: invalid auth token");
        assert_eq!(status(token), Kind::AuthExpired);
        let old = tonic::Status::invalid_argument("etcdserver: revision of auth store is old");
        assert_eq!(status(old), Kind::AuthExpired);
    }
}
