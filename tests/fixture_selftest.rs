//! Proves the integration-test fixtures in tests/common work: etcd single
//! and cluster control, every fault-proxy mode, and the fenced-child records
//! with the overlap checker.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    assert_no_overlap, etcdctl_at, fenced_child_path, mono_now_ns, pid_exists, wait_until,
    ChildGuard, Ending, Etcd, EtcdCluster, FaultProxy, Mode, Records, TempDir,
};
use nix::sys::signal::Signal;

const SEC: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(20);

#[test]
fn single_etcd_put_get_and_cleanup() {
    let mut etcd = Etcd::single();
    etcd.put("/selftest/k", "v1");
    assert_eq!(etcd.get("/selftest/k").as_deref(), Some("v1"));
    assert_eq!(etcd.get("/selftest/missing"), None);
    assert!(etcd.is_running(0));

    let pid = etcd.pid(0).expect("running");
    let dir = etcd.member_dir(0).to_path_buf();
    assert!(etcd.data_dir(0).join("member").exists());
    drop(etcd);
    assert!(!dir.exists(), "temp dir {} not removed", dir.display());
    // Drop reaps the child, so the pid is gone (not even a zombie).
    assert!(!pid_exists(pid), "etcd pid {pid} still exists");
}

#[test]
fn cluster_kill_restart_freeze_thaw() {
    let mut c = EtcdCluster::start(3);
    assert_eq!(c.endpoints().split(',').count(), 3);
    c.put("/selftest/a", "1");

    // Killing the leader is the hard case: writes stall until re-election.
    let dead = c.wait_leader(10 * SEC);
    c.kill(dead);
    assert!(!c.is_running(dead));
    assert!(!c.is_healthy(dead));
    // Two of three members still form a quorum (put retries meanwhile).
    c.put("/selftest/b", "2");
    assert_eq!(c.get("/selftest/b").as_deref(), Some("2"));
    assert_ne!(c.wait_leader(10 * SEC), dead);

    c.restart(dead);
    assert!(c.is_healthy(dead));
    let out = etcdctl_at(
        &c.endpoint(dead),
        &["get", "/selftest/b", "--print-value-only"],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");

    let frozen = c.wait_leader(10 * SEC);
    c.freeze(frozen);
    assert!(c.is_running(frozen) && c.is_frozen(frozen));
    let out = etcdctl_at(
        &c.endpoint(frozen),
        &[
            "--dial-timeout",
            "1s",
            "--command-timeout",
            "1s",
            "get",
            "/selftest/a",
        ],
    );
    assert!(!out.status.success(), "a frozen member answered");
    c.put("/selftest/c", "3");
    c.thaw(frozen);
    c.wait_healthy(frozen, 20 * SEC);
    assert_eq!(c.get("/selftest/c").as_deref(), Some("3"));
}

#[test]
fn proxy_modes_with_etcdctl() {
    let etcd = Etcd::single();
    etcd.put("/selftest/p", "x");
    let proxy = FaultProxy::start(etcd.client_addr(0));
    let get = |timeout: &str| {
        let args = [
            "--dial-timeout",
            timeout,
            "--command-timeout",
            timeout,
            "get",
            "/selftest/p",
        ];
        let t0 = Instant::now();
        let out = etcdctl_at(&proxy.endpoint(), &args);
        (out, t0.elapsed())
    };

    let (out, _) = get("5s");
    assert!(
        out.status.success(),
        "pass: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("x"));

    proxy.set_mode(Mode::Blackhole);
    let (out, took) = get("1s");
    assert!(!out.status.success(), "blackhole let a get through");
    assert!(took >= SEC, "blackhole failed too fast: {took:?}");

    proxy.set_mode(Mode::Pass);
    let before = proxy.accepted();
    let (out, _) = get("5s");
    assert!(
        out.status.success(),
        "pass again: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(proxy.accepted() > before);

    // Each connection is reset at once, but gRPC hides that: it redials with
    // backoff until its dial timeout, so etcdctl fails at ~1 s either way.
    proxy.set_mode(Mode::Reset);
    let before = proxy.accepted();
    let (out, took) = get("1s");
    assert!(!out.status.success(), "reset let a get through");
    assert!(took < 5 * SEC, "reset did not fail fast: {took:?}");
    assert!(proxy.accepted() > before, "etcdctl never reached the proxy");
    assert!(wait_until(3 * SEC, POLL, || proxy.active() == 0));

    proxy.set_mode(Mode::Latency(Duration::from_millis(200)));
    let (out, took) = get("5s");
    assert!(
        out.status.success(),
        "latency: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        took >= Duration::from_millis(200),
        "latency not applied: {took:?}"
    );
}

/// A loopback echo server on its own thread, for byte-exact proxy checks.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn connect(proxy: &FaultProxy) -> TcpStream {
    let s = TcpStream::connect(proxy.addr()).unwrap();
    s.set_read_timeout(Some(3 * SEC)).unwrap();
    s
}

/// Sends `msg` and reads the echo; Err on timeout, reset or EOF.
fn echo(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Duration> {
    let t0 = Instant::now();
    s.write_all(msg)?;
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got)?;
    assert_eq!(got, msg);
    Ok(t0.elapsed())
}

#[test]
fn proxy_modes_byte_level() {
    let proxy = FaultProxy::start(echo_server());
    let mut a = connect(&proxy);
    echo(&mut a, b"hello").unwrap();

    // Latency applies per direction: one round trip costs >= 2x.
    proxy.set_mode(Mode::Latency(Duration::from_millis(100)));
    let rtt = echo(&mut a, b"slow").unwrap();
    assert!(rtt >= Duration::from_millis(200), "rtt {rtt:?}");

    // Blackhole: nothing comes back, the connection stays open.
    proxy.set_mode(Mode::Blackhole);
    a.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let err = echo(&mut a, b"lost").unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err}"
    );
    let mut idle = connect(&proxy);

    // Leaving Blackhole resets the connection that lost bytes; a new one works.
    proxy.set_mode(Mode::Pass);
    assert!(wait_until(3 * SEC, POLL, || proxy.active() <= 1));
    a.set_read_timeout(Some(3 * SEC)).unwrap();
    assert!(echo(&mut a, b"after").is_err());
    // The idle connection accepted during Blackhole gets forwarded now.
    echo(&mut idle, b"idle").unwrap();

    // Reset: existing connections get RST, new ones too.
    proxy.set_mode(Mode::Reset);
    let err = read_err(&mut idle);
    assert_eq!(err, ErrorKind::ConnectionReset);
    let mut fresh = connect(&proxy);
    let err = read_err(&mut fresh);
    assert_eq!(err, ErrorKind::ConnectionReset);

    proxy.set_mode(Mode::Pass);
    echo(&mut connect(&proxy), b"back").unwrap();
    // Closing the client closes the upstream side too.
    assert!(wait_until(3 * SEC, POLL, || proxy.active() == 0));
}

