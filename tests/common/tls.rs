//! Certificates and keys generated at test time (rcgen, ECDSA P-256), written as PEM files into
//! a temp dir: a CA, a server certificate for etcd (`IP:127.0.0.1`, `DNS:localhost`), client
//! certificates by common name (etcd's `--client-cert-auth` takes the CN as the user), an
//! expired client certificate, a certificate from another CA, a server certificate for a wrong
//! name, a key that does not match its certificate, and an ES256 key pair for etcd's JWT tokens.
//!
//! `rotate_ca` replaces the CA and every certificate above in place (at the same paths, with
//! atomic renames), as a rotation to a new CA does on a real host.
//!
//! ```ignore
//! let certs = Certs::generate();
//! let etcd = Etcd::start_with(EtcdOptions { tls: Some(&certs), ..Default::default() });
//! let alice = certs.client("alice"); // alice.crt / alice.key, signed by the CA
//! // leaderrun --cacert certs.ca --cert alice.cert --key alice.key ...
//! ```

use std::path::{Path, PathBuf};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use super::TempDir;

/// A certificate and its private key, as PEM files.
#[derive(Clone, Debug)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate authority: its certificate file and what it signs with.
struct Ca {
    cert: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("cert", &self.cert).finish()
    }
}

/// A test PKI in its own temp dir (removed on Drop).
#[derive(Debug)]
pub struct Certs {
    dir: TempDir,
    ca: Ca,
    /// The CA certificate (`--cacert`).
    pub ca_cert: PathBuf,
    /// etcd's server certificate: SANs `IP:127.0.0.1` and `DNS:localhost`, for server and
    /// client auth (etcd 3.4's gateway dials itself with it).
    pub server: CertPair,
    /// A client certificate with CN `root`: what the etcd fixture's etcdctl presents.
    pub root: CertPair,
}

fn rc<T>(what: &str, r: Result<T, rcgen::Error>) -> T {
    r.unwrap_or_else(|e| panic!("generating {what}: {e}"))
}

/// Writes `text` to a temp file beside `path`, then renames it over `path`, as cert-manager and
/// Vault agents replace certificates: a reader sees the old file or the new one, never half.
fn write(path: &Path, text: &str) {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("renaming to {}: {e}", path.display()));
}

/// Copies `from` to `to` the same way (`write`'s rename).
pub fn install(from: &Path, to: &Path) {
    let text =
        std::fs::read_to_string(from).unwrap_or_else(|e| panic!("reading {}: {e}", from.display()));
    write(to, &text);
}

fn new_key(what: &str) -> KeyPair {
    rc(what, KeyPair::generate())
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = date_time_ymd(2000, 1, 1);
    params.not_after = date_time_ymd(2200, 1, 1);
    params
}

/// Leaf parameters: CN `cn`, SANs `sans` (IP addresses or DNS names), valid 2000..2200.
fn leaf_params(cn: &str, sans: &[&str], usages: &[ExtendedKeyUsagePurpose]) -> CertificateParams {
    let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    let mut params = rc("certificate parameters", CertificateParams::new(sans));
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = usages.to_vec();
    params.use_authority_key_identifier_extension = true;
    params.not_before = date_time_ymd(2000, 1, 1);
    params.not_after = date_time_ymd(2200, 1, 1);
    params
}

const SERVER_AND_CLIENT: &[ExtendedKeyUsagePurpose] = &[
    ExtendedKeyUsagePurpose::ServerAuth,
    ExtendedKeyUsagePurpose::ClientAuth,
];
const CLIENT: &[ExtendedKeyUsagePurpose] = &[ExtendedKeyUsagePurpose::ClientAuth];

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let key = new_key("a CA key");
        let params = ca_params(&format!("leaderrun test CA {name}"));
        let cert = rc("a CA certificate", params.self_signed(&key));
        let path = dir.join(format!("{name}.crt"));
        write(&path, &cert.pem());
        Ca {
            cert: path,
            issuer: Issuer::new(params, key),
        }
    }

    /// Signs `params` for a fresh key; writes `<dir>/<file>.crt` and `.key`.
    fn sign(&self, dir: &Path, file: &str, params: &CertificateParams) -> CertPair {
        let key = new_key("a key");
        let cert = rc(
            &format!("the certificate {file}"),
            params.signed_by(&key, &self.issuer),
        );
        let pair = CertPair {
            cert: dir.join(format!("{file}.crt")),
            key: dir.join(format!("{file}.key")),
        };
        write(&pair.cert, &cert.pem());
        write(&pair.key, &key.serialize_pem());
        pair
    }
}

