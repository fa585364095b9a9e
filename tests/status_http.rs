//! The HTTP status endpoint (`--status-addr`), asked with real HTTP requests: each endpoint's
//! codes on a leader and a standby, HEAD, the /status JSON, the /metrics page; the old leader's
//! /leader turning 503 before the new leader's child starts (graceful handover, and a leader
//! cut off from etcd); bad addresses refused at start-up; hostile clients that must not stall
//! the supervisor.

mod common;

use common::http::{code_of, get, http, Answer};
use common::*;
use nix::sys::signal::Signal;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// A loopback address for a status endpoint.
fn status_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A candidate with its status endpoint on `addr` (and `opts`), fenced child `child`.
fn candidate(scene: &Scene, id: &str, addr: SocketAddr, opts: &[&str], child: &[&str]) -> Lr {
    let addr = addr.to_string();
    let mut args = vec!["--status-addr", &addr];
    args.extend_from_slice(opts);
    scene.leaderrun(id).args(&args).fenced(child).spawn()
}

/// Waits until `addr/path` answers `code`; panics with the last answer otherwise.
fn wait_code(addr: SocketAddr, path: &str, code: u16, timeout: Duration) {
    let seen = poll_for(timeout, || code_of(addr, path), |c| *c == code);
    assert!(seen.is_ok(), "{addr}{path}: want {code}, last {seen:?}");
}

