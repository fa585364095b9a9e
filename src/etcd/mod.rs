//! The etcd client: how we connect, which errors are worth retrying, and how long to wait.

pub mod tls;

use etcd_client::{Client, ConnectOptions, GetResponse, Txn, TxnOp, TxnOpResponse};
use std::sync::Arc;
use std::time::Duration;
use tls::TlsError;
use tonic::transport::Endpoint;
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

/// Build a client for `conn`. Without credentials no request is made (the channel connects
/// lazily); with them, etcd-client authenticates at once, a round trip that fails like any call
/// while etcd is unreachable: callers retry it.
///
/// Every connection, http:// or https://, goes through our connector ([`crate::etcd::tls`]):
/// over TLS every new connection of the client, the ones its channel makes by itself later
/// included, reads the TLS files again, so a renewed certificate or CA is used without a
/// restart. They are also read here once, so that files that make no configuration (no PEM, a
/// key that is not the certificate's) are reported at once, naming the file.
///
/// No client-wide timeout: it would also cut `campaign`, which blocks until elected. Single
/// calls get [`call`] instead.
pub async fn connect(conn: &Connection) -> Result<Client, EtcdError> {
    if let Some(files) = &conn.tls {
        tls::client_config_off_thread(Arc::new(files.clone())).await?;
    }
    let channel = tls::channel(&conn.endpoints, conn.tls.as_ref(), http2_settings)
        .map_err(|e| EtcdError::new("connecting", e))?;
    Client::from_channel(channel, Some(options(conn)))
        .await
        .map_err(|e| EtcdError::new("connecting", e))
}

/// Each endpoint's HTTP/2 keepalive and connect timeout.
fn http2_settings(endpoint: Endpoint) -> Endpoint {
    endpoint
        .keep_alive_while_idle(true)
        .http2_keep_alive_interval(HTTP2_PING_INTERVAL)
        .keep_alive_timeout(HTTP2_PING_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
}

/// One member's own client, for the keepalive stream: the balanced client may open a new stream
/// on the very member that stopped answering (a frozen member keeps its TCP connection), so the
/// keepalive picks its member itself and moves to the next one whenever it reopens. The client
/// is built again (files read again) after a failure.
#[derive(Clone)]
pub struct Member {
    pub endpoint: String,
    conn: Connection,
    client: Option<Client>,
}

impl Member {
    /// The client, built now if there is none (the last one failed).
    pub async fn client(&mut self) -> Result<&mut Client, EtcdError> {
        if self.client.is_none() {
            self.client = Some(connect(&self.conn).await?);
        }
        Ok(self.client.as_mut().expect("set above"))
    }

    /// Drop the client: the next use connects again.
    pub fn reset(&mut self) {
        self.client = None;
    }
}

/// One [`Member`] per endpoint; nothing is contacted yet.
pub fn members(conn: &Connection) -> Vec<Member> {
    conn.endpoints
        .iter()
        .map(|e| Member {
            endpoint: e.clone(),
            conn: Connection {
                endpoints: vec![e.clone()],
                ..conn.clone()
            },
            client: None,
        })
        .collect()
}

/// The client's options: the channel is ours ([`tls::channel`]), these give it only the
/// require-leader flag and the user.
fn options(conn: &Connection) -> ConnectOptions {
    // A member cut off from the raft leader fails our streams instead of holding them.
    let mut options = ConnectOptions::new().with_require_leader(true);
    if let Some(user) = &conn.user {
        // Unary calls re-authenticate by themselves when the token expired; streams are
        // re-opened after `Client::refresh_token` by their owners.
        options = options
            .with_user(user.name.clone(), user.password.clone())
            .with_auto_token_refresh(true);
    }
    options
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
    /// The TLS handshake failed on a certificate (unknown CA, wrong name, expired, refused
    /// client certificate): fatal before the first contact with etcd, retried after it (a
    /// certificate may be renewed under a running leader).
    Tls,
    /// etcd refuses who we are or what we ask: retrying cannot fix it.
    Fatal,
}

impl Kind {
    /// Its label in `leaderrun_etcd_errors_total{kind}` (one of `metrics::ERROR_KINDS`).
    pub fn label(self) -> &'static str {
        match self {
            Kind::Retry => "retry",
            Kind::NeverSent => "never_sent",
            Kind::LeaseGone => "lease_gone",
            Kind::AuthExpired => "auth_expired",
            Kind::Tls => "tls",
            Kind::Fatal => "fatal",
        }
    }
}