/// Reads until an error (bounded by the socket's read timeout).
fn read_err(s: &mut TcpStream) -> ErrorKind {
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Ok(0) => ErrorKind::UnexpectedEof,
        Ok(_) => panic!("unexpected data"),
        Err(e) => e.kind(),
    }
}

fn spawn_child(records: &Path, extra: &[&str], revision: &str) -> ChildGuard {
    let mut cmd = Command::new(fenced_child_path());
    cmd.arg(records)
        .args(extra)
        .env("LEADERRUN_REVISION", revision)
        .env_remove("LEADERRUN_ID");
    ChildGuard::spawn(&mut cmd)
}

/// Waits until child `pid` wrote an alive line after its start line.
fn wait_running(records: &Path, pid: u32) {
    let ok = Records::wait_for(records, 5 * SEC, |runs| {
        runs.iter()
            .any(|r| r.pid == pid && r.last_seen_ns > r.start_ns)
    });
    assert!(ok.is_some(), "child {pid} never reported alive");
}

#[test]
fn fenced_children_sequential_do_not_overlap() {
    let dir = TempDir::new("leaderrun-selftest");
    let rec = dir.join("records");
    let t0 = mono_now_ns();

    let mut first = spawn_child(&rec, &[], "7");
    wait_running(&rec, first.pid());
    first.signal(Signal::SIGTERM);
    let status = first.wait_timeout(5 * SEC).expect("first exits on SIGTERM");
    assert!(status.success());

    let mut second = spawn_child(&rec, &["--exit-after", "50", "--exit-code", "3"], "8");
    let status = second
        .wait_timeout(5 * SEC)
        .expect("second exits by itself");
    assert_eq!(status.code(), Some(3));

    let runs = Records::read(&rec);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0].ending, Ending::Term);
    assert_eq!(runs[0].revision.as_deref(), Some("7"));
    assert_eq!(runs[0].id, None);
    assert_eq!(runs[1].ending, Ending::Exit);
    assert_eq!(runs[1].revision.as_deref(), Some("8"));
    assert!(runs[1].duration() >= Duration::from_millis(50));
    assert!(runs[0].start_ns >= t0 && runs[1].last_seen_ns <= mono_now_ns());
    assert_no_overlap(&runs);
}

