//! Faults found by a hostile run, each against real etcd: idle and slow connections that must
//! not take the status endpoint down, a refused client certificate recognised at once, etcd's
//! "request is too large" and an http:// endpoint on a TLS port said in words, a chatty health
//! check kept off leaderrun's stdout, and `leaderrun leader --watch` logging an outage once.

mod common;

use common::http::{code_of, http};
use common::*;
use std::ffi::OsString;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// What a slow client sends and never finishes: a request head without its blank line.
const PARTIAL_HEAD: &[u8] = b"GET /leader HTTP/1.1\r\nHost: x\r\n";

/// A loopback address for a status endpoint.
fn status_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A leader with its status endpoint on a fresh address, answering 200 on /leader.
fn leader_with_status(scene: &Scene) -> (Lr, Run, SocketAddr) {
    let addr = status_addr();
    let a = scene
        .leaderrun("A")
        .args(&["--ttl", "3", "--status-addr", &addr.to_string()])
        .fenced(&[])
        .spawn();
    let run = scene.wait_leading("A", 1, 10 * SEC);
    let seen = poll_for(5 * SEC, || code_of(addr, "/leader"), |c| *c == 200);
    assert!(seen.is_ok(), "/leader before the test: {seen:?}");
    (a, run, addr)
}

/// A connection that sent part of a request head and waits.
fn slow_connection(addr: SocketAddr) -> Option<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, SEC).ok()?;
    s.write_all(PARTIAL_HEAD).ok()?;
    Some(s)
}

/// GET /leader answered 200 within `within` (the whole exchange, connect included).
fn answers_fast(addr: SocketAddr, within: Duration) -> Result<Duration, String> {
    let t0 = Instant::now();
    let answer = http(addr, "GET", "/leader", within)?;
    let took = t0.elapsed();
    if answer.code != 200 {
        return Err(format!("{} after {took:?}", answer.code));
    }
    Ok(took)
}

/// Descriptors open in process `pid`.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// 250 connections held open, each with part of a request, fill any fixed cap on connections:
/// /leader must still answer a probe at once, and leaderrun's descriptors stay bounded.
#[test]
fn held_slow_connections_leave_leader_answering() {
    let (_etcd, scene) = etcd_and_scene();
    let (a, run_a, addr) = leader_with_status(&scene);
    let before = open_files(a.pid());

    scene.mark("250 slow connections");
    let t0 = Instant::now();
    let held: Vec<TcpStream> = (0..250).filter_map(|_| slow_connection(addr)).collect();
    assert!(held.len() >= 200, "only {} connections made", held.len());
    // Probes while every one of them is held (the head time-out is 5 s: all within it).
    let mut took = Vec::new();
    while t0.elapsed() < 4 * SEC {
        match answers_fast(addr, 2 * SEC) {
            Ok(t) => took.push(t),
            Err(e) => panic!(
                "/leader with {} slow connections held, {:?} after they opened: {e}",
                held.len(),
                t0.elapsed()
            ),
        }
        thread::sleep(100 * MS);
    }
    let slowest = took.iter().max().copied().unwrap_or_default();
    scene.report(&format!(
        "{} probes with {} slow connections held, slowest {slowest:?}",
        took.len(),
        held.len()
    ));
    assert!(took.len() >= 5, "{took:?}");
    let files = open_files(a.pid());
    assert!(
        files <= before + 140,
        "leaderrun holds {files} descriptors ({before} before the slow clients)"
    );
    drop(held);
    scene.only_child_runs_for(run_a.pid, SEC, "slow connections");
}