fn json(a: &Answer) -> serde_json::Value {
    serde_json::from_str(&a.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", a.body))
}

#[test]
fn each_endpoint_answers_for_a_leader_and_a_standby() {
    let (_etcd, scene) = etcd_and_scene();
    let (a_addr, b_addr) = (status_addr(), status_addr());
    let _a = candidate(&scene, "A", a_addr, &["--ttl", "3"], &[]);
    let run_a = scene.wait_leading("A", 1, 10 * SEC);
    let _b = candidate(&scene, "B", b_addr, &["--ttl", "3"], &[]);
    scene.wait_candidates(&["A", "B"], 10 * SEC);
    wait_code(b_addr, "/standby", 200, 10 * SEC);

    for (addr, path, code) in [
        (a_addr, "/leader", 200),
        (a_addr, "/standby", 503),
        (a_addr, "/health", 200),
        (a_addr, "/status", 200),
        (a_addr, "/metrics", 200),
        (b_addr, "/leader", 503),
        (b_addr, "/standby", 200),
        (b_addr, "/health", 200),
        (a_addr, "/nope", 404),
    ] {
        let got = get(addr, path).unwrap_or_else(|e| panic!("{addr}{path}: {e}"));
        assert_eq!(got.code, code, "{addr}{path}: {got:?}");
    }
    // HEAD: the same code and headers, no body.
    let head = http(a_addr, "HEAD", "/leader", 5 * SEC).unwrap();
    assert_eq!(head.code, 200, "{head:?}");
    assert!(head.body.is_empty(), "{head:?}");
    assert_eq!(http(b_addr, "HEAD", "/leader", 5 * SEC).unwrap().code, 503);
    let post = http(a_addr, "POST", "/leader", 5 * SEC).unwrap();
    assert_eq!(post.code, 405, "{post:?}");
    assert_eq!(post.header("allow"), Some("GET, HEAD"));

    // /status: the facts.
    let a = json(&get(a_addr, "/status").unwrap());
    assert_eq!(a["role"], "leading", "{a}");
    assert_eq!(a["leader"], true, "{a}");
    assert_eq!(a["election"], "svc", "{a}");
    assert_eq!(a["id"], "A", "{a}");
    assert_eq!(a["leader_id"], "A", "{a}");
    assert_eq!(a["pid"], run_a.pid, "{a}");
    assert_eq!(
        a["revision"].as_i64().map(|r| r.to_string()),
        run_a.revision,
        "{a}"
    );
    let lease = a["lease"].as_str().unwrap_or_default().to_string();
    assert_eq!(a["key"], format!("svc/{lease}"), "{a}");
    let since = a["since_keepalive_seconds"].as_f64().unwrap();
    let left = a["deadline_in_seconds"].as_f64().unwrap();
    assert!((0.0..3.0).contains(&since), "{a}");
    assert!(left > 0.0 && left <= 3.0, "{a}");
    let b = json(&get(b_addr, "/status").unwrap());
    assert_eq!(b["role"], "standby", "{b}");
    assert_eq!(b["leader"], false, "{b}");
    assert_eq!(b["leader_id"], "A", "{b}");
    assert!(b["pid"].is_null() && b["key"].is_null(), "{b}");
    assert!(b["lease"].is_string(), "{b}");

    // /metrics: a Prometheus page with the named series.
    let page = get(a_addr, "/metrics").unwrap();
    assert!(
        page.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{page:?}"
    );
    let samples = parse_metrics(&page.body);
    let value = |name: &str| {
        samples
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("{name} missing from:\n{}", page.body))
    };
    assert_eq!(value("leaderrun_leader"), 1.0);
    assert_eq!(value("leaderrun_leadership_terms_total"), 1.0);
    assert_eq!(value("leaderrun_child_starts_total"), 1.0);
    assert_eq!(
        value("leaderrun_leadership_losses_total{reason=\"deadline\"}"),
        0.0
    );
    for name in [
        "leaderrun_leadership_losses_total{reason=\"lease_expired\"}",
        "leaderrun_leadership_losses_total{reason=\"key_deleted\"}",
        "leaderrun_leadership_losses_total{reason=\"graceful\"}",
        "leaderrun_child_exits_total{how=\"on_its_own\"}",
        "leaderrun_child_exits_total{how=\"stopped\"}",
        "leaderrun_etcd_errors_total{kind=\"timed_out\"}",
        "leaderrun_keepalive_rtt_seconds_count",
        "leaderrun_keepalive_rtt_seconds_sum",
    ] {
        value(name);
    }
    assert!(value("leaderrun_keepalive_rtt_seconds_count") >= 1.0);
    let left = value("leaderrun_deadline_remaining_seconds");
    assert!(left > 0.0 && left <= 3.0, "{left}");
    assert!(
        samples
            .iter()
            .any(|(n, v)| n.starts_with("leaderrun_build_info{version=") && *v == 1.0),
        "{}",
        page.body
    );
    let b_page = parse_metrics(&get(b_addr, "/metrics").unwrap().body);
    assert!(b_page.contains(&("leaderrun_leader".to_string(), 0.0)));
}

/// The samples of a Prometheus text page, `name{labels}` and value; panics on a line that is
/// neither a sample nor a `# HELP` or `# TYPE` line, or a sample without its `# TYPE`.
fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    let mut typed = Vec::new();
    for l in text.lines().filter(|l| l.starts_with('#')) {
        let words: Vec<&str> = l.split(' ').collect();
        assert!(
            words.len() >= 4 && matches!(words[1], "HELP" | "TYPE"),
            "{l:?}"
        );
        if words[1] == "TYPE" {
            assert!(
                matches!(words[3], "counter" | "gauge" | "histogram"),
                "{l:?}"
            );
            typed.push(words[2].to_string());
        }
    }
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let name = l.split(['{', ' ']).next().unwrap_or_default();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| typed.iter().any(|t| t == f))
            })
            .unwrap_or(name);
        assert!(typed.iter().any(|t| t == family), "{l:?} has no # TYPE");
    }
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad sample line {l:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {l:?}"));
            assert!(name.starts_with("leaderrun_"), "{l:?}");
            (name.to_string(), value)
        })
        .collect()
}

/// Answers of /leader, polled every few ms until stopped: (sent, received, code) in mono ns,
/// code 0 for no answer.
struct Poller {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<Vec<(u64, u64, u16)>>>,
}

