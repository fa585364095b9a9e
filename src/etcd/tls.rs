//! Every connection to etcd goes through our connector ([`Connector`]), http:// and https://:
//!
//! - Over TLS it reads `--cacert`, `--cert` and `--key` again at every new connection, so a
//!   long-running leaderrun follows certificates that rotate (cert-manager, Vault) without a
//!   restart: every reconnect of a long-lived client, inside the gRPC channel as well as for a
//!   new client, makes its handshake with the files as they are on disk then. (etcd-client's
//!   own TLS, tonic's `ClientTlsConfig`, reads the files once, when the client is built.)
//! - It waits for the server's first words where they carry a verdict: under TLS 1.3 a client
//!   certificate is judged after the client's handshake is done, so its refusal (an alert)
//!   comes later; and an http:// endpoint that speaks TLS closes on the HTTP/2 preface without
//!   a word. Both are recognised on the first connection, as what they are, instead of
//!   reaching the caller as "connection closed" or "broken pipe" and being retried.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::timeout;
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
/// The HTTP/2 client preface (RFC 9113, 3.4): the first bytes a client sends. We send it
/// ourselves when we wait for the server's first words (a server may say nothing before it).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How long a new connection waits for the server's first words: etcd sends its HTTP/2
/// settings within a round trip of the preface. A server that says nothing is used as it is.
const FIRST_WORDS: Duration = Duration::from_secs(1);
/// How long the look at an http:// endpoint that closed on the preface may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// The words of [`ConnectError::SpeaksTls`], which the classification looks for.
pub const SPEAKS_TLS: &str = "speaks TLS";

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
    /// An http:// endpoint that closed on the HTTP/2 preface and answers a TLS handshake.
    #[error("{host}:{port} speaks TLS: use https:// and --cacert")]
    SpeaksTls { host: String, port: u16 },
    /// An http:// endpoint that closed on the HTTP/2 preface without a word.
    #[error("{host}:{port} closed the connection on the HTTP/2 preface: is it etcd's client URL? ({source})")]
    Closed {
        host: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
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

/// A connector (`tower::Service<Uri>`) for tonic: TCP to the endpoint's host and port; over
/// TLS a handshake made with the files read at that moment, verifying the endpoint's host (a
/// DNS name or an IP address) against the server's certificate.
#[derive(Clone)]
pub struct Connector {
    /// None: http://.
    files: Option<Arc<TlsFiles>>,
}

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<Primed>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let files = self.files.clone();
        Box::pin(async move {
            let link = match files {
                Some(files) => connect_tls(files, uri).await?,
                None => connect_plain(uri).await?,
            };
            Ok(TokioIo::new(link))
        })
    }
}

/// The endpoint's host (`[::1]` in a URI, `::1` as an address and a server name) and port.
fn host_port(uri: &Uri) -> Result<(String, u16), ConnectError> {
    let host = uri
        .host()
        .ok_or_else(|| ConnectError::NoHost(uri.clone()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok((host, uri.port_u16().unwrap_or(2379)))
}

async fn tcp(host: &str, port: u16) -> Result<TcpStream, ConnectError> {
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|source| ConnectError::Tcp {
            host: host.to_string(),
            port,
            source,
        })?;
    // As tonic's own connector: small gRPC messages go out at once.
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// http://: the preface, then the server's first words. etcd answers the preface with its
/// settings; a TLS port closes on it without a word, and is then asked for a TLS handshake so
/// that the line can say so.
async fn connect_plain(uri: Uri) -> Result<Primed, ConnectError> {
    let (host, port) = host_port(&uri)?;
    let mut link = tcp(&host, port).await?;
    match first_words(&mut link).await {
        Ok(first) => Ok(Primed::new(Box::new(link), first)),
        Err(source) => {
            drop(link);
            if speaks_tls(&host, port).await {
                Err(ConnectError::SpeaksTls { host, port })
            } else {
                Err(ConnectError::Closed { host, port, source })
            }
        }
    }
}

async fn connect_tls(files: Arc<TlsFiles>, uri: Uri) -> Result<Primed, ConnectError> {
    let (host, port) = host_port(&uri)?;
    // The files first: a file being rewritten fails this attempt before any traffic.
    let with_cert = files.cert.is_some();
    let config = client_config_off_thread(files).await?;
    let name = ServerName::try_from(host.clone())
        .map_err(|_| ConnectError::ServerName { host: host.clone() })?;
    let link = tcp(&host, port).await?;
    let handshake = |source| ConnectError::Handshake {
        host: host.clone(),
        port,
        source,
    };
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, link)
        .await
        .map_err(handshake)?;
    if tls.get_ref().1.alpn_protocol() != Some(ALPN_H2) {
        return Err(ConnectError::NoHttp2 { host, port });
    }
    // Under TLS 1.3 our handshake is done before the server has judged our certificate: a
    // refusal comes as an alert after it. Heard here, it fails the handshake it belongs to.
    let judged_later =
        with_cert && tls.get_ref().1.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3);
    if !judged_later {
        return Ok(Primed::unread(Box::new(tls)));
    }
    let first = first_words(&mut tls).await.map_err(handshake)?;
    Ok(Primed::new(Box::new(tls), first))
}

/// Send the HTTP/2 preface and read the server's first words: what came within
/// [`FIRST_WORDS`] (nothing, if the server is silent). Err: the server closed or refused.
async fn first_words<S>(link: &mut S) -> std::io::Result<Vec<u8>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    link.write_all(PREFACE).await?;
    link.flush().await?;
    let mut first = vec![0u8; 1024];
    match timeout(FIRST_WORDS, link.read(&mut first)).await {
        Ok(Ok(0)) => Err(std::io::ErrorKind::UnexpectedEof.into()),
        Ok(Ok(n)) => {
            first.truncate(n);
            Ok(first)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Ok(Vec::new()),
    }
}