/// One client reopening slow connections at 50 a second (the cap filled at 26 a second with a
/// 5 s head time-out): /leader keeps answering every probe.
#[test]
fn a_client_reopening_connections_leaves_leader_answering() {
    let (_etcd, scene) = etcd_and_scene();
    let (a, run_a, addr) = leader_with_status(&scene);
    let before = open_files(a.pid());

    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let opener = thread::spawn(move || {
        // Kept open by this side: only the server closes them.
        let mut open = Vec::new();
        while !flag.load(Ordering::Relaxed) {
            open.extend(slow_connection(addr));
            if open.len() > 600 {
                open.drain(..100);
            }
            thread::sleep(20 * MS);
        }
        open.len()
    });
    scene.mark("a client reopens slow connections, 50 a second");
    let t0 = Instant::now();
    let mut failures = Vec::new();
    let mut probes = 0;
    let mut max_files = 0;
    while t0.elapsed() < 9 * SEC {
        probes += 1;
        if let Err(e) = answers_fast(addr, 2 * SEC) {
            failures.push(format!("{:.1}s: {e}", t0.elapsed().as_secs_f64()));
        }
        max_files = max_files.max(open_files(a.pid()));
        thread::sleep(150 * MS);
    }
    stop.store(true, Ordering::Relaxed);
    let held = opener.join().unwrap();
    scene.report(&format!(
        "{probes} probes, {} failed; the client held {held}; leaderrun's descriptors at most {max_files}",
        failures.len()
    ));
    assert!(failures.is_empty(), "probes that failed: {failures:?}");
    assert!(
        max_files <= before + 140,
        "leaderrun held {max_files} descriptors ({before} before)"
    );
    scene.only_child_runs_for(run_a.pid, SEC, "reopened connections");
}

// ---------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------

fn tls_files(certs: &Certs, pair: Option<&CertPair>) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["--cacert".into(), certs.ca_cert.clone().into()];
    if let Some(pair) = pair {
        args.extend([
            "--cert".into(),
            pair.cert.clone().into(),
            "--key".into(),
            pair.key.clone().into(),
        ]);
    }
    args
}

/// The `leaderrun: ` lines of a log: the final line of a failed run.
fn final_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.starts_with("leaderrun: "))
        .collect()
}

/// `lr` exits 1 within `within` with one final line, no retry before it; returns the line.
fn fatal_within(lr: &mut Lr, within: Duration, what: &str) -> String {
    let (status, took) = lr.expect_exit_timed(30 * SEC);
    let log = lr.log_text();
    assert_eq!(status.code(), Some(1), "{what}: {status}; log:\n{log}");
    assert!(
        took < within,
        "{what}: exited after {took:?}, not within {within:?}; log:\n{log}"
    );
    assert!(
        !log.contains("failing"),
        "{what}: retried what retrying cannot fix; log:\n{log}"
    );
    let finals = final_lines(&log);
    assert_eq!(finals.len(), 1, "{what}: log:\n{log}");
    finals[0].to_string()
}

/// Under TLS 1.3 the client's handshake is done before etcd has checked its certificate:
/// the refusal arrives afterwards. It must still be recognised on the first attempt, every
/// time: one line within a couple of seconds, never a retry.
#[test]
fn an_expired_client_certificate_is_recognised_on_the_first_attempt() {
    let certs = Certs::generate();
    let etcd = Etcd::start_with(EtcdOptions {
        tls: Some(&certs),
        client_cert_auth: true,
        ..Default::default()
    });
    let scene = Scene::new(&etcd.endpoints());
    let expired = certs.expired_client("host-a");
    let files = tls_files(&certs, Some(&expired));
    for attempt in 0..8 {
        let mut a = scene
            .leaderrun(&format!("A{attempt}"))
            .args(&files)
            .args(&["--ttl", "3"])
            .spawn();
        let line = fatal_within(&mut a, 4 * SEC, "an expired client certificate");
        assert!(
            line.contains("TLS") && line.contains("client certificate"),
            "{line}"
        );
        scene.report(&format!("attempt {attempt}: {line}"));
    }
    let mut cmd = leaderrun();
    cmd.args([
        "leader",
        "--endpoints",
        &etcd.endpoints(),
        "--election",
        "svc",
    ])
    .args(&files);
    let t0 = Instant::now();
    let out = run_with_timeout(&mut cmd, 30 * SEC);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "leader: {err}");
    assert!(
        t0.elapsed() < 4 * SEC,
        "leader took {:?}: {err}",
        t0.elapsed()
    );
    assert!(err.contains("client certificate"), "leader: {err}");
    assert!(scene.runs().is_empty());
}

