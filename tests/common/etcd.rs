//! Real etcd processes on free loopback ports: a single member (`Etcd`) or a
//! cluster (`EtcdCluster`), with kill/freeze/thaw/restart controls.
//!
//! `Etcd::start_with` / `EtcdCluster::start_with` take `EtcdOptions`: TLS for clients
//! (certificates from `tls::Certs`; endpoints become `https://127.0.0.1:PORT`), client
//! certificate authentication (`EtcdOptions::tls`, `EtcdOptions::mutual_tls`) and the auth
//! token kind (simple, JWT) and TTL. The fixture's own calls (health checks, `etcdctl`, `put`,
//! `get`, `leader`) follow: over TLS they present the CA and the `root` client certificate, and
//! once `enable_auth` has run they log in as root; so does a `Scene::on` the fixture. Auth
//! set-up: `enable_auth`, `add_user`, `add_role`, `grant_role`, `add_user_with_prefixes`.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::tls::{jwt_keys, CertPair, Certs};
use super::{file_tail, free_ports, run_with_timeout, signal_pid, unique_name, TempDir};

/// How long a member (or a whole cluster) may take to report healthy.
const HEALTHY_DEADLINE: Duration = Duration::from_secs(20);
/// Fresh ports are tried this many times if etcd hits a port collision.
const START_ATTEMPTS: usize = 4;
/// Upper bound for any etcdctl call (etcdctl has its own shorter timeouts).
const ETCDCTL_DEADLINE: Duration = Duration::from_secs(30);
const LOG_TAIL_LINES: usize = 40;
/// Written to the member log before each start, to tell starts apart.
const START_MARKER: &str = "---- fixture: starting";

fn etcd_bin() -> String {
    std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".into())
}

fn etcdctl_bin() -> String {
    std::env::var("ETCDCTL_BIN").unwrap_or_else(|_| "etcdctl".into())
}

/// Panics with a clear message if etcd or etcdctl is missing: tests must
/// never skip silently.
fn require_etcd() {
    for (bin, arg) in [(etcd_bin(), "--version"), (etcdctl_bin(), "version")] {
        let found = Command::new(&bin)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Err(e) = found {
            panic!(
                "`{bin}` not runnable ({e}): the integration tests need etcd 3.4+ and \
                 etcdctl on PATH (Debian: apt-get install etcd-server etcd-client), \
                 or set ETCD_BIN / ETCDCTL_BIN"
            );
        }
    }
}

/// `etcdctl --endpoints <endpoints> args...` (API v3), to spawn as one likes.
pub fn etcdctl_command(endpoints: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(etcdctl_bin());
    // etcdctl 3.5 warns about every ETCDCTL_* variable it does not know, ETCDCTL_BIN too.
    cmd.env_remove("ETCDCTL_BIN")
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(endpoints)
        .args(args);
    cmd
}

/// Runs `etcdctl --endpoints <endpoints> args...` (API v3), bounded in time.
pub fn etcdctl_at(endpoints: &str, args: &[&str]) -> Output {
    run_with_timeout(&mut etcdctl_command(endpoints, args), ETCDCTL_DEADLINE)
}