#[test]
fn fenced_children_concurrent_overlap_is_detected() {
    let dir = TempDir::new("leaderrun-selftest");
    let rec = dir.join("records");
    let a = spawn_child(&rec, &["--ignore-term"], "1");
    let mut b = spawn_child(&rec, &[], "2");
    wait_running(&rec, a.pid());
    wait_running(&rec, b.pid());
    a.signal(Signal::SIGTERM);
    assert!(Records::wait_for(&rec, 5 * SEC, |r| r.iter().any(|r| r.terms_ignored > 0)).is_some());
    drop(a); // SIGKILL: no end line.
    b.signal(Signal::SIGTERM);
    b.wait_timeout(5 * SEC).expect("b exits on SIGTERM");

    let runs = Records::read(&rec);
    assert_eq!(runs.len(), 2, "{runs:?}");
    let killed = runs
        .iter()
        .find(|r| r.revision.as_deref() == Some("1"))
        .unwrap();
    assert_eq!(killed.ending, Ending::Killed);
    assert_eq!(killed.terms_ignored, 1);
    let caught = std::panic::catch_unwind(|| assert_no_overlap(&runs));
    assert!(caught.is_err(), "overlap not detected: {runs:?}");
}

#[test]
fn orphaned_child_stops_when_records_vanish() {
    let dir = TempDir::new("leaderrun-selftest");
    let rec = dir.join("records");
    let mut child = spawn_child(&rec, &[], "-");
    wait_running(&rec, child.pid());
    drop(dir);
    let status = child
        .wait_timeout(5 * SEC)
        .expect("child exits once its file is gone");
    assert_eq!(status.code(), Some(4));
}

#[test]
fn overlap_checker_on_synthetic_records() {
    let text = "start 10 100 5 host-a\nalive 10 150\nend 10 200 term\n\
                start 11 300 6 -\nalive 11 350\n\
                start 12 351 7 -\n";
    let runs = common::records::parse(text).unwrap();
    assert_eq!(runs[0].id.as_deref(), Some("host-a"));
    assert_eq!(runs[1].ending, Ending::Killed);
    assert_no_overlap(&runs[..2]);
    // Run 12 starts 1 ns after run 11 was last seen: fine. Shift it into 11.
    let mut bad = runs.clone();
    bad[2].start_ns = 340;
    assert!(std::panic::catch_unwind(|| assert_no_overlap(&bad)).is_err());
    // A long run spanning several later ones is caught too.
    let mut long = runs.clone();
    long[0].last_seen_ns = 360;
    assert!(std::panic::catch_unwind(|| assert_no_overlap(&long)).is_err());
    assert!(common::records::parse("alive 1 2\n").is_err());
}

/// `fenced_child --hot` records its leader intervals only: from reading ROLE=leader (with the
/// file's REVISION) to reading ROLE=standby, which it then confirms on the notify socket.
#[test]
fn a_hot_fenced_child_records_its_leader_intervals_and_confirms() {
    let dir = TempDir::new("leaderrun-selftest");
    let rec = dir.join("records");
    let role = dir.join("role");
    let socket_path = dir.join("notify");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(5 * SEC)).unwrap();
    std::fs::write(&role, "ROLE=standby\n").unwrap();
    let mut cmd = Command::new(fenced_child_path());
    cmd.arg(&rec)
        .arg("--hot")
        .env("LEADERRUN_ID", "h1")
        .env("LEADERRUN_ROLE_FILE", &role)
        .env("LEADERRUN_NOTIFY_SOCKET", &socket_path);
    let mut child = ChildGuard::spawn(&mut cmd);
    let mut buf = [0u8; 64];
    // Its first read of the file (standby) is confirmed too.
    let n = socket.recv(&mut buf).expect("first confirmation");
    assert_eq!(&buf[..n], b"ROLE=standby\n");
    std::thread::sleep(Duration::from_millis(50));
    assert!(Records::read(&rec).is_empty(), "recorded while standing by");
    let tell = |text: &str| {
        std::fs::write(dir.join("role.new"), text).unwrap();
        std::fs::rename(dir.join("role.new"), &role).unwrap();
        child.signal(Signal::SIGURG);
    };
    for revision in ["41", "57"] {
        tell(&format!(
            "ROLE=leader\nREVISION={revision}\nKEY='soak/1'\nLEASE=1\n"
        ));
        wait_running(&rec, child.pid());
        let ok = Records::wait_for(&rec, 5 * SEC, |runs| {
            runs.last().is_some_and(|r| {
                r.revision.as_deref() == Some(revision) && r.last_seen_ns > r.start_ns
            })
        });
        assert!(ok.is_some(), "no leader interval for {revision}");
        tell("ROLE=standby\n");
        let n = socket.recv(&mut buf).expect("confirmation");
        assert_eq!(&buf[..n], b"ROLE=standby\n");
        let runs = Records::read(&rec);
        assert_eq!(runs.last().unwrap().ending, Ending::Demoted, "{runs:?}");
    }
    tell("ROLE=leader\nREVISION=60\n");
    assert!(Records::wait_for(&rec, 5 * SEC, |runs| runs.len() == 3).is_some());
    child.signal(Signal::SIGTERM);
    assert!(child
        .wait_timeout(5 * SEC)
        .expect("exits on SIGTERM")
        .success());
    let runs = Records::read(&rec);
    assert_eq!(runs.len(), 3, "{runs:?}");
    assert_eq!(runs[2].ending, Ending::Term);
    assert!(runs.iter().all(|r| r.id.as_deref() == Some("h1")));
    assert_no_overlap(&runs);
}