/// `http://` to a port that speaks TLS: said so, at once, not retried as a broken pipe.
#[test]
fn an_http_endpoint_on_a_tls_port_is_said_to_speak_tls() {
    let certs = Certs::generate();
    let etcd = Etcd::start_with(EtcdOptions {
        tls: Some(&certs),
        ..Default::default()
    });
    let plain = format!("http://{}", etcd.client_addr(0));
    let scene = Scene::new(&plain);
    let mut a = scene.leaderrun("A").args(&["--ttl", "3"]).spawn();
    let line = fatal_within(&mut a, 8 * SEC, "http:// on a TLS port");
    scene.report(&line);
    assert!(
        line.contains("speaks TLS") && line.contains("https://"),
        "{line}"
    );
    assert!(line.contains(&etcd.client_addr(0).to_string()), "{line}");

    let mut cmd = leaderrun();
    cmd.args(["leader", "--endpoints", &plain, "--election", "svc"]);
    let out = run_with_timeout(&mut cmd, 30 * SEC);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "leader: {err}");
    assert!(err.contains("speaks TLS"), "leader: {err}");
    assert!(scene.runs().is_empty());
}

// ---------------------------------------------------------------------------
// A request larger than etcd takes
// ---------------------------------------------------------------------------

/// A single etcd member started here with `--max-request-bytes` (the shared fixture has no
/// such option); SIGKILLed on drop.
struct SmallEtcd {
    _guard: ChildGuard,
    _dir: TempDir,
    endpoint: String,
}

