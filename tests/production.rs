//! leaderrun against etcd as it runs in production: TLS (`--cacert`, `--cert`, `--key`), client
//! certificate authentication, users and roles (`--user` with `--password-file` or
//! `LEADERRUN_PASSWORD`), auth tokens that expire (simple) or go stale (JWT), least privilege,
//! and a `--config` file.
//!
//! The `fixture_*` tests prove the fixtures (certificates from `common::tls`, etcd started with
//! `EtcdOptions`) with etcdctl alone; the others run leaderrun. Every test starts its own etcd
//! and fails loudly (never skips) when etcd or the certificates are missing.

mod common;

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use nix::sys::signal::Signal;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

const ROOT_PASSWORD: &str = "root-secret";
/// The election of every test here, and the key prefixes a role for it needs.
const ELECTION: &str = "web";
const ELECTION_PREFIX: &str = "web/";
const RUNS_PREFIX: &str = "leaderrun.runs/web/";
const RESIGN_KEY: &str = "leaderrun.resign/web";
/// What candidates publish (--priority), which every candidate reads.
const CANDIDATES_PREFIX: &str = "leaderrun.candidates/web/";
/// The terms each leader records (leaderrun history).
const HISTORY_PREFIX: &str = "leaderrun.history/web/";

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

/// `--cacert <the CA>`.
fn cacert(certs: &Certs) -> Vec<OsString> {
    vec!["--cacert".into(), certs.ca_cert.clone().into()]
}

/// `--cert <pair.cert> --key <pair.key>`.
fn client_cert(pair: &CertPair) -> Vec<OsString> {
    vec![
        "--cert".into(),
        pair.cert.clone().into(),
        "--key".into(),
        pair.key.clone().into(),
    ]
}

/// `--user <user> --password-file <file>`.
fn user_flags(user: &str, password_file: &Path) -> Vec<OsString> {
    vec![
        "--user".into(),
        user.into(),
        "--password-file".into(),
        password_file.into(),
    ]
}

/// Writes `password` and a newline (as `echo` would) to `<scene dir>/<name>`, mode 0600.
fn password_file(scene: &Scene, name: &str, password: &str) -> PathBuf {
    let path = scene.path(name);
    std::fs::write(&path, format!("{password}\n")).expect("write password file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod 0600");
    path
}

/// A single etcd with auth on (root: ROOT_PASSWORD) and a scene on it, election "web".
fn etcd_with_auth(opts: EtcdOptions<'_>) -> (Etcd, Scene) {
    let etcd = Etcd::start_with(opts);
    etcd.enable_auth(ROOT_PASSWORD);
    let scene = Scene::on(&etcd, ELECTION);
    (etcd, scene)
}

/// The user of the tests that run leaderrun with a password.
const USER: &str = "web-user";
const PASSWORD: &str = "web-pass";

/// Adds USER with the role leaderrun needs: readwrite on `web/` and `leaderrun.runs/web/`, and
/// read on the step-down request key (leaderrun resign), the one key, not a prefix. Returns
/// `--user USER --password-file <a file with PASSWORD>`.
fn web_user(etcd: &Etcd, scene: &Scene) -> Vec<OsString> {
    etcd.add_user_with_prefixes(
        USER,
        PASSWORD,
        &[
            ELECTION_PREFIX,
            RUNS_PREFIX,
            CANDIDATES_PREFIX,
            HISTORY_PREFIX,
        ],
    );
    let role = format!("{USER}-role");
    etcd.etcdctl_ok(&["role", "grant-permission", &role, "read", RESIGN_KEY]);
    user_flags(USER, &password_file(scene, "password", PASSWORD))
}

/// A leads (its child runs), then B stands by, both with `opts`.
fn a_leads_b_waits(scene: &Scene, opts: &[OsString]) -> (Lr, Run, Lr) {
    let a = scene.leaderrun("A").args(opts).spawn();
    let run_a = scene.wait_leading("A", 1, 10 * SEC);
    let b = scene.leaderrun("B").args(opts).spawn();
    scene.wait_candidates(&["A", "B"], 10 * SEC);
    (a, run_a, b)
}

/// The lines of leaderrun's final-line format (`leaderrun: ...`) in `text`.
fn final_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.starts_with("leaderrun: "))
        .collect()
}

/// Asserts that `lr` exits 1 within `within` (it is given 20 s), that its log ends with one
/// final line (`leaderrun: ...`) and no other, and that the line names one of `names` (a file,
/// an endpoint, a permission). Returns the line.
fn expect_fatal(lr: &mut Lr, within: std::time::Duration, names: &[&str], what: &str) -> String {
    let (status, took) = lr.expect_exit_timed(20 * SEC);
    let log = lr.log_text();
    assert_eq!(status.code(), Some(1), "{what}: {status}; log:\n{log}");
    assert!(
        took < within,
        "{what}: exited after {took:?}, not within {within:?}: retried what retrying cannot fix; log:\n{log}"
    );
    let finals = final_lines(&log);
    assert_eq!(
        finals.len(),
        1,
        "{what}: one final line wanted; log:\n{log}"
    );
    let line = finals[0].to_string();
    assert_eq!(
        log.lines().last(),
        Some(line.as_str()),
        "{what}: the final line is not last; log:\n{log}"
    );
    assert!(
        names.iter().any(|n| line.contains(n)),
        "{what}: the line names none of {names:?}: {line}"
    );
    assert!(
        !log.contains("still failing"),
        "{what}: retried before giving up; log:\n{log}"
    );
    line
}