/// etcd's messages for "who you are is not allowed", whatever gRPC code carries them: the
/// election service wraps them in `Unknown` (etcd 3.4), and leases need no authentication, so
/// the campaign is the first call to see them.
const AUTH_REFUSALS: &[&str] = &[
    "user name is empty",
    "user name not found",
    "authentication failed",
    PERMISSION_DENIED,
    // --user given to an etcd without authentication: etcdctl refuses it too.
    "authentication is not enabled",
];

/// The refusal that concerns a key range (the user's role), not the user.
const PERMISSION_DENIED: &str = "permission denied";

/// A token that expired while we were idle, or an auth store that changed under it: Go's client
/// authenticates again on these.
const AUTH_EXPIRED: &[&str] = &[
    "invalid auth token",
    "revision of auth store is old",
    // etcd 3.5's words for the same.
    "revision in header is old",
];

/// etcd's words for a request above its `--max-request-bytes` (etcdserver's check), and
/// gRPC's for one above the message size etcd's server accepts (that limit plus 512 KiB).
const TOO_LARGE: &[&str] = &["request is too large", "larger than max"];

/// What an error says beyond its [`Kind`], for the line that reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// What went wrong, in one short phrase ([`cause`]): `connection refused`, `deadline
    /// exceeded`, etcd's own words (`etcdserver: permission denied`).
    Other(String),
    /// A TLS failure, in the words of the error that names it (the innermost of the chain).
    Tls(String),
    /// etcd refused a permission on a key range to the user's role.
    Denied,
    /// The request is larger than etcd takes (`--max-request-bytes`).
    TooLarge,
}

/// Classify one error from etcd-client: the one place etcd's answers, and the transport's
/// failures, are given a meaning.
pub fn classify(e: &etcd_client::Error) -> (Kind, Reason) {
    if let Some(failure) = tls_failure(e) {
        return (Kind::Tls, Reason::Tls(failure));
    }
    let (kind, reason) = kind_of(e);
    (kind, reason.unwrap_or_else(|| Reason::Other(cause(e))))
}

/// The kind of `e` (not a TLS failure), and its reason when it is more than its cause.
fn kind_of(e: &etcd_client::Error) -> (Kind, Option<Reason>) {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            let message = s.message();
            if AUTH_EXPIRED.iter().any(|m| message.contains(m)) {
                (Kind::AuthExpired, None)
            } else if s.code() == Code::NotFound {
                (Kind::LeaseGone, None)
            } else if TOO_LARGE.iter().any(|m| message.contains(m)) {
                // Sent again, it is as large again.
                (Kind::Fatal, Some(Reason::TooLarge))
            } else if message.contains(PERMISSION_DENIED) {
                (Kind::Fatal, Some(Reason::Denied))
            } else if matches!(
                s.code(),
                // OutOfRange: a TTL etcd refuses (above its maximum).
                Code::Unauthenticated
                    | Code::PermissionDenied
                    | Code::InvalidArgument
                    | Code::OutOfRange
            ) || AUTH_REFUSALS.iter().any(|m| message.contains(m))
            {
                (Kind::Fatal, None)
            } else if s.code() == Code::Unavailable && message.contains("connect error") {
                (Kind::NeverSent, None)
            } else {
                (Kind::Retry, None)
            }
        }
        etcd_client::Error::LeaseKeepAliveError(m) if m.contains("not found") => {
            (Kind::LeaseGone, None)
        }
        etcd_client::Error::TransportError(_) => (Kind::NeverSent, None),
        etcd_client::Error::InvalidArgs(_) | etcd_client::Error::InvalidUri(_) => {
            (Kind::Fatal, None)
        }
        _ => (Kind::Retry, None),
    }
}