/// Like `etcdctl_at` but panics with stderr on failure; returns stdout.
pub fn etcdctl_at_ok(endpoints: &str, args: &[&str]) -> String {
    let out = etcdctl_at(endpoints, args);
    if !out.status.success() {
        panic!(
            "etcdctl --endpoints {endpoints} {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One etcd member: fixed ports, its own temp dir holding `data/` and
/// `etcd.log` (stdout+stderr, appended across restarts).
#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    dir: TempDir,
    child: Option<Child>,
    frozen: bool,
    /// Clients connect over TLS (https).
    tls: bool,
}

impl Member {
    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    fn client_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn spawn(&mut self, initial_cluster: &str, token: &str, extra: &[OsString]) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = self.open_log();
        let mut cmd = Command::new(etcd_bin());
        // etcd reads every ETCD_* variable as a flag of its own.
        cmd.env_remove("ETCD_BIN").env_remove("ETCDCTL_BIN");
        cmd.arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--listen-client-urls", &self.client_url()])
            .args(["--advertise-client-urls", &self.client_url()])
            .args(["--listen-peer-urls", &self.peer_url()])
            .args(["--initial-advertise-peer-urls", &self.peer_url()])
            .args(["--initial-cluster", initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", token])
            // zap avoids 3.4's capnslog deprecation noise in the log.
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log fd"))
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", etcd_bin()));
        self.child = Some(child);
        self.frozen = false;
    }

    fn open_log(&self) -> File {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open etcd log");
        let _ = writeln!(log, "{START_MARKER} {}", self.name);
        log
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Exit status text if the process has exited (it is reaped then).
    fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        let status = child.try_wait().expect("try_wait etcd")?;
        self.child = None;
        Some(status.to_string())
    }

    /// SIGKILL (SIGCONT first if stopped) and reap. No-op if not running.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.frozen {
                signal_pid(child.id(), Signal::SIGCONT);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.frozen = false;
    }

    fn signal(&mut self, sig: Signal) {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        signal_pid(pid, sig);
    }

    fn log_tail(&self) -> String {
        file_tail(&self.log_path(), LOG_TAIL_LINES)
    }

    /// Looks only at the latest start's output: the log spans restarts.
    fn hit_port_collision(&self) -> bool {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let latest = log.rsplit(START_MARKER).next().unwrap_or("");
        latest.contains("address already in use")
    }
}

/// GET /health on the client port. etcd answers `"health":"true"` only when
/// the member has a leader and a quorum read succeeds, so this proves the
/// cluster serves requests, without paying for an etcdctl process per poll.
fn http_healthy(client_port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], client_port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let req = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

/// Why a member failed to become healthy.
#[derive(Debug)]
enum StartFailure {
    /// etcd exited because a port was taken: retry with other ports.
    PortCollision(String),
    /// Anything else: panic with this report.
    Fatal(String),
}

/// etcd's `--auth-token` kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthToken {
    /// `--auth-token simple` (etcd's default): opaque tokens that expire after
    /// `--auth-token-ttl` seconds without use.
    Simple,
    /// `--auth-token jwt,pub-key=..,priv-key=..,sign-method=ES256` with an ES256 key pair
    /// generated at start (`auth_token_ttl` becomes the JWT's `ttl=`).
    Jwt,
}

/// How to start etcd. `Default` is what `EtcdCluster::start` uses: plain http, no options.
#[derive(Clone, Copy, Debug, Default)]
pub struct EtcdOptions<'a> {
    /// Serve clients over TLS with `certs.server` (or `server_cert`): endpoints become
    /// `https://127.0.0.1:PORT`. Clients need not present a certificate (see
    /// `client_cert_auth`).
    pub tls: Option<&'a Certs>,
    /// Serve this certificate instead of `certs.server` (e.g. `certs.server_for(&["wrong.example"])`).
    /// The fixture's own etcdctl then skips verifying the server (`--insecure-skip-tls-verify`).
    pub server_cert: Option<&'a CertPair>,
    /// `--client-cert-auth --trusted-ca-file <certs.ca_cert>`: clients must present a
    /// certificate signed by the CA; with auth enabled and no token, its CN is the user.
    /// Needs `tls`.
    pub client_cert_auth: bool,
    /// `--auth-token` (None: etcd's default, simple).
    pub auth_token: Option<AuthToken>,
    /// `--auth-token-ttl` in seconds for simple tokens; the `ttl=` option of JWT tokens.
    pub auth_token_ttl: Option<u32>,
}