impl Certs {
    /// A CA, etcd's server certificate and the fixture's `root` client certificate, in a new
    /// temp dir. Panics (never skips) if generation fails.
    pub fn generate() -> Certs {
        let dir = TempDir::new("leaderrun-certs");
        let ca = Ca::new(dir.path(), "ca");
        let server = ca.sign(
            dir.path(),
            "server",
            &leaf_params("etcd", &["127.0.0.1", "localhost"], SERVER_AND_CLIENT),
        );
        let root = ca.sign(dir.path(), "client-root", &leaf_params("root", &[], CLIENT));
        Certs {
            ca_cert: ca.cert.clone(),
            dir,
            ca,
            server,
            root,
        }
    }

    /// Replaces the CA by a new one, in place: `ca.crt`, etcd's server certificate and the
    /// fixture's `root` client certificate are rewritten at their paths, signed by the new CA
    /// (with new keys); later certificates (`client`, ...) come from it too. etcd reads its CA
    /// at start: restart it to make it trust the new CA only.
    pub fn rotate_ca(&mut self) {
        self.ca = Ca::new(self.dir.path(), "ca");
        assert_eq!(self.ca.cert, self.ca_cert, "the CA file keeps its path");
        self.server = self.ca.sign(
            self.dir.path(),
            "server",
            &leaf_params("etcd", &["127.0.0.1", "localhost"], SERVER_AND_CLIENT),
        );
        self.root = self.ca.sign(
            self.dir.path(),
            "client-root",
            &leaf_params("root", &[], CLIENT),
        );
    }

    /// The temp dir holding every file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A client certificate with common name `cn` (the etcd user under
    /// `--client-cert-auth`), signed by the CA: `client-<cn>.crt` / `.key`.
    pub fn client(&self, cn: &str) -> CertPair {
        self.ca.sign(
            self.dir.path(),
            &format!("client-{cn}"),
            &leaf_params(cn, &[], CLIENT),
        )
    }

    /// A client certificate with common name `cn`, signed by the CA, that expired in 2001.
    pub fn expired_client(&self, cn: &str) -> CertPair {
        let mut params = leaf_params(cn, &[], CLIENT);
        params.not_before = date_time_ymd(2000, 1, 1);
        params.not_after = date_time_ymd(2001, 1, 1);
        self.ca
            .sign(self.dir.path(), &format!("expired-{cn}"), &params)
    }

    /// A server certificate signed by the CA for these names only (IP addresses or DNS
    /// names), e.g. `&["wrong.example"]`: `server-<first name>.crt` / `.key`.
    pub fn server_for(&self, names: &[&str]) -> CertPair {
        let file = format!("server-{}", names.first().copied().unwrap_or("none"));
        self.ca.sign(
            self.dir.path(),
            &file,
            &leaf_params("etcd", names, SERVER_AND_CLIENT),
        )
    }

    /// A client certificate with CN `cn` whose key file holds another, unrelated key:
    /// `mismatched-<cn>.crt` / `.key`.
    pub fn mismatched_client(&self, cn: &str) -> CertPair {
        let pair = self.ca.sign(
            self.dir.path(),
            &format!("mismatched-{cn}"),
            &leaf_params(cn, &[], CLIENT),
        );
        write(&pair.key, &new_key("a stray key").serialize_pem());
        pair
    }

    /// Another CA, unknown to etcd: its certificate (`other-ca.crt`) and a client certificate
    /// with CN `cn` signed by it (`other-client-<cn>.crt` / `.key`).
    pub fn other_ca(&self, cn: &str) -> (PathBuf, CertPair) {
        let other = Ca::new(self.dir.path(), "other-ca");
        let client = other.sign(
            self.dir.path(),
            &format!("other-client-{cn}"),
            &leaf_params(cn, &[], CLIENT),
        );
        (other.cert, client)
    }
}

/// An ECDSA P-256 key pair for etcd's JWT tokens (`sign-method=ES256`), written to
/// `<dir>/jwt.pub` (SubjectPublicKeyInfo PEM) and `<dir>/jwt.key` (PKCS#8 PEM). Returns
/// (public, private).
pub fn jwt_keys(dir: &Path) -> (PathBuf, PathBuf) {
    let key = new_key("the JWT signing key");
    let public = dir.join("jwt.pub");
    let private = dir.join("jwt.key");
    write(&public, &key.public_key_pem());
    write(&private, &key.serialize_pem());
    (public, private)
}
