//! Real etcd processes on free loopback ports: a single member (`Etcd`) or a
//! cluster (`EtcdCluster`), with kill/freeze/thaw/restart controls.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

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
    cmd.env("ETCDCTL_API", "3")
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
}

impl Member {
    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn spawn(&mut self, initial_cluster: &str, token: &str) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = self.open_log();
        let mut cmd = Command::new(etcd_bin());
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

/// A cluster of real etcd members named m0..m{n-1} on 127.0.0.1.
/// Drop SIGKILLs every member and removes its data dir.
#[derive(Debug)]
pub struct EtcdCluster {
    token: String,
    members: Vec<Member>,
}

impl EtcdCluster {
    /// Starts `n` members and waits (<= 20 s) until all report healthy.
    /// Panics with the members' log tails if that does not happen.
    pub fn start(n: usize) -> EtcdCluster {
        assert!(n > 0, "a cluster needs at least one member");
        require_etcd();
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            let mut cluster = EtcdCluster::create(n);
            cluster.spawn_all();
            match cluster.wait_all_healthy() {
                Ok(()) => return cluster,
                Err(StartFailure::PortCollision(report)) => last = report,
                Err(StartFailure::Fatal(report)) => panic!("etcd cluster did not start:\n{report}"),
            }
        }
        panic!("etcd hit port collisions {START_ATTEMPTS} times; last:\n{last}");
    }

    fn create(n: usize) -> EtcdCluster {
        let ports = free_ports(2 * n);
        let members = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                dir: TempDir::new(&format!("leaderrun-etcd-m{i}")),
                child: None,
                frozen: false,
            })
            .collect();
        EtcdCluster {
            token: unique_name("leaderrun-test"),
            members,
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
            m.spawn(&initial, &self.token);
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
            pending.retain(|&i| !http_healthy(self.members[i].client_port));
            if Instant::now() >= deadline && !pending.is_empty() {
                return Err(StartFailure::Fatal(
                    self.report(&pending, "not healthy after 20 s"),
                ));
            }
            if !pending.is_empty() {
                thread::sleep(Duration::from_millis(50));
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

    /// `http://127.0.0.1:<client port>` of member `i`.
    pub fn client_url(&self, i: usize) -> String {
        self.members[i].client_url()
    }

    /// `127.0.0.1:<client port>` of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.members[i].client_port)
    }

    pub fn client_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.members[i].client_port))
    }

    /// Comma-separated `127.0.0.1:port` client endpoints of all members.
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

    /// Member `i` answers GET /health with true right now.
    pub fn is_healthy(&self, i: usize) -> bool {
        http_healthy(self.members[i].client_port)
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
            self.members[i].spawn(&initial, &self.token);
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

    /// `etcdctl --endpoints <all members> args...`.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        etcdctl_at(&self.endpoints(), args)
    }

    /// Like `etcdctl`, panicking with stderr on failure; returns stdout.
    pub fn etcdctl_ok(&self, args: &[&str]) -> String {
        etcdctl_at_ok(&self.endpoints(), args)
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
            let out = etcdctl_at(
                &self.endpoint(i),
                &[
                    "--command-timeout",
                    "2s",
                    "endpoint",
                    "status",
                    "-w",
                    "simple",
                ],
            );
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

/// A single-member etcd (member m0), the common case.
#[derive(Debug)]
pub struct Etcd {
    cluster: EtcdCluster,
}

impl Etcd {
    /// Starts one member and waits until healthy (<= 20 s), else panics.
    pub fn single() -> Etcd {
        Etcd {
            cluster: EtcdCluster::start(1),
        }
    }

    /// `127.0.0.1:<client port>`.
    pub fn endpoint(&self) -> String {
        self.cluster.endpoint(0)
    }

    /// Same as `endpoint()`: lets code take either fixture.
    pub fn endpoints(&self) -> String {
        self.cluster.endpoints()
    }

    /// `http://127.0.0.1:<client port>`.
    pub fn client_url(&self) -> String {
        self.cluster.client_url(0)
    }

    pub fn client_addr(&self) -> SocketAddr {
        self.cluster.client_addr(0)
    }

    pub fn pid(&self) -> Option<u32> {
        self.cluster.pid(0)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.cluster.data_dir(0)
    }

    pub fn member_dir(&self) -> &Path {
        self.cluster.member_dir(0)
    }

    pub fn log_tail(&self) -> String {
        self.cluster.log_tail(0)
    }

    pub fn is_running(&mut self) -> bool {
        self.cluster.is_running(0)
    }

    pub fn is_healthy(&self) -> bool {
        self.cluster.is_healthy(0)
    }

    pub fn kill(&mut self) {
        self.cluster.kill(0)
    }

    pub fn freeze(&mut self) {
        self.cluster.freeze(0)
    }

    pub fn thaw(&mut self) {
        self.cluster.thaw(0)
    }

    pub fn restart(&mut self) {
        self.cluster.restart(0)
    }

    pub fn wait_healthy(&mut self, timeout: Duration) {
        self.cluster.wait_healthy(0, timeout)
    }

    pub fn etcdctl(&self, args: &[&str]) -> Output {
        self.cluster.etcdctl(args)
    }

    pub fn etcdctl_ok(&self, args: &[&str]) -> String {
        self.cluster.etcdctl_ok(args)
    }

    pub fn put(&self, key: &str, value: &str) {
        self.cluster.put(key, value)
    }

    pub fn get(&self, key: &str) -> Option<String> {
        self.cluster.get(key)
    }

    pub fn etcdctl_retry(&self, args: &[&str]) -> String {
        self.cluster.etcdctl_retry(args)
    }

    pub fn cluster(&mut self) -> &mut EtcdCluster {
        &mut self.cluster
    }
}