impl<'a> EtcdOptions<'a> {
    /// Clients over TLS (`tls`), nothing else.
    pub fn tls(certs: &'a Certs) -> EtcdOptions<'a> {
        EtcdOptions {
            tls: Some(certs),
            ..Default::default()
        }
    }

    /// Clients over TLS, each presenting a certificate signed by the CA (`client_cert_auth`).
    pub fn mutual_tls(certs: &'a Certs) -> EtcdOptions<'a> {
        EtcdOptions {
            client_cert_auth: true,
            ..EtcdOptions::tls(certs)
        }
    }
}

/// What the fixture's own etcdctl presents over TLS.
#[derive(Clone, Debug)]
struct FixtureTls {
    cacert: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    skip_verify: bool,
}

/// bcrypt's cost for the passwords of test users: the minimum, 4 (etcd's default, 10, costs
/// tens of ms per login on a loaded machine).
const BCRYPT_COST: &str = "4";

/// A cluster of real etcd members named m0..m{n-1} on 127.0.0.1.
/// Drop SIGKILLs every member and removes its data dir.
#[derive(Debug)]
pub struct EtcdCluster {
    token: String,
    members: Vec<Member>,
    /// Extra etcd flags of every member (TLS, auth token).
    extra: Vec<OsString>,
    /// Set when clients connect over TLS.
    tls: Option<FixtureTls>,
    /// The root password once `enable_auth` has run: the fixture then logs in as root.
    root_password: Mutex<Option<String>>,
    /// Files shared by the members (the JWT key pair); removed on Drop.
    shared: TempDir,
}

impl EtcdCluster {
    /// Starts `n` members and waits (<= 20 s) until all report healthy.
    /// Panics with the members' log tails if that does not happen.
    pub fn start(n: usize) -> EtcdCluster {
        EtcdCluster::start_with(n, EtcdOptions::default())
    }

    /// Like `start`, with TLS and auth options (see `EtcdOptions`).
    pub fn start_with(n: usize, opts: EtcdOptions<'_>) -> EtcdCluster {
        assert!(n > 0, "a cluster needs at least one member");
        assert!(
            opts.tls.is_some() || (!opts.client_cert_auth && opts.server_cert.is_none()),
            "client_cert_auth and server_cert need tls: {opts:?}"
        );
        require_etcd();
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            let mut cluster = EtcdCluster::create(n, opts);
            cluster.spawn_all();
            match cluster.wait_all_healthy() {
                Ok(()) => return cluster,
                Err(StartFailure::PortCollision(report)) => last = report,
                Err(StartFailure::Fatal(report)) => panic!("etcd cluster did not start:\n{report}"),
            }
        }
        panic!("etcd hit port collisions {START_ATTEMPTS} times; last:\n{last}");
    }

    fn create(n: usize, opts: EtcdOptions<'_>) -> EtcdCluster {
        let shared = TempDir::new("leaderrun-etcd-shared");
        let mut extra: Vec<OsString> = vec!["--bcrypt-cost".into(), BCRYPT_COST.into()];
        let tls = opts.tls.map(|certs| {
            let server = opts.server_cert.unwrap_or(&certs.server);
            extra.push("--cert-file".into());
            extra.push(server.cert.clone().into());
            extra.push("--key-file".into());
            extra.push(server.key.clone().into());
            // etcd requires a client certificate whenever it has a --trusted-ca-file.
            if opts.client_cert_auth {
                extra.push("--trusted-ca-file".into());
                extra.push(certs.ca_cert.clone().into());
                extra.push("--client-cert-auth".into());
            }
            FixtureTls {
                cacert: certs.ca_cert.clone(),
                cert: certs.root.cert.clone(),
                key: certs.root.key.clone(),
                skip_verify: opts.server_cert.is_some(),
            }
        });
        match opts.auth_token {
            None => {}
            Some(AuthToken::Simple) => {
                extra.push("--auth-token".into());
                extra.push("simple".into());
            }
            Some(AuthToken::Jwt) => {
                let (public, private) = jwt_keys(shared.path());
                let mut jwt = format!(
                    "jwt,pub-key={},priv-key={},sign-method=ES256",
                    public.display(),
                    private.display()
                );
                if let Some(ttl) = opts.auth_token_ttl {
                    jwt.push_str(&format!(",ttl={ttl}s"));
                }
                extra.push("--auth-token".into());
                extra.push(jwt.into());
            }
        }
        if let Some(ttl) = opts.auth_token_ttl {
            if opts.auth_token != Some(AuthToken::Jwt) {
                extra.push("--auth-token-ttl".into());
                extra.push(ttl.to_string().into());
            }
        }
        let ports = free_ports(2 * n);
        let members = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                dir: TempDir::new(&format!("leaderrun-etcd-m{i}")),
                child: None,
                frozen: false,
                tls: tls.is_some(),
            })
            .collect();
        EtcdCluster {
            token: unique_name("leaderrun-test"),
            members,
            extra,
            tls,
            root_password: Mutex::new(None),
            shared,
        }
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn_all(&mut self) {
        let initial = self.initial_cluster();
        for m in &mut self.members {
            m.spawn(&initial, &self.token, &self.extra);
        }
    }

