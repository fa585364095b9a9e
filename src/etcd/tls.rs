//! TLS connections to etcd that read `--cacert`, `--cert` and `--key` again at every new
//! connection, so a long-running leaderrun follows certificates that rotate (cert-manager,
//! Vault) without a restart: every reconnect of a long-lived client, inside the gRPC channel as
//! well as for a new client, makes its handshake with the files as they are on disk then.
//!
//! etcd-client's own TLS (tonic's `ClientTlsConfig`) reads the files once, when the client is
//! built, and its channel reconnects with them for as long as the client lives.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tonic::transport::{Endpoint, Uri};
use tower::balance::p2c::Balance;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PendingRequests};
use tower::util::BoxCloneSyncService;

use crate::etcd::TlsFiles;

/// What gRPC over TLS negotiates (etcd serves HTTP/1 and gRPC on one port).
const ALPN_H2: &[u8] = b"h2";
/// Requests waiting for the balanced channel: as tonic's own balanced channel.
const BALANCE_BUFFER: usize = 1024;

/// TLS files that do not make a client configuration, as they are now.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: no PEM certificate in it (a TLS file is not a PEM certificate or key)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: no PEM private key in it: {source} (a TLS file is not a PEM certificate or key)", path.display())]
    NoKey {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{} is not the key of {} (--key is not the key of --cert)", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("the client certificate {} with its key {}: {source}", cert.display(), key.display())]
    Identity {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("no usable root certificate in the system's store (give --cacert)")]
    NoSystemRoots,
    #[error("TLS settings: {0}")]
    Settings(#[source] rustls::Error),
    #[error("reading the TLS files: {0}")]
    Unread(String),
}

/// One new connection that failed, with the endpoint it was for.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Files(#[from] TlsError),
    #[error("{0} has no host")]
    NoHost(Uri),
    #[error("{host} is not a valid TLS server name")]
    ServerName { host: String },
    #[error("TCP connection to {host}:{port}: {source}")]
    Tcp {
        host: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    /// rustls's words (`invalid peer certificate: UnknownIssuer`) are the source's message.
    #[error("TLS handshake with {host}:{port}: {source}")]
    Handshake {
        host: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("{host}:{port} did not negotiate HTTP/2 (ALPN h2): is it etcd's client URL?")]
    NoHttp2 { host: String, port: u16 },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    crate::input_file::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    // Anything in the bundle that is no certificate (comments, keys) is skipped, as etcdctl does.
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The rustls client configuration from the files as they are now: ring, ALPN h2, the CA
/// bundle (or the system's roots) and the client certificate if any.
pub fn client_config(files: &TlsFiles) -> Result<ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Settings)?;
    let mut roots = RootCertStore::empty();
    match &files.cacert {
        Some(path) => {
            let (added, _) = roots.add_parsable_certificates(certificates(path)?);
            if added == 0 {
                return Err(TlsError::NoCertificate { path: path.clone() });
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsError::NoSystemRoots);
            }
        }
    }
    let builder = builder.with_root_certificates(roots);
    let mut config = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            let chain = certificates(cert)?;
            let private =
                PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|source| TlsError::NoKey {
                    path: key.clone(),
                    source,
                })?;
            builder
                .with_client_auth_cert(chain, private)
                .map_err(|source| match source {
                    rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                        TlsError::KeyMismatch {
                            cert: cert.clone(),
                            key: key.clone(),
                        }
                    }
                    source => TlsError::Identity {
                        cert: cert.clone(),
                        key: key.clone(),
                        source,
                    },
                })?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// [`client_config`] on a thread of tokio's blocking pool. The files are read again at every
/// new connection, while leading too: a file on a mount that hangs must not hold the thread that
/// keeps the lease and stops the child; the caller's timeout abandons the read instead.
pub async fn client_config_off_thread(files: Arc<TlsFiles>) -> Result<ClientConfig, TlsError> {
    tokio::task::spawn_blocking(move || client_config(&files))
        .await
        .unwrap_or_else(|e| Err(TlsError::Unread(e.to_string())))
}

/// A connector (`tower::Service<Uri>`) for tonic: TCP to the endpoint's host and port, then a
/// TLS handshake made with the files read at that moment, verifying the endpoint's host (a DNS
/// name or an IP address) against the server's certificate.
#[derive(Clone)]
pub struct Connector {
    files: Arc<TlsFiles>,
}

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(connect(self.files.clone(), uri))
    }
}

async fn connect(
    files: Arc<TlsFiles>,
    uri: Uri,
) -> Result<TokioIo<TlsStream<TcpStream>>, ConnectError> {
    // `[::1]` in a URI, `::1` as an address and as a server name.
    let host = uri
        .host()
        .ok_or_else(|| ConnectError::NoHost(uri.clone()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(2379);
    // The files first: a file being rewritten fails this attempt before any traffic.
    let config = client_config_off_thread(files).await?;
    let name = ServerName::try_from(host.clone())
        .map_err(|_| ConnectError::ServerName { host: host.clone() })?;
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|source| ConnectError::Tcp {
            host: host.clone(),
            port,
            source,
        })?;
    // As tonic's own connector: small gRPC messages go out at once.
    let _ = tcp.set_nodelay(true);
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|source| ConnectError::Handshake {
            host: host.clone(),
            port,
            source,
        })?;
    if tls.get_ref().1.alpn_protocol() != Some(ALPN_H2) {
        return Err(ConnectError::NoHttp2 { host, port });
    }
    Ok(TokioIo::new(tls))
}

/// A lazy channel to `endpoints` (normalized `https://host:port`) whose every new connection
/// goes through [`Connector`]. `settings` gives each endpoint its HTTP/2 keepalive and connect
/// timeout (the connect timeout covers the handshake too, so a frozen member is left after it).
///
/// Several endpoints are balanced as etcd-client balances them without TLS: one lazily
/// connected channel per member and tower's power-of-two-choices balancer over them (by pending
/// requests, so a hung member that holds its calls is avoided); a call on a member that is down
/// fails as a connection error and is retried by its caller, and the member is tried again
/// on a later call.
pub fn channel(
    endpoints: &[String],
    files: &TlsFiles,
    settings: impl Fn(Endpoint) -> Endpoint,
) -> Result<etcd_client::Channel, etcd_client::Error> {
    let connector = Connector {
        files: Arc::new(files.clone()),
    };
    let mut members = Vec::with_capacity(endpoints.len());
    for url in endpoints {
        // tonic's own connector would refuse https without its TLS settings: it dials the http
        // form (our connector makes the TLS itself), and requests carry the https origin.
        let plain = url.replacen("https://", "http://", 1);
        let endpoint = settings(Endpoint::from_shared(plain)?.origin(url.parse()?));
        members.push(endpoint.connect_with_connector_lazy(connector.clone()));
    }
    if members.len() == 1 {
        return Ok(etcd_client::Channel::Tonic(members.remove(0)));
    }
    let loaded = members
        .into_iter()
        .map(|m| PendingRequests::new(m, CompleteOnResponse::default()));
    let balanced = Balance::new(ServiceList::new(loaded.collect::<Vec<_>>()));
    let shared = tower::buffer::Buffer::new(balanced, BALANCE_BUFFER);
    Ok(etcd_client::Channel::Custom(BoxCloneSyncService::new(
        shared,
    )))
}