impl Poller {
    fn start(addr: SocketAddr) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let mut seen = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let sent = mono_now_ns();
                let code = http(addr, "GET", "/leader", SEC).map_or(0, |a| a.code);
                seen.push((sent, mono_now_ns(), code));
                thread::sleep(5 * MS);
            }
            seen
        });
        Poller {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<(u64, u64, u16)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// The old leader's /leader said 200 for the last time before `new_start` (mono ns), and said
/// 503 at least once before it: a load balancer had moved away before the new child started.
fn assert_leader_503_before(scene: &Scene, seen: &[(u64, u64, u16)], new_start: u64) {
    let last_200 = seen.iter().filter(|s| s.2 == 200).map(|s| s.1).max();
    let first_503 = seen.iter().filter(|s| s.2 == 503).map(|s| s.1).min();
    let last_200 = last_200.expect("the old leader never answered 200");
    let first_503 = first_503.expect("the old leader never answered 503");
    scene.report(&format!(
        "old leader's last 200 received {:.1} ms, first 503 {:.1} ms before the new child started",
        ms_of(new_start.saturating_sub(last_200)),
        ms_of(new_start.saturating_sub(first_503))
    ));
    assert!(
        last_200 < new_start,
        "/leader answered 200 {:.1} ms after the new child started",
        ms_of(last_200 - new_start)
    );
    assert!(first_503 < new_start, "no 503 before the new child started");
    assert!(
        seen.iter().filter(|s| s.1 > first_503).all(|s| s.2 != 200),
        "/leader said 200 again after 503: {seen:?}"
    );
}

/// SIGTERM to the leader: its child ignores SIGTERM, so stopping it takes the stop timeout
/// (1 s), during which /leader must already say 503; the standby's child starts after that.
#[test]
fn graceful_handover_turns_leader_503_before_the_new_child_starts() {
    let (_etcd, scene) = etcd_and_scene();
    let (a_addr, b_addr) = (status_addr(), status_addr());
    let mut a = candidate(
        &scene,
        "A",
        a_addr,
        &["--ttl", "5", "--stop-timeout", "1s"],
        &["--ignore-term"],
    );
    scene.wait_leading("A", 1, 10 * SEC);
    let _b = candidate(&scene, "B", b_addr, &["--ttl", "5"], &[]);
    scene.wait_candidates(&["A", "B"], 10 * SEC);
    wait_code(a_addr, "/leader", 200, 5 * SEC);
    wait_code(b_addr, "/standby", 200, 5 * SEC);

    let poller = Poller::start(a_addr);
    thread::sleep(200 * MS);
    scene.mark("SIGTERM to A");
    let (run_b, _) = scene.handover(&a, Signal::SIGTERM, "B", 10 * SEC);
    wait_code(b_addr, "/leader", 200, 5 * SEC);
    a.expect_exit(10 * SEC);
    let seen = poller.finish();
    assert_leader_503_before(&scene, &seen, run_b.start_ns);
    assert_no_overlap(&scene.runs());
}

/// The leader's link to etcd blackholed: its child is stopped by the deadline and /leader says
/// 503 from the stop time on, before the lease can expire and the standby's child start.
#[test]
fn cut_off_leader_turns_leader_503_before_the_new_child_starts() {
    let (etcd, scene) = etcd_and_scene();
    let proxy = FaultProxy::start(etcd.client_addr(0));
    let a_addr = status_addr();
    let addr = a_addr.to_string();
    let _a = scene
        .leaderrun("A")
        .endpoints(&proxy.endpoint())
        .args(&["--ttl", "3", "--status-addr", &addr])
        .spawn();
    scene.wait_leading("A", 1, 10 * SEC);
    let _b = scene.standby("B", &["--ttl", "3"], &[], &["A", "B"]);
    wait_code(a_addr, "/leader", 200, 5 * SEC);

    let poller = Poller::start(a_addr);
    thread::sleep(200 * MS);
    scene.mark("blackhole A's link");
    proxy.set_mode(Mode::Blackhole);
    let run_b = scene.wait_leading("B", 1, 15 * SEC);
    thread::sleep(300 * MS);
    let seen = poller.finish();
    assert_leader_503_before(&scene, &seen, run_b.start_ns);
    assert_no_overlap(&scene.runs());
    // The cut-off leader says why in its metrics: a deadline loss.
    let page = get(a_addr, "/metrics").unwrap().body;
    assert!(
        page.contains("leaderrun_leadership_losses_total{reason=\"deadline\"} 1"),
        "{page}"
    );
}

/// Clients that never send, send garbage, a huge request line or trickle bytes: each is
/// answered 400/431 or closed within bounds, /leader keeps answering, and the supervisor on
/// the same thread keeps its lease (the child runs on, the standby stays standby).
#[test]
fn hostile_clients_do_not_stall_the_supervisor() {
    let (_etcd, scene) = etcd_and_scene();
    let a_addr = status_addr();
    let _a = candidate(&scene, "A", a_addr, &["--ttl", "3"], &[]);
    let run_a = scene.wait_leading("A", 1, 10 * SEC);
    let _b = scene.standby("B", &["--ttl", "3"], &[], &["A", "B"]);
    wait_code(a_addr, "/leader", 200, 5 * SEC);

    // Garbage: 400, then closed.
    let garbage = raw_exchange(a_addr, b"\x16\x03\x01 hello there\r\n\r\n");
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage:?}");
    // A request line of 100 KB: refused (400 or 431) and closed, never read in full.
    let mut huge = b"GET /".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 100_000));
    huge.extend(b" HTTP/1.1\r\n\r\n");
    let answer = raw_exchange(a_addr, &huge);
    assert!(
        answer.starts_with("HTTP/1.1 400")
            || answer.starts_with("HTTP/1.1 431")
            || answer.is_empty(),
        "{answer:?}"
    );

    // Clients that connect and never send, and one that trickles a byte every 200 ms.
    let t0 = scene.mark("hostile clients connect");
    let silent: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(a_addr).unwrap())
        .collect();
    let trickle = thread::spawn(move || {
        let mut s = TcpStream::connect(a_addr).unwrap();
        for b in b"GET /leader HTTP/1.1\r\nHost: x\r\n"
            .iter()
            .cycle()
            .take(200)
        {
            if s.write_all(&[*b]).is_err() {
                return true; // closed by the server: good
            }
            thread::sleep(200 * MS);
        }
        false
    });
    // A thousand connections at once: most are closed at once (the cap), none stalls anything.
    let flood: Vec<TcpStream> = (0..1000)
        .filter_map(|_| TcpStream::connect(a_addr).ok())
        .collect();
    drop(flood);
    // /leader still answers quickly to a fresh client while the silent ones hang on.
    let answered = poll_for(5 * SEC, || code_of(a_addr, "/leader"), |c| *c == 200);
    assert!(
        answered.is_ok(),
        "/leader under hostile clients: {answered:?}"
    );
    let quick = wait_until(3 * SEC, POLL, || {
        let t = mono_now_ns();
        code_of(a_addr, "/leader") == 200 && mono_now_ns() - t < ns(100 * MS)
    });
    assert!(quick, "/leader never answered within 100 ms");
    // The silent connections are closed after the header time-out (5 s), well within 10 s.
    for mut s in silent {
        s.set_read_timeout(Some(10 * SEC)).unwrap();
        let mut buf = [0u8; 256];
        if let Err(e) = s.read(&mut buf) {
            // A reset is a close too; a time-out is not.
            assert!(
                !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "a silent client was not closed: {e}"
            );
        }
    }
    let took = since(t0, mono_now_ns());
    assert!(
        took < ns(12 * SEC),
        "silent clients held for {:.1}s",
        secs(took)
    );
    assert!(
        trickle.join().unwrap(),
        "the trickling client was never cut off"
    );
    // All along, the supervisor kept its lease: the first child runs, nobody else started.
    scene.only_child_runs_for(run_a.pid, SEC, "hostile clients");
    assert_eq!(code_of(a_addr, "/leader"), 200);
}