impl SmallEtcd {
    fn start(max_request_bytes: u32) -> SmallEtcd {
        let bin = std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".into());
        for _ in 0..4 {
            let dir = TempDir::new("leaderrun-small-etcd");
            let ports = free_ports(2);
            let client = format!("http://127.0.0.1:{}", ports[0]);
            let peer = format!("http://127.0.0.1:{}", ports[1]);
            let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
            let mut cmd = Command::new(&bin);
            cmd.args(["--name", "small", "--data-dir"])
                .arg(dir.join("data"))
                .args(["--listen-client-urls", &client])
                .args(["--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer])
                .args(["--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &format!("small={peer}")])
                .args(["--max-request-bytes", &max_request_bytes.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log);
            let mut guard = ChildGuard::spawn(&mut cmd);
            let healthy = wait_until(20 * SEC, 100 * MS, || {
                guard.try_wait().is_none()
                    && etcdctl_at(&client, &["endpoint", "health"])
                        .status
                        .success()
            });
            if healthy {
                return SmallEtcd {
                    _guard: guard,
                    _dir: dir,
                    endpoint: client,
                };
            }
            eprintln!(
                "etcd did not start, retrying:\n{}",
                file_tail(&dir.join("etcd.log"), 20)
            );
        }
        panic!("etcd with --max-request-bytes did not start");
    }
}

/// An --id longer than a cluster's `--max-request-bytes` allows: one line naming --id and
/// etcd's limit, not a gRPC status dump, and no retry.
#[test]
fn a_request_too_large_names_the_value_and_etcds_limit() {
    let etcd = SmallEtcd::start(1024);
    let scene = Scene::new(&etcd.endpoint);
    let id = "i".repeat(2000);
    let mut cmd = leaderrun();
    cmd.args([
        "--endpoints",
        &etcd.endpoint,
        "--election",
        "svc",
        "--ttl",
        "3",
    ])
    .args(["--id", &id, "--"])
    .args(scene.fenced(&[]));
    let mut a = scene.command("A", cmd).spawn();
    let line = fatal_within(&mut a, 10 * SEC, "an --id too large for etcd");
    scene.report(&line);
    assert!(line.contains("--id"), "{line}");
    assert!(line.contains("--max-request-bytes"), "{line}");
    assert!(line.contains("1.5 MiB"), "{line}");
    for raw in ["MetadataMap", "metadata", "details: []", "status: "] {
        assert!(!line.contains(raw), "a gRPC dump: {line}");
    }
    assert!(line.len() < 400, "{line}");
    assert!(scene.runs().is_empty());
}

// ---------------------------------------------------------------------------
// A chatty health check
// ---------------------------------------------------------------------------

/// A check that writes megabytes to stdout and fails with a reason on stderr: leaderrun's
/// stdout stays clean, its log stays small, and the failure line carries the check's last words.
#[test]
fn a_chatty_health_check_stays_off_stdout_and_its_tail_is_logged() {
    let (_etcd, scene) = etcd_and_scene();
    let check = "yes flooding-the-output | head -n 400000; echo the-reason-it-failed >&2; exit 1";
    let a = scene
        .leaderrun("A")
        .args(&[
            "--ttl",
            "5",
            "--health-cmd",
            check,
            "--health-interval",
            "300ms",
            "--health-timeout",
            "3s",
            "--health-retries",
            "1000",
        ])
        .fenced(&[])
        .spawn();
    let run_a = scene.wait_leading("A", 1, 10 * SEC);
    let failed = poll_for(
        15 * SEC,
        || {
            a.log_text()
                .lines()
                .filter(|l| l.contains("health check failed"))
                .count()
        },
        |n| *n >= 4,
    );
    assert!(failed.is_ok(), "health check failures: {failed:?}");
    let out = std::fs::metadata(&a.out).map_or(0, |m| m.len());
    let log = a.log_text();
    assert!(
        out < 4096,
        "leaderrun's stdout got {out} bytes of the check's output"
    );
    assert!(log.len() < 64 * 1024, "the log grew to {} bytes", log.len());
    let line = log
        .lines()
        .find(|l| l.contains("health check failed"))
        .unwrap()
        .to_string();
    assert!(line.contains("the-reason-it-failed"), "{line}");
    assert!(line.contains("WARN"), "{line}");
    scene.report(&format!("stdout {out} bytes; {line}"));
    scene.only_child_runs_for(run_a.pid, 500 * MS, "a chatty check");
}

// ---------------------------------------------------------------------------
// leaderrun leader --watch while etcd is down
// ---------------------------------------------------------------------------

/// etcd down for 10 s under `leaderrun leader --watch`: the outage is logged when it starts,
/// not twice a second, and the watch goes on after it.
#[test]
fn leader_watch_logs_an_outage_once_then_every_30_seconds() {
    let (mut etcd, scene) = etcd_and_scene();
    let (_a, _run) = scene.leader("A", &["--ttl", "3"], &[]);
    let mut cmd = leaderrun();
    cmd.args([
        "leader",
        "--endpoints",
        &scene.etcd,
        "--election",
        "svc",
        "--watch",
    ]);
    let mut watch = scene.start("watch", &mut cmd);
    watch.wait_out_lines(1, 10 * SEC);
    scene.mark("etcd killed");
    etcd.kill(0);
    thread::sleep(10 * SEC);
    let warnings: Vec<String> = watch
        .log_text()
        .lines()
        .filter(|l| l.contains("WARN"))
        .map(str::to_string)
        .collect();
    scene.report(&format!("{} WARN lines in 10 s", warnings.len()));
    assert!(!warnings.is_empty(), "the outage was not logged");
    assert!(warnings.len() <= 2, "{warnings:#?}");
    // The watch goes on: A's next term is printed (after a `no leader` if A's old lease, given
    // up in the outage, is revoked before its new key is in).
    scene.mark("etcd restarted");
    etcd.restart(0);
    let next = poll_for(
        30 * SEC,
        || lines(&watch.out),
        |shown| shown.iter().skip(1).any(|l| l.starts_with("id=A ")),
    );
    let shown = next.unwrap_or_else(|shown| panic!("A's next term not shown: {shown:?}"));
    assert!(
        shown[1..]
            .iter()
            .all(|l| l.starts_with("id=A ") || l == "no leader"),
        "{shown:?}"
    );
    assert!(watch.is_running(), "--watch ended");
}