/// A role with readwrite on `web/`, `leaderrun.runs/web/`, `leaderrun.candidates/web/` and
/// `leaderrun.history/web/`, and read on `leaderrun.resign/web`, is all leaderrun needs: no
/// warning about a refused permission.
fn assert_no_permission_warnings(lr: &Lr) {
    let refused: Vec<String> = lr
        .warnings()
        .into_iter()
        .filter(|l| l.to_lowercase().contains("permission"))
        .collect();
    assert!(refused.is_empty(), "{}: {refused:#?}", lr.id);
}

/// `127.0.0.1:PORT` of an https endpoint, as a line may name it.
fn host_port(endpoint: &str) -> &str {
    endpoint.rsplit("://").next().unwrap_or(endpoint)
}

/// The file name of `p`, as a line may name it (it may also give the whole path).
fn file_name(p: &Path) -> &str {
    p.file_name().and_then(|n| n.to_str()).expect("a file name")
}

/// `leaderrun leader --endpoints <etcd> --election web extra...`, started in the scene.
fn leader_watch(scene: &Scene, id: &str, extra: &[OsString]) -> Lr {
    let mut cmd = scene.subcommand("leader", &[]);
    cmd.args(extra).arg("--watch");
    scene.command(id, cmd).spawn()
}

/// The `id=` of a `leaderrun leader` line.
fn id_of(line: &str) -> &str {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix("id="))
        .unwrap_or_else(|| panic!("no id= in {line:?}"))
}

/// `--cert <pair.cert> --key <pair.key>`, as etcdctl's arguments.
fn cert_args(pair: &CertPair) -> [&str; 4] {
    ["--cert", path_str(&pair.cert), "--key", path_str(&pair.key)]
}

/// `etcdctl --endpoints <endpoint> <flags> --dial-timeout 2s --command-timeout 3s <args>`: the
/// fixture's checks with TLS files and users of their own, none waiting long for a refusal.
fn etcdctl_with(endpoint: &str, flags: &[&str], args: &[&str]) -> Output {
    let mut all = flags.to_vec();
    all.extend(["--dial-timeout", "2s", "--command-timeout", "3s"]);
    all.extend_from_slice(args);
    etcdctl_at(endpoint, &all)
}

/// etcdctl's stderr, printed for the record (`--nocapture`) and returned.
fn refused(what: &str, out: &Output) -> String {
    assert!(
        !out.status.success(),
        "{what}: etcdctl succeeded: {}",
        stdout_of(out)
    );
    let err = stderr_of(out);
    eprintln!("[{what}] etcdctl said: {}", err.trim());
    err
}

/// etcd's log lines about refused connections (TLS handshakes), printed for the record.
fn print_rejections(etcd: &Etcd, what: &str) {
    for line in etcd.log_tail(0).lines() {
        if line.contains("rejected connection") || line.contains("handshake") {
            eprintln!("[{what}] etcd logged: {line}");
        }
    }
}

/// POSTs `body` (JSON) to etcd's gRPC gateway at `path` on a plain-http member, with
/// `Authorization: token` when given; returns the response body. A client that keeps its
/// token, unlike etcdctl, which logs in at every run.
fn gateway(etcd: &Etcd, path: &str, body: &str, token: Option<&str>) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(etcd.client_addr(0)).expect("connect etcd");
    stream.set_read_timeout(Some(10 * SEC)).unwrap();
    let auth = token
        .map(|t| format!("Authorization: {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         {auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or(response)
}

/// A token for `user` from the gateway's /v3/auth/authenticate.
fn gateway_token(etcd: &Etcd, user: &str, password: &str) -> String {
    let body = gateway(
        etcd,
        "/v3/auth/authenticate",
        &format!("{{\"name\":\"{user}\",\"password\":\"{password}\"}}"),
        None,
    );
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON: {body:?}: {e}"));
    v["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {body}"))
        .to_string()
}

/// A range request for `web/` with `token`, through the gateway: its response body.
fn gateway_get_web(etcd: &Etcd, token: &str) -> String {
    // "d2ViLw==" is "web/" in base64.
    gateway(etcd, "/v3/kv/range", "{\"key\":\"d2ViLw==\"}", Some(token))
}

// ---------------------------------------------------------------------------
// The fixtures, proved with etcdctl
// ---------------------------------------------------------------------------

#[test]
fn fixture_tls_etcd_serves_https_to_clients_that_trust_its_ca() {
    let certs = Certs::generate();
    let mut etcd = Etcd::start_with(EtcdOptions::tls(&certs));
    let endpoint = etcd.endpoints();
    assert!(endpoint.starts_with("https://127.0.0.1:"), "{endpoint}");
    assert_eq!(etcd.endpoint(0), endpoint);
    assert_eq!(etcd.client_url(0), endpoint);
    assert!(etcd.is_healthy(0));
    etcd.put("k", "v");
    assert_eq!(etcd.get("k").as_deref(), Some("v"));
    // Restarts wait for health over TLS too.
    etcd.restart(0);
    assert!(etcd.is_healthy(0));
    assert_eq!(etcd.leader(), Some(0));

    // The CA alone verifies the server: the IP SAN, and the DNS SAN for localhost.
    let ca = path_str(&certs.ca_cert);
    let localhost = endpoint.replace("127.0.0.1", "localhost");
    for ep in [endpoint.as_str(), localhost.as_str()] {
        let out = etcdctl_at(ep, &["--cacert", ca, "get", "k", "--print-value-only"]);
        assert!(out.status.success(), "{ep}: {}", stderr_of(&out));
        assert_eq!(stdout_of(&out), "v\n");
    }

    // Another CA does not verify it; nor does plain http reach it.
    let (other_ca, _) = certs.other_ca("x");
    let out = etcdctl_with(&endpoint, &["--cacert", path_str(&other_ca)], &["get", "k"]);
    refused("unknown CA", &out);
    let plain = endpoint.replace("https://", "http://");
    refused(
        "http:// to a TLS port",
        &etcdctl_with(&plain, &[], &["get", "k"]),
    );
    print_rejections(&etcd, "TLS");
}