/// What went wrong, in one short phrase: the transport's failure in words (`connection
/// refused`, `connection reset`, `no route to host`, `timed out`, ...), from the first
/// `io::Error`, HTTP/2 error or connector error found down the error's chain of sources; else
/// etcd's own message (`etcdserver: request timed out`), or the gRPC code's meaning (`deadline
/// exceeded`). Never gRPC's status dump, nor the chain of wrappers around the cause.
pub fn cause(e: &etcd_client::Error) -> String {
    let (status, first): (
        Option<&tonic::Status>,
        Option<&(dyn std::error::Error + 'static)>,
    ) = match e {
        etcd_client::Error::GRpcStatus(s) => (Some(s), std::error::Error::source(s)),
        etcd_client::Error::TransportError(t) => (None, Some(t)),
        _ => (None, None),
    };
    let mut source = first;
    let mut innermost = None;
    while let Some(err) = source {
        if let Some(said) = transport_words(err) {
            return said;
        }
        innermost = Some(err);
        source = err.source();
    }
    match status {
        Some(s) if s.code() == Code::DeadlineExceeded => "deadline exceeded".into(),
        Some(s) if s.code() == Code::Cancelled && s.message().is_empty() => "cancelled".into(),
        Some(s) if !s.message().is_empty() && innermost.is_none() => s.message().to_string(),
        Some(s) if innermost.is_none() => code_words(s.code()).into(),
        // A status made from a transport failure words it as the failure itself does.
        _ => match innermost {
            Some(err) => plain(&err.to_string()),
            None => match e {
                etcd_client::Error::GRpcStatus(s) => s.message().to_string(),
                other => other.to_string(),
            },
        },
    }
}

/// The words of one error of the transport, when it is one this knows: an `io::Error`, an
/// HTTP/2 error, our connector's failure, tonic's timeout.
fn transport_words(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    if let Some(io) = err.downcast_ref::<std::io::Error>() {
        return Some(io_words(io));
    }
    if let Some(h2) = err.downcast_ref::<h2::Error>() {
        if let Some(io) = h2.get_io() {
            return Some(io_words(io));
        }
        let reason = h2.reason().filter(|r| *r != h2::Reason::NO_ERROR);
        return Some(match (h2.is_go_away(), h2.is_remote(), reason) {
            (true, true, None) => "etcd closed the connection".into(),
            (true, true, Some(r)) => format!("etcd closed the connection: {r}"),
            (false, true, Some(r)) => format!("etcd reset the stream: {r}"),
            _ => plain(&h2.to_string()),
        });
    }
    if let Some(connect) = err.downcast_ref::<tls::ConnectError>() {
        return Some(match connect {
            tls::ConnectError::Tcp { source, .. } => io_words(source),
            tls::ConnectError::Handshake { source, .. } => {
                format!("TLS handshake: {}", io_words(source))
            }
            tls::ConnectError::Closed { source, .. } => format!(
                "{} on the HTTP/2 preface (is it etcd's client URL?)",
                io_words(source)
            ),
            other => other.to_string(),
        });
    }
    if err.is::<tonic::TimeoutExpired>() {
        return Some("timed out".into());
    }
    None
}

/// An `io::Error` in words: its kind's, for the failures of a connection; else its own message
/// without the `(os error N)`.
fn io_words(io: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    let said = match io.kind() {
        K::ConnectionRefused => "connection refused",
        K::ConnectionReset => "connection reset",
        K::ConnectionAborted => "connection aborted",
        K::BrokenPipe | K::UnexpectedEof | K::NotConnected => "connection closed",
        K::TimedOut => "timed out",
        K::HostUnreachable => "no route to host",
        K::NetworkUnreachable => "network unreachable",
        K::AddrNotAvailable => "address not available",
        _ => {
            let text = plain(&io.to_string());
            return match text.strip_prefix("failed to lookup address information: ") {
                Some(why) => format!("cannot resolve the host name: {}", plain(why)),
                None => text,
            };
        }
    };
    said.into()
}

/// A message as a phrase: without the `(os error N)` the standard library appends, and
/// starting in lower case (`Connection refused` reads `connection refused`).
fn plain(text: &str) -> String {
    let text = match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => &text[..at],
        _ => text,
    };
    let mut chars = text.chars();
    match (chars.next(), chars.clone().next()) {
        // An acronym (`TLS handshake ...`) keeps its case.
        (Some(first), Some(second)) if first.is_uppercase() && !second.is_uppercase() => {
            first.to_lowercase().chain(chars).collect()
        }
        _ => text.to_string(),
    }
}

/// A gRPC code in words, for a status without a message.
fn code_words(code: Code) -> &'static str {
    match code {
        Code::Unavailable => "unavailable",
        Code::Cancelled => "cancelled",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::Unauthenticated => "not authenticated",
        Code::PermissionDenied => "permission denied",
        Code::NotFound => "not found",
        Code::ResourceExhausted => "resource exhausted",
        Code::Internal => "internal error",
        _ => "unknown error",
    }
}