/// The hooks' stamps read as holds: a demote ends its host's hold, a crash line too, an open
/// hold reaches the time asked; a second host's promote inside a hold is an overlap.
#[test]
fn hold_stamps_read_as_intervals() {
    let dir = TempDir::new("leaderrun-selftest");
    let holds = dir.join("holds");
    for (id, word) in [("a", "promote"), ("a", "demote")] {
        let out = Command::new(fenced_child_path())
            .arg(&holds)
            .args(["--stamp", word])
            .env("LEADERRUN_ID", id)
            .env("LEADERRUN_REVISION", "9")
            .env("LEADERRUN_REASON", "shutdown")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let parser = common::HoldParser::read(&holds).unwrap();
    let held = parser.holds(mono_now_ns());
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].ending, Ending::Demoted);
    assert_eq!(held[0].revision.as_deref(), Some("9"));
    assert!(held[0].last_seen_ns > held[0].start_ns);

    let mut p = common::HoldParser::default();
    for line in [
        "promote 1 100 5 a",
        "demote 2 200 shutdown a",
        "promote 3 300 6 b",
        "crash 4 400 - b",
        "demote 5 410 lost b",
        "promote 6 500 7 c",
        "promote 7 550 8 c",
    ] {
        p.line(line).unwrap();
    }
    assert_eq!((p.released_nothing, p.promoted_while_held), (1, 1));
    assert_eq!(p.holders(), ["c"]);
    let held = p.holds(1000);
    let endings: Vec<_> = held.iter().map(|h| (h.last_seen_ns, h.ending)).collect();
    assert_eq!(
        endings,
        [
            (200, Ending::Demoted),
            (400, Ending::Crashed),
            (1000, Ending::Killed)
        ]
    );
    assert_no_overlap(&held);
    p.line("promote 8 900 9 a").unwrap();
    let held = p.holds(1000);
    assert!(std::panic::catch_unwind(|| assert_no_overlap(&held)).is_err());
    assert!(p.line("hold 1 2 - a").is_err());
}

#[tokio::test]
async fn proxy_works_from_async_tests() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let proxy = FaultProxy::start(echo_server());
    let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    tokio::time::timeout(3 * SEC, s.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"ping");
    drop(s);
    drop(proxy); // Joins the proxy thread; must not deadlock inside a runtime.
}

#[test]
fn scene_launch_options_reach_the_process() {
    let scene = common::Scene::new("127.0.0.1:9");
    // Arguments, environment, stdout to <id>.out, stderr through a pipe.
    let mut sh = scene
        .command("sh", Command::new("/bin/sh"))
        .args(&["-c", "echo \"$X\"; echo to-stderr >&2; exit 3"])
        .env("X", "from-env")
        .stderr(common::Stderr::Piped)
        .spawn();
    let mut err = String::new();
    sh.take_stderr()
        .expect("piped stderr")
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(err, "to-stderr\n");
    sh.expect_exit_code(5 * SEC, 3, "the script's status");
    assert_eq!(sh.out_text(), "from-env\n");

    // stderr closed and SIGHUP ignored from the start (as under nohup).
    let mut sleeper = scene
        .command("sleep", Command::new("sleep"))
        .args(&["60"])
        .stderr(common::Stderr::Closed)
        .ignore_signals(&[Signal::SIGHUP])
        .spawn();
    let pid = sleeper.pid();
    // With fd 2 closed, the program's own start-up (sleep reads its locale) may briefly open a
    // file as fd 2: closed means closed once that is over.
    let fd2 = || std::fs::read_link(format!("/proc/{pid}/fd/2"));
    let closed = common::wait_until(5 * SEC, Duration::from_millis(10), || fd2().is_err());
    assert!(closed, "fd 2 is open: {:?}", fd2());
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let ignored = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .expect("SigIgn in /proc/<pid>/status");
    assert_ne!(ignored & (1 << (Signal::SIGHUP as i32 - 1)), 0, "{status}");
    sleeper.signal(Signal::SIGHUP);
    assert!(common::holds_for(300 * Duration::from_millis(1), || {
        sleeper.is_running()
    }));
    assert_eq!(common::process_state(pid), Some('S'));
    sleeper.kill();
}