#[test]
fn fixture_server_certificate_for_a_wrong_name_fails_verification() {
    let certs = Certs::generate();
    let wrong = certs.server_for(&["wrong.example"]);
    let etcd = Etcd::start_with(EtcdOptions {
        server_cert: Some(&wrong),
        ..EtcdOptions::tls(&certs)
    });
    // The fixture itself skips verification, so it works.
    etcd.put("k", "v");
    let ca = ["--cacert", path_str(&certs.ca_cert)];
    let out = etcdctl_with(&etcd.endpoints(), &ca, &["get", "k"]);
    let err = refused("server certificate for wrong.example", &out);
    assert!(
        err.contains("127.0.0.1") || err.contains("wrong.example"),
        "{err}"
    );
    print_rejections(&etcd, "wrong name");
}

#[test]
fn fixture_client_cert_auth_refuses_missing_expired_foreign_and_mismatched_certificates() {
    let certs = Certs::generate();
    let etcd = Etcd::start_with(EtcdOptions::mutual_tls(&certs));
    etcd.put("k", "v");
    let ep = etcd.endpoints();
    let ca = path_str(&certs.ca_cert);
    let get = |cert: &[&str]| {
        let flags = [&["--cacert", ca][..], cert].concat();
        etcdctl_with(&ep, &flags, &["get", "k", "--print-value-only"])
    };

    let alice = certs.client("alice");
    let out = get(&cert_args(&alice));
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out), "v\n");

    refused("no client certificate", &get(&[]));
    let expired = certs.expired_client("alice");
    refused("expired client certificate", &get(&cert_args(&expired)));
    let (_, foreign) = certs.other_ca("alice");
    refused(
        "client certificate of another CA",
        &get(&cert_args(&foreign)),
    );
    let mismatched = certs.mismatched_client("alice");
    let out = get(&cert_args(&mismatched));
    refused("key that does not match the certificate", &out);
    print_rejections(&etcd, "client-cert-auth");
}