/// rustls's words for a handshake that failed on a certificate, ours or the server's, as they
/// appear somewhere in the error's chain of sources (gRPC wraps them in a transport error);
/// and our connector's for an http:// endpoint that answers in TLS.
const TLS_FAILURES: &[&str] = &[
    "invalid peer certificate",
    "certificate",
    "received fatal alert",
    "unknownissuer",
    "notvalidforname",
    // Our own files: a key that is not the certificate's, a file that is no PEM.
    "keymismatch",
    "private key",
    "pem",
    tls::SPEAKS_TLS,
];

/// The message of the error in `e`'s chain that names the TLS failure, if any.
fn tls_failure(e: &etcd_client::Error) -> Option<String> {
    let matches = |text: &str| {
        let lower = text.to_ascii_lowercase();
        TLS_FAILURES
            .iter()
            .any(|m| lower.contains(&m.to_ascii_lowercase()))
    };
    // etcd-client's error does not chain its sources: start from what it wraps.
    let mut source: Option<&dyn std::error::Error> = match e {
        etcd_client::Error::GRpcStatus(s) if matches(s.message()) => {
            return Some(s.message().to_string())
        }
        etcd_client::Error::GRpcStatus(s) => Some(s),
        etcd_client::Error::TransportError(t) => Some(t),
        other => Some(other),
    };
    let mut found = None;
    while let Some(err) = source {
        let text = err.to_string();
        if matches(&text) {
            // The innermost one is the most precise.
            found = Some(text);
        }
        source = err.source();
    }
    found
}

/// What to check, for the TLS failures rustls (and our connector) reports.
fn tls_hint(failure: &str) -> &'static str {
    let f = failure.to_ascii_lowercase();
    if f.contains(&tls::SPEAKS_TLS.to_ascii_lowercase()) {
        // The failure says it all.
        ""
    } else if f.contains("unknownissuer") || f.contains("unknown ca") {
        "is --cacert the CA that signed etcd's server certificate?"
    } else if f.contains("notvalidforname") {
        "the endpoint's host name or IP is not in etcd's server certificate"
    } else if f.contains("keymismatch") {
        "--key is not the key of --cert"
    } else if f.contains("pem") || f.contains("private key") {
        "a TLS file is not a PEM certificate or key"
    } else if f.contains("expired") {
        "a certificate has expired"
    } else if f.contains("certificaterequired") || f.contains("badcertificate") {
        "etcd refused our client certificate (expired, or not signed by its CA?), or wants \
         one: check --cert and --key"
    } else {
        "check --cacert, --cert and --key"
    }
}

/// The values a request made for `what` carries that a user can make long.
fn values_of(what: &str) -> &'static str {
    match what {
        "campaigning" => "--election and --id (the candidate key and its value)",
        "run record" => "--election, --run-id and --id (the run record)",
        "writing the request" => "--election (the step-down request)",
        _ => "--election and --id",
    }
}

/// The one line for an error: a TLS failure says what failed and what to check, a refusal what
/// was refused, not the whole chain of transport wrappers or gRPC's status dump.
fn describe(what: &str, reason: &Reason, source: &etcd_client::Error) -> String {
    match reason {
        Reason::Tls(failure) => match tls_hint(failure) {
            "" => format!("{what}: TLS: {failure}"),
            hint => format!("{what}: TLS: {failure} ({hint})"),
        },
        Reason::TooLarge => format!(
            "{what}: etcd refused the request as too large for its --max-request-bytes (1.5 MiB \
             by default, lower on this cluster): shorten {}, or raise etcd's \
             --max-request-bytes",
            values_of(what)
        ),
        Reason::Denied => format!("{what}: {}", cause(source)),
        Reason::Other(cause) => format!("{what}: {cause}"),
    }
}

/// An etcd call that failed, with what we were doing and the client's error as its source.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("{}", describe(what, &classify(source).1, source))]
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
    /// TLS files that make no configuration as they are now (unreadable, no PEM, a key that is
    /// not the certificate's): fatal at start-up, retried later (a rotation may be under way).
    #[error("TLS: {0}")]
    Tls(#[source] Box<TlsError>),
}

impl From<TlsError> for EtcdError {
    fn from(e: TlsError) -> Self {
        // Boxed: every Result of the supervisor carries an EtcdError.
        EtcdError::Tls(Box::new(e))
    }
}