/// Sends `bytes`, then reads what comes back until the server closes (at most 10 s).
fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(10 * SEC)).unwrap();
    // The server may close before it read everything: a failed write is part of the answer.
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Arguments, environment variables, and what the error line must mention.
type BadCase<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, Vec<&'a str>);

/// Bad addresses, from a flag, a variable or in use, are refused before anything starts: one
/// line naming the problem, exit 2, the command never run.
#[test]
fn bad_status_addresses_are_refused_before_anything_starts() {
    let dir = TempDir::new("leaderrun-status-addr");
    let marker = dir.join("started");
    let silent = format!("127.0.0.1:{}", free_port());
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let touch = format!("touch {}", marker.display());
    let cases: Vec<BadCase> = vec![
        (
            vec!["--status-addr", "garbage"],
            vec![],
            vec!["--status-addr", "HOST:PORT"],
        ),
        (
            vec!["--status-addr", "localhost:9110"],
            vec![],
            vec!["--status-addr", "IP address"],
        ),
        (
            vec!["--status-addr", "127.0.0.1:0"],
            vec![],
            vec!["--status-addr", "port"],
        ),
        (
            vec!["--status-addr", "127.0.0.1:70000"],
            vec![],
            vec!["--status-addr", "port"],
        ),
        (
            vec!["--status-addr", "::1:9110"],
            vec![],
            vec!["--status-addr", "brackets"],
        ),
        (
            vec!["--status-addr", "[::1]"],
            vec![],
            vec!["--status-addr"],
        ),
        (
            vec![],
            vec![("LEADERRUN_STATUS_ADDR", "1.2.3:4")],
            vec!["LEADERRUN_STATUS_ADDR"],
        ),
        (
            vec!["--status-addr", &taken],
            vec![],
            vec!["--status-addr", "cannot listen", "in use"],
        ),
    ];
    for (args, env, mentions) in cases {
        let mut cmd = leaderrun();
        cmd.args(["--endpoints", &silent, "--election", "x"])
            .args(&args)
            .args(["--", "/bin/sh", "-c", &touch]);
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = run_with_timeout(&mut cmd, 10 * SEC);
        let err = String::from_utf8_lossy(&out.stderr);
        let what = format!("{args:?} {env:?}: {err}");
        assert_eq!(out.status.code(), Some(2), "{what}");
        assert_eq!(err.trim_end().lines().count(), 1, "{what}");
        for m in mentions {
            assert!(
                err.to_lowercase().contains(&m.to_lowercase()),
                "{m}: {what}"
            );
        }
        assert!(!marker.exists(), "the command ran: {what}");
    }
}

/// `--status-addr :PORT` listens on every address: IPv4's and IPv6's, on one socket, and says
/// where in its log.
#[test]
fn a_port_alone_listens_on_every_address() {
    let (_etcd, scene) = etcd_and_scene();
    let port = free_port();
    let a = scene
        .leaderrun("A")
        .args(&["--ttl", "3", "--status-addr", &format!(":{port}")])
        .spawn();
    scene.wait_leading("A", 1, 10 * SEC);
    wait_code(
        SocketAddr::from(([127, 0, 0, 1], port)),
        "/leader",
        200,
        10 * SEC,
    );
    // IPv6's loopback, where the host has one.
    if TcpListener::bind("[::1]:0").is_ok() {
        let v6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
        wait_code(v6, "/leader", 200, 10 * SEC);
    }
    let log = a.log_with("status endpoint listening", 10 * SEC);
    assert!(
        log.contains(&format!("address=[::]:{port} ipv4=true ipv6=true")),
        "{log}"
    );
}