    /// Polls every member until all are healthy, failing early if one exits.
    fn wait_all_healthy(&mut self) -> Result<(), StartFailure> {
        let deadline = Instant::now() + HEALTHY_DEADLINE;
        let mut pending: Vec<usize> = (0..self.members.len()).collect();
        while !pending.is_empty() {
            for &i in &pending {
                self.check_alive(i)?;
            }
            pending.retain(|&i| !self.is_healthy(i));
            if Instant::now() >= deadline && !pending.is_empty() {
                return Err(StartFailure::Fatal(
                    self.report(&pending, "not healthy after 20 s"),
                ));
            }
            if !pending.is_empty() {
                // Over TLS each check is an etcdctl run: poll less often.
                let poll = if self.tls.is_some() { 200 } else { 50 };
                thread::sleep(Duration::from_millis(poll));
            }
        }
        Ok(())
    }

    fn check_alive(&mut self, i: usize) -> Result<(), StartFailure> {
        let Some(status) = self.members[i].exited() else {
            return Ok(());
        };
        let report = self.report(&[i], &format!("exited early ({status})"));
        if self.members[i].hit_port_collision() {
            Err(StartFailure::PortCollision(report))
        } else {
            Err(StartFailure::Fatal(report))
        }
    }

    fn report(&self, which: &[usize], what: &str) -> String {
        which
            .iter()
            .map(|&i| {
                let m = &self.members[i];
                format!(
                    "== {} (client {}, peer {}) {what}; log {}:\n{}",
                    m.name,
                    m.client_port,
                    m.peer_port,
                    m.log_path().display(),
                    m.log_tail()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// `http://127.0.0.1:<client port>` of member `i` (`https://` over TLS).
    pub fn client_url(&self, i: usize) -> String {
        self.members[i].client_url()
    }

    /// `127.0.0.1:<client port>` of member `i` (`https://127.0.0.1:<port>` over TLS).
    pub fn endpoint(&self, i: usize) -> String {
        if self.tls.is_some() {
            self.client_url(i)
        } else {
            format!("127.0.0.1:{}", self.members[i].client_port)
        }
    }

    pub fn client_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.members[i].client_port))
    }

    /// Comma-separated `127.0.0.1:port` client endpoints of all members
    /// (`https://127.0.0.1:port` over TLS).
    pub fn endpoints(&self) -> String {
        (0..self.size())
            .map(|i| self.endpoint(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].pid()
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.members[i].data_dir()
    }

    /// The member's temp dir (data dir + log live inside; removed on Drop).
    pub fn member_dir(&self, i: usize) -> &Path {
        self.members[i].dir.path()
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.members[i].log_path()
    }

    pub fn log_tail(&self, i: usize) -> String {
        self.members[i].log_tail()
    }

    /// True if member `i` has a live (possibly frozen) process.
    pub fn is_running(&mut self, i: usize) -> bool {
        let m = &mut self.members[i];
        m.child.is_some() && m.exited().is_none()
    }

    pub fn is_frozen(&self, i: usize) -> bool {
        self.members[i].frozen
    }

    /// Member `i` answers GET /health with true right now (over TLS: `etcdctl endpoint
    /// health` succeeds).
    pub fn is_healthy(&self, i: usize) -> bool {
        let port = self.members[i].client_port;
        if self.tls.is_none() {
            return http_healthy(port);
        }
        // A cheap probe first (etcd logs it as a rejected connection, "EOF"): etcdctl would
        // wait out its dial timeout on a port nobody listens on yet.
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err() {
            return false;
        }
        self.etcdctl_member(i, &["endpoint", "health"])
            .status
            .success()
    }

    /// `etcdctl` at member `i` alone, dial and command cut at 2 s each (a probe of one member,
    /// which may be down or frozen), bounded at 10 s.
    fn etcdctl_member(&self, i: usize, args: &[&str]) -> Output {
        let mut cmd = self.etcdctl_command_at(
            &self.endpoint(i),
            &["--dial-timeout", "2s", "--command-timeout", "2s"],
        );
        cmd.args(args);
        run_with_timeout(&mut cmd, Duration::from_secs(10))
    }

    /// SIGKILL member `i` and reap it. Its ports and data dir are kept.
    pub fn kill(&mut self, i: usize) {
        self.members[i].stop();
    }

    /// SIGSTOP member `i`: it keeps its sockets but answers nothing.
    pub fn freeze(&mut self, i: usize) {
        self.members[i].signal(Signal::SIGSTOP);
        self.members[i].frozen = true;
    }

    /// SIGCONT member `i`.
    pub fn thaw(&mut self, i: usize) {
        self.members[i].signal(Signal::SIGCONT);
        self.members[i].frozen = false;
    }

    /// Kills member `i` if running, starts it again on the same ports and
    /// data dir, and waits until it is healthy (needs a quorum).
    pub fn restart(&mut self, i: usize) {
        self.respawn(i);
        self.wait_healthy(i, HEALTHY_DEADLINE);
    }

    /// Like `restart` but does not wait for health (e.g. quorum is lost).
    /// Retries briefly if a port is momentarily taken: the ports cannot
    /// change because the peers know this member by its URL.
    pub fn respawn(&mut self, i: usize) {
        self.members[i].stop();
        let initial = self.initial_cluster();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            self.members[i].spawn(&initial, &self.token, &self.extra);
            // A bind failure shows up within a few hundred ms at most.
            thread::sleep(Duration::from_millis(300));
            match self.check_alive(i) {
                Ok(()) => return,
                Err(StartFailure::PortCollision(r)) if Instant::now() < deadline => {
                    eprintln!(
                        "etcd {} port busy on restart, retrying:\n{r}",
                        self.members[i].name
                    );
                }
                Err(StartFailure::PortCollision(r) | StartFailure::Fatal(r)) => {
                    panic!("etcd restart failed:\n{r}")
                }
            }
        }
    }

    /// Waits until member `i` is healthy; panics with its log tail if not.
    pub fn wait_healthy(&mut self, i: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Err(StartFailure::PortCollision(r) | StartFailure::Fatal(r)) =
                self.check_alive(i)
            {
                panic!("etcd member died:\n{r}");
            }
            if self.is_healthy(i) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{}",
                    self.report(&[i], &format!("not healthy after {timeout:?}"))
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The flags the fixture's etcdctl adds over TLS and once auth is on: `--cacert CA --cert
    /// root.crt --key root.key [--insecure-skip-tls-verify] [--user root:PASSWORD]`.
    pub fn etcdctl_flags(&self) -> Vec<String> {
        let mut flags = self.tls_flags();
        if let Some(password) = self.root_password.lock().unwrap().as_deref() {
            flags.push("--user".into());
            flags.push(format!("root:{password}"));
        }
        flags
    }

    /// `--cacert CA --cert root.crt --key root.key [--insecure-skip-tls-verify]` over TLS.
    fn tls_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(tls) = &self.tls {
            for (flag, path) in [
                ("--cacert", &tls.cacert),
                ("--cert", &tls.cert),
                ("--key", &tls.key),
            ] {
                flags.push(flag.to_string());
                flags.push(path.display().to_string());
            }
            if tls.skip_verify {
                flags.push("--insecure-skip-tls-verify".into());
            }
        }
        flags
    }

    /// `etcdctl --endpoints <endpoints> <etcdctl_flags> args...`, to spawn as one likes.
    fn etcdctl_command_at(&self, endpoints: &str, args: &[&str]) -> Command {
        let mut cmd = etcdctl_command(endpoints, &[]);
        cmd.args(self.etcdctl_flags()).args(args);
        cmd
    }

    /// `etcdctl --endpoints <all members> <etcdctl_flags> args...`, to spawn as one likes
    /// (e.g. `etcdctl elect -l`, through `Scene::command`).
    pub fn etcdctl_command(&self, args: &[&str]) -> Command {
        self.etcdctl_command_at(&self.endpoints(), args)
    }

    /// `etcdctl --endpoints <all members> args...` (over TLS and with auth as the fixture's
    /// root: see `etcdctl_flags`).
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        if self.tls.is_none() && self.root_password.lock().unwrap().is_none() {
            return etcdctl_at(&self.endpoints(), args);
        }
        run_with_timeout(&mut self.etcdctl_command(args), ETCDCTL_DEADLINE)
    }