impl EtcdError {
    pub fn new(what: &'static str, source: etcd_client::Error) -> EtcdError {
        let (kind, _) = classify(&source);
        crate::metrics::etcd_error(kind.label());
        EtcdError::Failed { what, kind, source }
    }

    pub fn kind(&self) -> Kind {
        match self {
            EtcdError::Failed { kind, .. } => *kind,
            EtcdError::TimedOut { .. } => Kind::Retry,
            EtcdError::Tls(_) => Kind::Tls,
            EtcdError::Unexpected { .. } => Kind::Fatal,
        }
    }

    pub fn is_fatal(&self) -> bool {
        self.kind() == Kind::Fatal
    }

    /// etcd refused a permission on a key range to the user's role.
    pub fn is_denied(&self) -> bool {
        matches!(self, EtcdError::Failed { source, .. } if classify(source).1 == Reason::Denied)
    }
}

/// One unary call made by `f` on a clone of `client`, bounded by `wait`. An expired token is
/// refreshed and the call made once more: etcd-client's own refresh misses "revision of auth
/// store is old" (an auth change makes every older token stale). The token is shared by every
/// clone of the client, so one refresh serves them all.
pub async fn call_as<T, Fut>(
    what: &'static str,
    wait: Duration,
    client: &Client,
    f: impl Fn(Client) -> Fut,
) -> Result<T, EtcdError>
where
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    match call(what, wait, f(client.clone())).await {
        Err(e) if e.kind() == Kind::AuthExpired => {
            call("authenticating", wait, client.refresh_token()).await?;
            call(what, wait, f(client.clone())).await
        }
        done => done,
    }
}