#[test]
fn fixture_cn_of_a_client_certificate_is_the_user_and_roles_limit_it_to_a_prefix() {
    let certs = Certs::generate();
    let etcd = Etcd::start_with(EtcdOptions::mutual_tls(&certs));
    etcd.enable_auth(ROOT_PASSWORD);
    assert_eq!(etcd.root_password().as_deref(), Some(ROOT_PASSWORD));
    etcd.add_user_with_prefixes(
        "web-svc",
        "pw",
        &[
            ELECTION_PREFIX,
            RUNS_PREFIX,
            CANDIDATES_PREFIX,
            HISTORY_PREFIX,
        ],
    );
    // The fixture (root) still works once auth is on.
    etcd.put("web/by-root", "1");
    assert!(etcd.is_healthy(0));

    // etcdctl with the CA and the client certificate of `cn`.
    let as_cn = |cn: &str, args: &[&str]| {
        let pair = certs.client(cn);
        let flags = [
            &["--cacert", path_str(&certs.ca_cert)][..],
            &cert_args(&pair),
        ]
        .concat();
        etcdctl_with(&etcd.endpoints(), &flags, args)
    };
    let as_svc = |args: &[&str]| as_cn("web-svc", args);
    let out = as_svc(&["put", "web/x", "1"]);
    assert!(
        out.status.success(),
        "CN web-svc on web/: {}",
        stderr_of(&out)
    );
    let out = as_svc(&["put", "leaderrun.runs/web/r", "1"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let err = refused(
        "CN web-svc outside its role",
        &as_svc(&["put", "other/x", "1"]),
    );
    assert!(err.contains("permission denied"), "{err}");

    // An unknown CN is no user.
    refused("CN of no user", &as_cn("nobody", &["put", "web/y", "1"]));
    assert_eq!(
        etcd.keys_with_prefix(ELECTION_PREFIX),
        ["web/by-root", "web/x"]
    );
}

#[test]
fn fixture_simple_tokens_with_a_ttl_and_users_with_passwords() {
    let (etcd, _scene) = etcd_with_auth(EtcdOptions {
        auth_token: Some(AuthToken::Simple),
        auth_token_ttl: Some(2),
        ..Default::default()
    });
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", etcd.pid(0).unwrap())).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        cmdline.contains("--auth-token simple") && cmdline.contains("--auth-token-ttl 2"),
        "{cmdline}"
    );
    etcd.add_user_with_prefixes("web-user", "pw1", &[ELECTION_PREFIX]);
    etcd.add_user_with_prefixes("bare", "pw2", &[]);
    let out = etcd.etcdctl_as("web-user", "pw1", &["put", "web/a", "1"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let err = refused(
        "user outside its role",
        &etcd.etcdctl_as("web-user", "pw1", &["put", "leaderrun.runs/web/a", "1"]),
    );
    assert!(err.contains("permission denied"), "{err}");
    let err = refused(
        "wrong password",
        &etcd.etcdctl_as("web-user", "nope", &["get", "web/a"]),
    );
    assert!(err.contains("authentication failed"), "{err}");
    let err = refused(
        "no role at all",
        &etcd.etcdctl_as("bare", "pw2", &["get", "web/a"]),
    );
    assert!(err.contains("permission denied"), "{err}");
    // Without credentials: refused.
    let out = etcdctl_at(&etcd.endpoints(), &["get", "web/a"]);
    refused("no user", &out);
    // A lease and its listing, as root.
    let granted = etcd.etcdctl_ok(&["lease", "grant", "60"]);
    let id = granted
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    assert_eq!(etcd.lease_list(), vec![id.as_str()]);
    etcd.etcdctl_ok(&["lease", "revoke", &id]);
    assert!(etcd.lease_list().is_empty());
}

#[test]
fn fixture_simple_tokens_expire_after_the_ttl_unused_and_jwts_go_stale_on_auth_changes() {
    // Simple tokens, TTL 2 s: a token unused for 4 s is refused.
    let (etcd, _scene) = etcd_with_auth(EtcdOptions {
        auth_token: Some(AuthToken::Simple),
        auth_token_ttl: Some(2),
        ..Default::default()
    });
    etcd.add_user_with_prefixes("web-user", "pw", &[ELECTION_PREFIX]);
    let token = gateway_token(&etcd, "web-user", "pw");
    let fresh = gateway_get_web(&etcd, &token);
    assert!(
        fresh.contains("\"header\""),
        "a fresh token is refused: {fresh}"
    );
    std::thread::sleep(4 * SEC);
    let expired = gateway_get_web(&etcd, &token);
    eprintln!("[simple token unused for 2 TTLs] etcd said: {expired}");
    assert!(expired.contains("invalid auth token"), "{expired}");
    drop(etcd);

    // JWT: a token from before an auth change is refused.
    let (etcd, _scene) = etcd_with_auth(EtcdOptions {
        auth_token: Some(AuthToken::Jwt),
        ..Default::default()
    });
    etcd.add_user_with_prefixes("web-user", "pw", &[ELECTION_PREFIX]);
    let token = gateway_token(&etcd, "web-user", "pw");
    assert!(token.starts_with("ey"), "not a JWT: {token}");
    let fresh = gateway_get_web(&etcd, &token);
    assert!(
        fresh.contains("\"header\""),
        "a fresh JWT is refused: {fresh}"
    );
    etcd.add_user("another", "pw");
    let stale = gateway_get_web(&etcd, &token);
    eprintln!("[JWT after an auth change] etcd said: {stale}");
    // etcd 3.4: "etcdserver: revision of auth store is old" (code 3); 3.5.1's gateway:
    // "auth: revision in header is old" (code 2).
    assert!(
        stale.contains("revision of auth store is old")
            || stale.contains("revision in header is old"),
        "{stale}"
    );
    let renewed = gateway_token(&etcd, "web-user", "pw");
    let fresh = gateway_get_web(&etcd, &renewed);
    assert!(
        fresh.contains("\"header\""),
        "a new JWT is refused: {fresh}"
    );
}

#[test]
fn fixture_jwt_tokens_signed_with_es256() {
    let certs = Certs::generate();
    let etcd = Etcd::start_with(EtcdOptions {
        auth_token: Some(AuthToken::Jwt),
        auth_token_ttl: Some(60),
        ..EtcdOptions::tls(&certs)
    });
    etcd.enable_auth(ROOT_PASSWORD);
    etcd.add_user_with_prefixes("web-user", "pw", &[ELECTION_PREFIX]);
    let out = etcd.etcdctl_as("web-user", "pw", &["put", "web/a", "1"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(etcd.get("web/a").as_deref(), Some("1"));
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", etcd.pid(0).unwrap())).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        cmdline.contains("--auth-token jwt,") && cmdline.contains("sign-method=ES256"),
        "{cmdline}"
    );
    // etcd logs which token provider it set up; a bad key would have made it exit.
    let log = etcd.log_tail(0);
    assert!(!log.contains("failed to create"), "{log}");
}

// ---------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------

#[test]
fn over_https_a_leader_hands_over_to_its_standby_on_sigterm() {
    let certs = Certs::generate();
    let etcd = Etcd::start_with(EtcdOptions::tls(&certs));
    let scene = Scene::on(&etcd, ELECTION);
    assert!(scene.etcd.starts_with("https://127.0.0.1:"));
    let mut opts = cacert(&certs);
    opts.extend(os(&["--ttl", "3"]));

    let (mut a, run_a, _b) = a_leads_b_waits(&scene, &opts);

    scene.sigterm_handover(&mut a, &run_a, "B", 2 * SEC, "over TLS");
    scene.wait_candidates(&["B"], 5 * SEC);
}

#[test]
fn mutual_tls_a_client_certificate_leads_and_without_one_leaderrun_exits_1() {
    let certs = Certs::generate();
    let etcd = Etcd::start_with(EtcdOptions::mutual_tls(&certs));
    let scene = Scene::on(&etcd, ELECTION);
    let host = certs.client("host-a");
    let mut opts = cacert(&certs);
    opts.extend(client_cert(&host));
    opts.extend(os(&["--ttl", "3"]));
    let _a = scene.leaderrun("A").args(&opts).spawn();
    let run_a = scene.wait_leading("A", 1, 10 * SEC);

    // No client certificate: etcd refuses the handshake. That is no outage to wait out.
    let mut b = scene
        .leaderrun("B")
        .args(&cacert(&certs))
        .args(&["--ttl", "3"])
        .spawn();
    let line = expect_fatal(
        &mut b,
        10 * SEC,
        &["certificate", "Certificate", "--cert"],
        "without a client certificate",
    );
    scene.report(&format!("no client certificate: {line}"));
    assert!(runs_of(&scene.runs(), "B").is_empty(), "B's child ran");
    assert!(running_now(&scene.current(run_a.pid)), "A's child stopped");
    assert_eq!(scene.candidate_ids(), ["A"]);
}

#[test]
fn the_cn_of_a_client_certificate_is_the_user_and_leads_without_a_password() {
    let certs = Certs::generate();
    let (etcd, scene) = etcd_with_auth(EtcdOptions::mutual_tls(&certs));
    etcd.add_user_with_prefixes(
        "web-svc",
        "unused",
        &[
            ELECTION_PREFIX,
            RUNS_PREFIX,
            CANDIDATES_PREFIX,
            HISTORY_PREFIX,
        ],
    );
    etcd.etcdctl_ok(&[
        "role",
        "grant-permission",
        "web-svc-role",
        "read",
        RESIGN_KEY,
    ]);
    let svc = certs.client("web-svc");
    let mut opts = cacert(&certs);
    opts.extend(client_cert(&svc));
    opts.extend(os(&["--ttl", "3"]));

    let (mut a, run_a, _b) = a_leads_b_waits(&scene, &opts);
    assert_no_permission_warnings(&a);
    scene.sigterm_handover(&mut a, &run_a, "B", 3 * SEC, "as the CN of a certificate");
}

/// `host`'s own copies of the CA and of a client certificate with CN `host`, from `certs`' CA
/// as it is now, at fixed paths in the scene (`<host>-ca.crt`, `<host>.crt`, `<host>.key`), each
/// replaced by an atomic rename as a certificate renewal does; returns the flags naming them.
fn host_tls_files(scene: &Scene, certs: &Certs, host: &str) -> Vec<OsString> {
    let pair = certs.client(host);
    let ca = scene.path(&format!("{host}-ca.crt"));
    let own = CertPair {
        cert: scene.path(&format!("{host}.crt")),
        key: scene.path(&format!("{host}.key")),
    };
    common::tls::install(&certs.ca_cert, &ca);
    common::tls::install(&pair.key, &own.key);
    common::tls::install(&pair.cert, &own.cert);
    let mut flags = vec!["--cacert".into(), ca.into()];
    flags.extend(client_cert(&own));
    flags
}

/// Certificates rotate under a running leader (cert-manager, Vault), even to a new CA: every
/// new connection reads `--cacert`, `--cert` and `--key` again, those the leader's long-lived
/// main client makes by itself included, so no restart of leaderrun is needed. etcd is
/// restarted trusting only the new CA: no old connection survives and every old file is
/// refused, so the graceful handover after the rotation (resign and revoke, on the main
/// client) works only over connections made with the new files.
#[test]
fn certificates_are_read_again_at_every_new_connection_so_a_leader_follows_a_rotation() {
    let mut certs = Certs::generate();
    let mut etcd = Etcd::start_with(EtcdOptions::mutual_tls(&certs));
    let scene = Scene::on(&etcd, ELECTION);
    // The default TTL (10 s): an etcd restart on a loaded machine stays well inside it.
    let a_files = host_tls_files(&scene, &certs, "host-a");
    let b_files = host_tls_files(&scene, &certs, "host-b");
    let mut a = scene.leaderrun("A").args(&a_files).spawn();
    let run_a = scene.wait_leading("A", 1, 10 * SEC);
    let b = scene.leaderrun("B").args(&b_files).spawn();
    scene.wait_candidates(&["A", "B"], 10 * SEC);

    scene.mark("rotation: new CA, new certificates on both hosts, etcd restarted");
    certs.rotate_ca();
    let a_renewed = host_tls_files(&scene, &certs, "host-a");
    let b_renewed = host_tls_files(&scene, &certs, "host-b");
    assert_eq!((&a_renewed, &b_renewed), (&a_files, &b_files), "same paths");
    etcd.restart(0);
    let restarted = scene.mark("etcd serves the new certificate and trusts only the new CA");

    // Both candidates are back in etcd over new connections; A leads, its child never stopped
    // (or, on a machine slow enough for the lease to run out, A leads again). B's campaign
    // broke with the restart: the key of its first lease goes when that lease expires (10 s).
    scene.wait_candidates(&["A", "B"], 30 * SEC);
    let back = scene.mark("both candidates back in etcd");
    scene.report(&format!(
        "candidates back {:.3}s after etcd's restart",
        secs(since(restarted, back))
    ));
    assert_eq!(scene.candidate_ids().first().map(String::as_str), Some("A"));
    let leading = the_running(&scene.runs()).expect("a child runs after the rotation");
    assert_eq!(
        leading.id.as_deref(),
        Some("A"),
        "A leads after the rotation"
    );
    scene.report(&format!(
        "after the rotation A's first child {}",
        if leading.pid == run_a.pid {
            "runs on"
        } else {
            "was replaced"
        }
    ));

    let with = "after the rotation (slow: the leader's resign did not reach etcd)";
    scene.sigterm_handover(&mut a, &leading, "B", 3 * SEC, with);
    for lr in [&a, &b] {
        assert!(
            final_lines(&lr.log_text()).is_empty(),
            "no fatal line: {}",
            lr.log_text()
        );
    }
    scene.wait_candidates(&["B"], 5 * SEC);
}

/// Over TLS, several endpoints fail over as they do without: a member killed, then another
/// frozen (its sockets open, answering nothing), and the leader's child runs on; the graceful
/// handover afterwards is quick, so the main client's calls reach a live member.
#[test]
fn over_tls_a_member_killed_or_frozen_does_not_restart_the_child() {
    let certs = Certs::generate();
    let mut cluster = EtcdCluster::start_with(3, EtcdOptions::mutual_tls(&certs));
    let scene = Scene::on(&cluster, ELECTION);
    let host = certs.client("host-a");
    let mut opts = cacert(&certs);
    opts.extend(client_cert(&host));
    // The default TTL (10 s): a member frozen while it is the raft leader costs an election.
    let mut a = scene.leaderrun("A").args(&opts).spawn();
    let run_a = scene.wait_leading("A", 1, 15 * SEC);
    let b = scene.leaderrun("B").args(&opts).spawn();
    poll_for(
        15 * SEC,
        || b.log_text(),
        |log| log.contains("standby: campaigning"),
    )
    .unwrap_or_else(|log| panic!("B never campaigned: {log}"));

    // Longer than T - m - G (6 s): a keepalive that did not move would have stopped the child.
    let window = 8 * SEC;
    scene.mark("kill member m0");
    cluster.kill(0);
    scene.only_child_runs_for(run_a.pid, window, "member m0 killed");
    cluster.restart(0);
    scene.mark("member m0 back; freeze member m1");
    cluster.freeze(1);
    scene.only_child_runs_for(run_a.pid, window, "member m1 frozen");
    cluster.thaw(1);
    cluster.wait_healthy(1, 20 * SEC);
    scene.mark("member m1 thawed");

    scene.sigterm_handover(&mut a, &run_a, "B", 3 * SEC, "over TLS after the faults");
}

// ---------------------------------------------------------------------------
// What retrying cannot fix
// ---------------------------------------------------------------------------

/// Starts candidate "A" with `opts` (and `--ttl 3`) and expects a fatal exit within 10 s
/// naming one of `names`, its child never started.
fn fatal_at_start(scene: &Scene, opts: &[OsString], names: &[&str], what: &str) -> String {
    let mut a = scene
        .leaderrun("A")
        .args(opts)
        .args(&["--ttl", "3"])
        .spawn();
    let line = expect_fatal(&mut a, 10 * SEC, names, what);
    scene.report(&format!("{what}: {line}"));
    assert!(scene.runs().is_empty(), "{what}: the child ran");
    line
}

/// A TLS set-up that retrying cannot fix.
struct BadTls {
    what: &'static str,
    /// etcd serves a certificate for this name, not for 127.0.0.1.
    server_for: Option<&'static str>,
    /// etcd requires a client certificate signed by its CA.
    client_cert_auth: bool,
    /// leaderrun's TLS options, and what its line may name besides the endpoint.
    flags: fn(&Certs) -> (Vec<OsString>, Vec<String>),
}

/// The name of each file, as a line may name it.
fn file_names(paths: &[&Path]) -> Vec<String> {
    paths.iter().map(|p| file_name(p).to_string()).collect()
}

#[test]
fn tls_that_retrying_cannot_fix_is_fatal_at_start_naming_the_endpoint_or_the_file() {
    let cases = [
        BadTls {
            what: "--cacert of another CA",
            server_for: None,
            client_cert_auth: false,
            flags: |certs| {
                let (other_ca, _) = certs.other_ca("x");
                let names = file_names(&[&other_ca]);
                (vec!["--cacert".into(), other_ca.into()], names)
            },
        },
        BadTls {
            what: "server certificate for wrong.example",
            server_for: Some("wrong.example"),
            client_cert_auth: false,
            flags: |certs| (cacert(certs), vec!["wrong.example".into()]),
        },
        BadTls {
            what: "expired client certificate",
            server_for: None,
            client_cert_auth: true,
            flags: |certs| {
                let expired = certs.expired_client("host-a");
                let names = file_names(&[&expired.cert]);
                ([cacert(certs), client_cert(&expired)].concat(), names)
            },
        },
        BadTls {
            what: "a key that does not match its certificate",
            server_for: None,
            client_cert_auth: true,
            flags: |certs| {
                let mismatched = certs.mismatched_client("host-a");
                let names = file_names(&[&mismatched.key, &mismatched.cert]);
                ([cacert(certs), client_cert(&mismatched)].concat(), names)
            },
        },
    ];
    for case in cases {
        let certs = Certs::generate();
        let server = case.server_for.map(|name| certs.server_for(&[name]));
        let etcd = Etcd::start_with(EtcdOptions {
            server_cert: server.as_ref(),
            client_cert_auth: case.client_cert_auth,
            ..EtcdOptions::tls(&certs)
        });
        let scene = Scene::on(&etcd, ELECTION);
        let (flags, names) = (case.flags)(&certs);
        let mut names: Vec<&str> = names.iter().map(String::as_str).collect();
        names.push(host_port(&scene.etcd));
        fatal_at_start(&scene, &flags, &names, case.what);
        assert!(scene.candidates().is_empty(), "{}", case.what);
    }
}

#[test]
fn an_http_endpoint_with_tls_options_is_a_usage_error() {
    let certs = Certs::generate();
    // No etcd: a usage error is found before connecting.
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut cmd = leaderrun();
    cmd.args(["--endpoints", &endpoint, "--election", ELECTION])
        .args(cacert(&certs))
        .args(["--", "/bin/true"]);
    let out = run_with_timeout(&mut cmd, 10 * SEC);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err:?}");
    // It names the http:// endpoint, not an unknown option.
    assert!(
        err.starts_with("leaderrun: ") && err.contains("http://"),
        "{err:?}"
    );
    assert!(!err.contains("unexpected argument"), "{err:?}");
    // `leaderrun leader` takes the same options, and the same check.
    let mut cmd = leaderrun();
    cmd.args(["leader", "--endpoints", &endpoint, "--election", ELECTION])
        .args(cacert(&certs));
    let out = run_with_timeout(&mut cmd, 10 * SEC);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "leader: {err}");
    assert_eq!(err.lines().count(), 1, "leader: {err:?}");
    assert!(err.contains("http://"), "leader: {err:?}");
}

// ---------------------------------------------------------------------------
// Auth tokens: expired (simple) and stale (JWT)
// ---------------------------------------------------------------------------

#[test]
fn expired_simple_tokens_do_not_slow_handovers_and_leader_watch_follows() {
    let (etcd, scene) = etcd_with_auth(EtcdOptions {
        auth_token: Some(AuthToken::Simple),
        auth_token_ttl: Some(2),
        ..Default::default()
    });
    let user = web_user(&etcd, &scene);
    let mut opts = user.clone();
    opts.extend(os(&["--ttl", "3"]));

    let mut a = scene.leaderrun("A").args(&opts).spawn();
    let run_a = scene.wait_leading("A", 1, 10 * SEC);
    // B takes its password from the environment.
    let mut b = scene
        .leaderrun("B")
        .args(&["--user", USER, "--ttl", "3"])
        .env("LEADERRUN_PASSWORD", PASSWORD)
        .spawn();
    scene.wait_candidates(&["A", "B"], 10 * SEC);
    let watch = leader_watch(&scene, "watch", &user);
    let shown = watch.wait_out_lines(1, 10 * SEC);
    assert_eq!(id_of(&shown[0]), "A", "{shown:?}");

    // Six token lifetimes with no call but keepalives (and a blocked campaign).
    scene.mark("idle");
    let idle = holds_for(12 * SEC, || {
        let runs = scene.runs();
        runs.len() == 1 && running_now(&runs[0])
    });
    assert!(idle, "A's child stopped or B's started while idle");
    assert!(a.is_running() && b.is_running());

    let run_b = scene.sigterm_handover(&mut a, &run_a, "B", 3 * SEC, "with expired tokens");
    let shown = watch.wait_out_lines(2, 5 * SEC);
    assert_eq!(id_of(&shown[1]), "B", "{shown:?}");

    // A new standby; then the leader is SIGKILLed: its guardian revokes B's lease (with B's
    // credentials) once B's child is gone, and C takes over at once.
    let _c = scene.leaderrun("C").args(&opts).spawn();
    scene.wait_candidates(&["B", "C"], 10 * SEC);
    let t0 = scene.mark("SIGKILL to B");
    b.kill();
    let run_c = scene.wait_leading("C", 1, 10 * SEC);
    let took = since(t0, run_c.start_ns);
    scene.report(&format!("C leads {:.3}s after SIGKILL to B", secs(took)));
    assert!(
        took < ns(2 * SEC),
        "C started {:.3}s after B was killed: B's lease was not revoked",
        secs(took)
    );
    assert_ne!(run_b.pid, run_c.pid);
    let shown = watch.wait_out_lines(3, 5 * SEC);
    assert_eq!(id_of(&shown[2]), "C", "{shown:?}");
    assert_no_overlap(&scene.after_running(run_c.pid, 300 * MS));
}

/// Under systemd's `LoadCredential=etcd-password:...`, the password is read from
/// `$CREDENTIALS_DIRECTORY/etcd-password` when nothing else gives one: here without systemd,
/// the directory a test's own.
#[test]
fn a_password_given_as_a_systemd_credential_is_read_from_its_directory() {
    let (etcd, scene) = etcd_with_auth(EtcdOptions::default());
    web_user(&etcd, &scene);
    let credentials = scene.path("credentials");
    std::fs::create_dir(&credentials).unwrap();
    let file = credentials.join("etcd-password");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    // systemd's mode for a credential: read-only, the service's user's.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o400)).unwrap();
    let a = scene
        .leaderrun("A")
        .args(&["--ttl", "3"])
        .env("LEADERRUN_USER", USER)
        .env("CREDENTIALS_DIRECTORY", &credentials)
        .spawn();
    scene.wait_leading("A", 1, 10 * SEC);
    assert_eq!(a.warnings(), Vec::<String>::new());
    // Without the credential (another directory), a user without a password is refused.
    let mut cmd = leaderrun();
    cmd.args([
        "--endpoints",
        &scene.etcd,
        "--election",
        ELECTION,
        "--user",
        USER,
    ])
    .env("CREDENTIALS_DIRECTORY", scene.path("none"))
    .args(["--", "/bin/true"]);
    let out = scene.command("B", cmd).run(10 * SEC);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("without a password"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn a_leader_with_a_jwt_goes_on_leading_through_auth_changes() {
    let certs = Certs::generate();
    let (etcd, scene) = etcd_with_auth(EtcdOptions {
        auth_token: Some(AuthToken::Jwt),
        ..EtcdOptions::tls(&certs)
    });
    let mut opts = cacert(&certs);
    opts.extend(web_user(&etcd, &scene));
    opts.extend(os(&["--ttl", "3"]));

    let (mut a, run_a, _b) = a_leads_b_waits(&scene, &opts);

    // Each change moves the auth store's revision: tokens issued before it are refused with
    // "revision of auth store is old".
    scene.mark("auth changes");
    etcd.add_user("another", "pw");
    etcd.add_role("another-role", &["another/"]);
    etcd.grant_role("another", "another-role");
    etcd.grant_role(USER, "another-role");
    let out = etcd.etcdctl_as(USER, PASSWORD, &["put", "another/k", "1"]);
    assert!(out.status.success(), "{}", stderr_of(&out));

    // Longer than a lease TTL: A renews and keeps leading; its child is the same.
    scene.only_child_runs_for(run_a.pid, 5 * SEC, "after the auth changes");
    assert!(a.is_running());
    scene.sigterm_handover(&mut a, &run_a, "B", 3 * SEC, "after auth changes");
}

// ---------------------------------------------------------------------------
// Least privilege
// ---------------------------------------------------------------------------

/// `/bin/sh -c` that appends `$LEADERRUN_ID` to `marker`.
fn record_id(marker: &Path) -> String {
    format!("echo \"$LEADERRUN_ID\" >> '{}'", marker.display())
}

#[test]
fn a_user_with_readwrite_on_its_prefixes_only_leads_hands_over_and_runs_a_job_once() {
    let (etcd, scene) = etcd_with_auth(EtcdOptions::default());
    let mut opts = web_user(&etcd, &scene);
    opts.extend(os(&["--ttl", "3"]));

    let (mut a, run_a, mut b) = a_leads_b_waits(&scene, &opts);
    scene.sigterm_handover(
        &mut a,
        &run_a,
        "B",
        3 * SEC,
        "as a user of its prefixes only",
    );
    assert_no_permission_warnings(&a);
    assert_no_permission_warnings(&b);
    b.signal(Signal::SIGTERM);
    b.expect_exit_code(5 * SEC, 0, "a leader exits 0 on SIGTERM");

    // A --run-id job: runs once, a late host does not run it again.
    let marker = scene.path("ran");
    let mut job_opts = opts.clone();
    job_opts.extend(os(&["--run-id", "R1"]));
    let mut h1 = scene
        .leaderrun("host1")
        .args(&job_opts)
        .sh(&record_id(&marker))
        .spawn();
    h1.expect_exit_code(15 * SEC, 0, "the job ran and exited 0");
    let mut h2 = scene
        .leaderrun("host2")
        .args(&job_opts)
        .sh(&record_id(&marker))
        .spawn();
    h2.expect_exit_code(15 * SEC, 0, "the run is recorded: exit 0 without running");
    assert_eq!(lines(&marker), ["host1"]);
    assert_eq!(
        etcd.keys_with_prefix("leaderrun.runs/"),
        ["leaderrun.runs/web/R1"]
    );
    assert!(etcd.keys_with_prefix(ELECTION_PREFIX).is_empty());
}

#[test]
fn a_user_without_the_election_prefix_exits_1_naming_the_permission() {
    const USER: &str = "runs-only";
    const PASSWORD: &str = "pw";
    let (etcd, scene) = etcd_with_auth(EtcdOptions::default());
    etcd.add_user_with_prefixes(USER, PASSWORD, &[RUNS_PREFIX, "webx/"]);
    let pw = password_file(&scene, "password", PASSWORD);
    let line = fatal_at_start(
        &scene,
        &user_flags(USER, &pw),
        &["permission"],
        "a user without web/",
    );
    assert!(
        line.contains(ELECTION),
        "the line does not name the election's range: {line}"
    );
    assert!(etcd.keys_with_prefix(ELECTION_PREFIX).is_empty());
    assert!(scene.candidates().is_empty());
}

#[test]
fn a_user_without_the_runs_prefix_and_a_run_id_exits_1_and_leaves_nothing_behind() {
    const USER: &str = "election-only";
    const PASSWORD: &str = "pw";
    let (etcd, scene) = etcd_with_auth(EtcdOptions::default());
    etcd.add_user_with_prefixes(USER, PASSWORD, &[ELECTION_PREFIX]);
    let pw = password_file(&scene, "password", PASSWORD);
    let marker = scene.path("ran");
    let mut a = scene
        .leaderrun("A")
        .args(&user_flags(USER, &pw))
        .args(&["--ttl", "3", "--run-id", "R1"])
        .sh(&record_id(&marker))
        .spawn();
    let line = expect_fatal(
        &mut a,
        10 * SEC,
        &["permission", "leaderrun.runs/"],
        "--run-id without leaderrun.runs/web/",
    );
    scene.report(&format!("--run-id without its prefix: {line}"));
    assert!(lines(&marker).is_empty(), "the job ran");
    assert!(
        etcd.lease_list().is_empty(),
        "leases left behind: {:?}",
        etcd.lease_list()
    );
    assert!(etcd.keys_with_prefix(ELECTION_PREFIX).is_empty());
    assert!(etcd.keys_with_prefix("leaderrun.runs/").is_empty());
}

// ---------------------------------------------------------------------------
// --config
// ---------------------------------------------------------------------------

#[test]
fn a_config_file_alone_gives_endpoints_tls_user_election_and_ttl() {
    let certs = Certs::generate();
    let (etcd, scene) = etcd_with_auth(EtcdOptions::tls(&certs));
    etcd.add_user_with_prefixes(USER, PASSWORD, &[ELECTION_PREFIX, RUNS_PREFIX]);
    let pw = password_file(&scene, "password", PASSWORD);
    let config = scene.path("leaderrun.toml");
    let toml = format!(
        "endpoints = [\"{}\"]\ncacert = \"{}\"\nuser = \"{USER}\"\npassword_file = \"{}\"\n\
         election = \"{ELECTION}\"\nttl = 3\n",
        etcd.endpoints(),
        certs.ca_cert.display(),
        pw.display()
    );
    std::fs::write(&config, &toml).expect("write config");

    let mut cmd = leaderrun();
    cmd.arg("--config")
        .arg(&config)
        .arg("--")
        .args(scene.fenced(&[]));
    let mut a = scene.command("A", cmd).spawn();
    let run = scene.wait_nth_run(1, 10 * SEC, "the child of leaderrun --config");
    assert!(running_now(&run), "{run:?}");
    // It campaigns in the election of the file, with the file's TTL.
    let keys = etcd.keys_with_prefix(ELECTION_PREFIX);
    assert_eq!(keys.len(), 1, "{keys:?}\nconfig:\n{toml}");
    let lease = keys[0].strip_prefix(ELECTION_PREFIX).unwrap();
    let ttl = etcd.etcdctl_ok(&["lease", "timetolive", lease]);
    assert!(ttl.contains("granted with TTL(3s)"), "{ttl}");
    a.signal(Signal::SIGTERM);
    a.expect_exit_code(5 * SEC, 0, "a leader exits 0 on SIGTERM");
    assert_eq!(scene.current(run.pid).ending, Ending::Term);
}