/// Whether `host:port` answers a TLS handshake: it presents a certificate (which no root
/// here can verify) or sends an alert.
async fn speaks_tls(host: &str, port: u16) -> bool {
    let probe = async {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .ok()?
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth();
        let name = ServerName::try_from(host.to_string()).ok()?;
        let link = TcpStream::connect((host, port)).await.ok()?;
        let refused = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, link)
            .await
            .err()?;
        let rustls_error = refused
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>());
        Some(matches!(
            rustls_error,
            Some(rustls::Error::InvalidCertificate(_) | rustls::Error::AlertReceived(_))
        ))
    };
    matches!(timeout(PROBE_TIMEOUT, probe).await, Ok(Some(true)))
}

/// A connection, plain or TLS.
pub trait Link: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Link for T {}

/// A connection whose server's first words were read before it was handed over (they are
/// read again from here), and whose preface was sent (the HTTP/2 client's own is taken as
/// written).
pub struct Primed {
    link: Box<dyn Link>,
    first: Vec<u8>,
    at: usize,
    /// Bytes of the client's preface still to be taken as written.
    preface: usize,
}

impl Primed {
    fn new(link: Box<dyn Link>, first: Vec<u8>) -> Primed {
        Primed {
            link,
            first,
            at: 0,
            preface: PREFACE.len(),
        }
    }

    /// Nothing read, nothing sent.
    fn unread(link: Box<dyn Link>) -> Primed {
        Primed {
            link,
            first: Vec::new(),
            at: 0,
            preface: 0,
        }
    }
}

impl AsyncRead for Primed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.first.len() {
            let n = buf.remaining().min(this.first.len() - this.at);
            buf.put_slice(&this.first[this.at..this.at + n]);
            this.at += n;
            if this.at == this.first.len() {
                this.first = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.link).poll_read(cx, buf)
    }
}

impl AsyncWrite for Primed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.preface > 0 {
            let done = PREFACE.len() - this.preface;
            let n = this.preface.min(buf.len());
            if buf[..n] != PREFACE[done..done + n] {
                return Poll::Ready(Err(std::io::Error::other(
                    "the HTTP/2 client did not begin with its preface",
                )));
            }
            this.preface -= n;
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut this.link).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.preface > 0 {
            let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
            return self.poll_write(cx, first);
        }
        Pin::new(&mut self.get_mut().link).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.link.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().link).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().link).poll_shutdown(cx)
    }
}

/// A lazy channel to `endpoints` (normalized `http://host:port` or, with `files`,
/// `https://host:port`) whose every new connection goes through [`Connector`]. `settings` gives
/// each endpoint its HTTP/2 keepalive and connect timeout (the connect timeout covers the
/// handshake too, so a frozen member is left after it).
///
/// Several endpoints are balanced as etcd-client balances them without TLS: one lazily
/// connected channel per member and tower's power-of-two-choices balancer over them (by pending
/// requests, so a hung member that holds its calls is avoided); a call on a member that is down
/// fails as a connection error and is retried by its caller, and the member is tried again
/// on a later call.
pub fn channel(
    endpoints: &[String],
    files: Option<&TlsFiles>,
    settings: impl Fn(Endpoint) -> Endpoint,
) -> Result<etcd_client::Channel, etcd_client::Error> {
    let connector = Connector {
        files: files.map(|f| Arc::new(f.clone())),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The server's first words are read again by the HTTP/2 client, and its preface, already
    /// sent, is taken as written: the server sees it once, then what follows.
    #[tokio::test(flavor = "current_thread")]
    async fn a_primed_link_replays_the_first_words_and_sends_the_preface_once() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        let said = tokio::spawn(async move {
            let mut preface = [0u8; 24];
            server.read_exact(&mut preface).await.unwrap();
            server.write_all(b"settings").await.unwrap();
            let mut rest = Vec::new();
            server.read_to_end(&mut rest).await.unwrap();
            (preface, rest)
        });
        let first = first_words(&mut client).await.unwrap();
        assert_eq!(first, b"settings");
        let mut primed = Primed::new(Box::new(client), first);
        let mut again = [0u8; 8];
        primed.read_exact(&mut again).await.unwrap();
        assert_eq!(&again, b"settings");
        // The client writes its preface in two pieces, then a frame.
        primed.write_all(&PREFACE[..10]).await.unwrap();
        primed.write_all(&PREFACE[10..]).await.unwrap();
        primed.write_all(b"frame").await.unwrap();
        primed.shutdown().await.unwrap();
        drop(primed);
        let (preface, rest) = said.await.unwrap();
        assert_eq!(&preface[..], PREFACE);
        assert_eq!(rest, b"frame");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_link_closed_on_the_preface_is_an_error_and_other_first_bytes_are_refused() {
        let (mut client, server) = tokio::io::duplex(4096);
        let closer = tokio::spawn(async move {
            let mut server = server;
            let mut preface = [0u8; 24];
            server.read_exact(&mut preface).await.unwrap();
        });
        assert!(first_words(&mut client).await.is_err());
        closer.await.unwrap();
        let (client, _server) = tokio::io::duplex(4096);
        let mut primed = Primed::new(Box::new(client), Vec::new());
        assert!(primed.write_all(b"GET / HTTP/1.1\r\n").await.is_err());
    }
}