/// Two reads in one transaction, so at one revision: their answers, and that revision.
pub async fn read_pair(
    what: &'static str,
    wait: Duration,
    client: &Client,
    reads: [TxnOp; 2],
) -> Result<(GetResponse, GetResponse, i64), EtcdError> {
    let txn = Txn::new().and_then(reads);
    let resp = call_as(what, wait, client, |mut c| {
        let txn = txn.clone();
        async move { c.txn(txn).await }
    })
    .await?;
    let revision = resp.header().map_or(0, |h| h.revision());
    let mut gets = resp.op_responses().into_iter().filter_map(|op| match op {
        TxnOpResponse::Get(get) => Some(get),
        _ => None,
    });
    match (gets.next(), gets.next()) {
        (Some(a), Some(b)) => Ok((a, b, revision)),
        _ => Err(EtcdError::Unexpected {
            what,
            detail: "the transaction answered without its two reads".into(),
        }),
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
        Err(_) => {
            crate::metrics::etcd_error("timed_out");
            Err(EtcdError::TimedOut { what, after: wait })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_errors_are_fatal_and_unavailability_is_not() {
        let status = |s: tonic::Status| classify(&etcd_client::Error::GRpcStatus(s)).0;
        assert_eq!(status(tonic::Status::permission_denied("no")), Kind::Fatal);
        assert_eq!(status(tonic::Status::unavailable("down")), Kind::Retry);
        let wrapped = tonic::Status::unknown("etcdserver: user name is empty");
        assert_eq!(status(wrapped), Kind::Fatal);
        assert_eq!(status(tonic::Status::not_found("lease")), Kind::LeaseGone);
    }

    #[test]
    fn a_request_too_large_is_fatal_and_said_in_words() {
        let e = EtcdError::new(
            "campaigning",
            etcd_client::Error::GRpcStatus(tonic::Status::invalid_argument(
                "etcdserver: request is too large",
            )),
        );
        assert!(e.is_fatal());
        let line = e.to_string();
        assert!(
            line.contains("--id") && line.contains("--max-request-bytes"),
            "{line}"
        );
        assert!(
            line.contains("1.5 MiB") && !line.contains("metadata"),
            "{line}"
        );
        let grpc = tonic::Status::resource_exhausted(
            "grpc: received message larger than max (2097152 vs. 2097152)",
        );
        let (kind, reason) = classify(&etcd_client::Error::GRpcStatus(grpc));
        assert_eq!((kind, reason), (Kind::Fatal, Reason::TooLarge));
    }

    #[test]
    fn a_refused_permission_is_told_from_other_refusals() {
        let denied = |m: &str| {
            EtcdError::new(
                "campaigning",
                etcd_client::Error::GRpcStatus(tonic::Status::permission_denied(m.to_string())),
            )
        };
        let e = denied("etcdserver: permission denied");
        assert!(e.is_fatal() && e.is_denied());
        let e = denied("etcdserver: authentication failed, invalid user ID or password");
        assert!(e.is_fatal() && !e.is_denied());
        // The status's message, not gRPC's dump of it.
        assert_eq!(
            denied("etcdserver: permission denied").to_string(),
            "campaigning: etcdserver: permission denied"
        );
    }

    #[test]
    fn an_expired_token_is_never_fatal() {
        let status = |s: tonic::Status| classify(&etcd_client::Error::GRpcStatus(s)).0;
        let token = tonic::Status::unauthenticated("etcdserver: invalid auth token");
        assert_eq!(status(token), Kind::AuthExpired);
        let old = tonic::Status::invalid_argument("etcdserver: revision of auth store is old");
        assert_eq!(status(old), Kind::AuthExpired);
    }

    /// A status made by the transport around `source`, as tonic makes it.
    fn wrapped(
        code: Code,
        message: &str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> etcd_client::Error {
        let mut status = tonic::Status::new(code, message);
        status.set_source(Arc::new(source));
        etcd_client::Error::GRpcStatus(status)
    }

    #[test]
    fn a_transport_failure_is_one_phrase_not_grpcs_dump() {
        use std::io::{Error as Io, ErrorKind as K};
        let refused = wrapped(
            Code::Unavailable,
            "tcp connect error",
            Io::from(K::ConnectionRefused),
        );
        assert_eq!(cause(&refused), "connection refused");
        let e = EtcdError::new("lease grant", refused);
        assert_eq!(e.to_string(), "lease grant: connection refused");
        assert_eq!(e.kind(), Kind::NeverSent);
        for (kind, said) in [
            (K::ConnectionReset, "connection reset"),
            (K::BrokenPipe, "connection closed"),
            (K::UnexpectedEof, "connection closed"),
            (K::TimedOut, "timed out"),
            (K::HostUnreachable, "no route to host"),
            (K::NetworkUnreachable, "network unreachable"),
        ] {
            let e = wrapped(Code::Unknown, "h2 protocol error: x", Io::from(kind));
            assert_eq!(cause(&e), said, "{kind:?}");
        }
        // An OS error this does not name: its own words, without the number.
        let e = wrapped(Code::Unknown, "x", Io::from_raw_os_error(nix::libc::EMFILE));
        assert_eq!(cause(&e), "too many open files");
        let e = wrapped(
            Code::Unavailable,
            "x",
            Io::other("failed to lookup address information: Name or service not known"),
        );
        assert_eq!(
            cause(&e),
            "cannot resolve the host name: name or service not known"
        );
        // HTTP/2's error in its own words; our connector's in the io error's.
        let e = wrapped(
            Code::Unknown,
            "h2 protocol error: x",
            h2::Error::from(h2::Reason::CANCEL),
        );
        assert_eq!(cause(&e), "protocol error: stream no longer needed");
        let tcp = tls::ConnectError::Tcp {
            host: "127.0.0.1".into(),
            port: 1,
            source: Io::from(K::ConnectionRefused),
        };
        assert_eq!(
            cause(&wrapped(Code::Unavailable, "x", tcp)),
            "connection refused"
        );
        let e = wrapped(
            Code::Cancelled,
            "Timeout expired",
            tonic::TimeoutExpired(()),
        );
        assert_eq!(cause(&e), "timed out");
        let line = format!("{}", EtcdError::new("watch", e));
        assert!(
            !line.contains("grpc") && !line.contains("source") && !line.contains("Os {"),
            "{line}"
        );
    }

    #[test]
    fn etcds_own_answers_are_its_words_or_the_codes() {
        let status = |s: tonic::Status| cause(&etcd_client::Error::GRpcStatus(s));
        assert_eq!(
            status(tonic::Status::unavailable("etcdserver: request timed out")),
            "etcdserver: request timed out"
        );
        assert_eq!(
            status(tonic::Status::deadline_exceeded(
                "context deadline exceeded"
            )),
            "deadline exceeded"
        );
        assert_eq!(status(tonic::Status::unavailable("")), "unavailable");
        assert_eq!(status(tonic::Status::cancelled("")), "cancelled");
        let watch = etcd_client::Error::WatchError("watch ended".into());
        assert_eq!(cause(&watch), watch.to_string());
    }
}