    /// Like `etcdctl`, panicking with stderr on failure; returns stdout.
    pub fn etcdctl_ok(&self, args: &[&str]) -> String {
        let out = self.etcdctl(args);
        if !out.status.success() {
            panic!(
                "etcdctl --endpoints {} {args:?} failed ({}):\n{}",
                self.endpoints(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `etcdctl` as `user` with `password` (over TLS with the CA and the root client
    /// certificate, whose CN the token overrides), unchecked.
    pub fn etcdctl_as(&self, user: &str, password: &str, args: &[&str]) -> Output {
        let mut cmd = etcdctl_command(&self.endpoints(), &[]);
        cmd.args(self.tls_flags())
            .arg("--user")
            .arg(format!("{user}:{password}"))
            .args(args);
        run_with_timeout(&mut cmd, ETCDCTL_DEADLINE)
    }

    // -----------------------------------------------------------------------
    // Auth set-up (as root once auth is on)
    // -----------------------------------------------------------------------

    /// Adds the user `root` with `root_password`, enables auth, and from then on runs the
    /// fixture's etcdctl as root.
    pub fn enable_auth(&self, root_password: &str) {
        self.etcdctl_ok(&["user", "add", &format!("root:{root_password}")]);
        self.etcdctl_ok(&["auth", "enable"]);
        *self.root_password.lock().unwrap() = Some(root_password.to_string());
    }

    /// The root password given to `enable_auth`, if auth is on.
    pub fn root_password(&self) -> Option<String> {
        self.root_password.lock().unwrap().clone()
    }

    /// `etcdctl user add name:password`.
    pub fn add_user(&self, name: &str, password: &str) {
        self.etcdctl_ok(&["user", "add", &format!("{name}:{password}")]);
    }

    /// `etcdctl role add role`, then readwrite on each key prefix in `prefixes`
    /// (`role grant-permission role --prefix=true readwrite PREFIX`).
    pub fn add_role(&self, role: &str, prefixes: &[&str]) {
        self.etcdctl_ok(&["role", "add", role]);
        for prefix in prefixes {
            self.etcdctl_ok(&[
                "role",
                "grant-permission",
                role,
                "--prefix=true",
                "readwrite",
                prefix,
            ]);
        }
    }

    /// `etcdctl user grant-role user role`.
    pub fn grant_role(&self, user: &str, role: &str) {
        self.etcdctl_ok(&["user", "grant-role", user, role]);
    }

    /// A user `name` with `password` whose only role, `<name>-role`, has readwrite on each
    /// prefix in `prefixes` (none: a user without permissions).
    pub fn add_user_with_prefixes(&self, name: &str, password: &str, prefixes: &[&str]) {
        self.add_user(name, password);
        let role = format!("{name}-role");
        self.add_role(&role, prefixes);
        self.grant_role(name, &role);
    }

    /// The ids (hex, as etcdctl prints them) of all leases, as root.
    pub fn lease_list(&self) -> Vec<String> {
        // "found 2 leases\n694d7c...\n694d7c...\n"
        self.etcdctl_ok(&["lease", "list"])
            .lines()
            .skip(1)
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The keys under `prefix`, as root.
    pub fn keys_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.etcdctl_ok(&["get", "--prefix", prefix, "--keys-only"])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Puts `key`, retrying for up to 20 s: a write in flight when the
    /// leader dies or freezes is lost by etcd and only times out, so
    /// single-shot writes are flaky right after a fault. Put is idempotent.
    pub fn put(&self, key: &str, value: &str) {
        self.etcdctl_retry(&["put", key, value]);
    }

    /// The value of `key` (None if absent), retrying like `put`.
    pub fn get(&self, key: &str) -> Option<String> {
        let out = self.etcdctl_retry(&["get", key, "--print-value-only"]);
        let value = out.strip_suffix('\n').unwrap_or(&out);
        (!out.is_empty()).then(|| value.to_string())
    }

    /// Runs etcdctl until it succeeds (<= 20 s); returns stdout.
    pub fn etcdctl_retry(&self, args: &[&str]) -> String {
        let deadline = Instant::now() + HEALTHY_DEADLINE;
        let mut full = vec!["--command-timeout", "2s"];
        full.extend_from_slice(args);
        loop {
            let out = self.etcdctl(&full);
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            if Instant::now() >= deadline {
                panic!(
                    "etcdctl {args:?} kept failing for {HEALTHY_DEADLINE:?}; last error:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Index of the member that is raft leader now, asking only running,
    /// unfrozen members (a frozen one would just time out). None if no
    /// reachable member claims leadership.
    pub fn leader(&mut self) -> Option<usize> {
        (0..self.size()).find(|&i| {
            if !self.is_running(i) || self.is_frozen(i) {
                return false;
            }
            let out = self.etcdctl_member(i, &["endpoint", "status", "-w", "simple"]);
            // "<endpoint>, <id>, <version>, <db size>, <is leader>, ..."
            let text = String::from_utf8_lossy(&out.stdout);
            out.status.success() && text.split(", ").nth(4) == Some("true")
        })
    }

    /// Waits until some member is leader; panics with all logs if none is.
    pub fn wait_leader(&mut self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.leader() {
                return i;
            }
            if Instant::now() >= deadline {
                let all: Vec<usize> = (0..self.size()).collect();
                panic!(
                    "{}",
                    self.report(&all, &format!("no leader after {timeout:?}"))
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        // A failing test gets the members' logs before they are deleted.
        if thread::panicking() {
            eprintln!(
                "{}",
                self.report(&(0..self.size()).collect::<Vec<_>>(), "at panic")
            );
        }
        // Kill first; the TempDirs are removed afterwards when fields drop.
        for m in &mut self.members {
            m.stop();
        }
    }
}

/// A single-member etcd (member m0), the common case. It is a cluster of one: every
/// `EtcdCluster` method works on it (`Deref`), the per-member ones with member 0
/// (`etcd.client_addr(0)`, `etcd.kill(0)`).
#[derive(Debug)]
pub struct Etcd {
    cluster: EtcdCluster,
}

impl Etcd {
    /// Starts one member and waits until healthy (<= 20 s), else panics.
    pub fn single() -> Etcd {
        Etcd::start_with(EtcdOptions::default())
    }

    /// One member started with `opts` (TLS, auth token); waits until healthy.
    pub fn start_with(opts: EtcdOptions<'_>) -> Etcd {
        Etcd {
            cluster: EtcdCluster::start_with(1, opts),
        }
    }
}

impl std::ops::Deref for Etcd {
    type Target = EtcdCluster;

    fn deref(&self) -> &EtcdCluster {
        &self.cluster
    }
}

impl std::ops::DerefMut for Etcd {
    fn deref_mut(&mut self) -> &mut EtcdCluster {
        &mut self.cluster
    }
}
