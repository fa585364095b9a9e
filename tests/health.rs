//! Leadership follows the child's health (`--health-cmd`, `--health-http`): an unhealthy leader
//! stops its child, resigns and stays out of the election for the holdoff, so that a standby
//! takes over; never two children at once. Failures in the start period do not count.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::http::get;
use common::*;

/// Health tuning of every candidate here: a verdict after 2 failures 500 ms apart.
const TUNING: &[&str] = &[
    "--ttl",
    "5",
    "--health-interval",
    "500ms",
    "--health-timeout",
    "500ms",
    "--health-retries",
    "2",
    "--health-holdoff",
    "3s",
];
/// interval x retries + timeout, the bound before the handover itself.
const VERDICT: Duration = Duration::from_millis(500 * 2 + 500);

fn tuning_with(extra: &[&str]) -> Vec<String> {
    TUNING.iter().chain(extra).map(|s| s.to_string()).collect()
}

/// `--health-cmd` that passes while `<scene>/healthy-<id>` exists.
fn file_check(scene: &Scene, id: &str) -> (Vec<String>, std::path::PathBuf) {
    let flag = scene.path(&format!("healthy-{id}"));
    std::fs::write(&flag, "").expect("create health flag");
    let cmd = format!("test -e '{}'", flag.display());
    (tuning_with(&["--health-cmd", &cmd]), flag)
}

#[test]
fn an_unhealthy_leader_hands_over_within_interval_times_retries_plus_timeout() {
    let (_etcd, scene) = etcd_and_scene();
    let (opts_a, flag_a) = file_check(&scene, "A");
    let (opts_b, _flag_b) = file_check(&scene, "B");
    let opts_a: Vec<&str> = opts_a.iter().map(String::as_str).collect();
    let opts_b: Vec<&str> = opts_b.iter().map(String::as_str).collect();
    let (mut a, run_a) = scene.leader("A", &opts_a, &[]);
    let _b = scene.standby("B", &opts_b, &[], &["A", "B"]);
    // Healthy: A leads on through many checks.
    scene.only_child_runs_for(run_a.pid, 2 * SEC, "a healthy leader");

    let t0 = mono_now_ns();
    std::fs::remove_file(&flag_a).expect("remove A's health flag");
    let run_b = scene.wait_leading_after("B", 1, 15 * SEC, &run_a);
    let took = since(t0, run_b.start_ns);
    scene.report(&format!(
        "check failing to B's child: {:.0} ms (verdict bound {} ms)",
        ms_of(took),
        VERDICT.as_millis()
    ));
    // Generous: the verdict, a handover, and a noisy machine.
    assert!(took < ns(VERDICT + 5 * SEC), "took {:.3}s", secs(took));
    assert_eq!(scene.current(run_a.pid).ending, Ending::Term);
    assert_no_overlap(&scene.after_running(run_b.pid, 300 * MS));
    assert!(a.log_text().contains("unhealthy"), "{}", a.log_text());

    // The holdoff: A is out of the election, then campaigns again behind B.
    let out = scene.candidates();
    assert_eq!(out.len(), 1, "A campaigns during its holdoff: {out:?}");
    scene.wait_candidates(&["A", "B"], 10 * SEC);
    assert_eq!(scene.candidates()[0].1, "B");
    assert!(a.is_running());
}

/// A tiny HTTP server for `--health-http`: answers 200, answers 503, or accepts and never
/// answers (a hung server), as set.
struct HealthServer {
    url: String,
    mode: Arc<AtomicU8>,
}

const OK: u8 = 0;
const UNAVAILABLE: u8 = 1;
const HUNG: u8 = 2;

impl HealthServer {
    fn start() -> HealthServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/healthz", listener.local_addr().unwrap());
        let mode = Arc::new(AtomicU8::new(OK));
        let m = mode.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mode = m.load(Ordering::SeqCst);
                thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                    let _ = conn.read(&mut buf);
                    let answer = match mode {
                        OK => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                        UNAVAILABLE => {
                            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
                        }
                        _ => {
                            // Hold the connection open, say nothing.
                            thread::sleep(Duration::from_secs(30));
                            return;
                        }
                    };
                    let _ = conn.write_all(answer.as_bytes());
                });
            }
        });
        HealthServer { url, mode }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
}

/// Health shows in /status and /metrics (and, through the same channel, in sd_notify's STATUS:
/// see `notify`'s unit tests).
#[test]
fn health_shows_in_status_and_metrics() {
    let (_etcd, scene) = etcd_and_scene();
    let (opts, flag) = file_check(&scene, "A");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let addr_text = addr.to_string();
    let mut opts: Vec<&str> = opts.iter().map(String::as_str).collect();
    opts.extend(["--status-addr", &addr_text]);
    let (_a, run_a) = scene.leader("A", &opts, &[]);
    let healthy = poll_for(
        5 * SEC,
        || get(addr, "/status"),
        |r| {
            r.as_ref()
                .is_ok_and(|a| a.body.contains("\"health\":\"healthy\""))
        },
    );
    assert!(healthy.is_ok(), "{healthy:?}");
    std::fs::remove_file(&flag).expect("fail the check");
    // Alone in the election: it hands over to nobody, and leads again after the holdoff.
    scene.wait_ended(run_a.pid, 10 * SEC, false);
    let counted = poll_for(
        5 * SEC,
        || get(addr, "/metrics"),
        |r| {
            r.as_ref().is_ok_and(|a| {
                a.body
                    .contains("leaderrun_leadership_losses_total{reason=\"unhealthy\"} 1")
                    && a.body
                        .contains("leaderrun_health_checks_total{result=\"fail\"} 2")
            })
        },
    );
    assert!(counted.is_ok(), "{counted:?}");
}

#[test]
fn a_leader_whose_child_stops_answering_its_health_url_hands_over() {
    let (_etcd, scene) = etcd_and_scene();
    let server_a = HealthServer::start();
    let server_b = HealthServer::start();
    let opts_a = tuning_with(&["--health-http", &server_a.url]);
    let opts_b = tuning_with(&["--health-http", &server_b.url]);
    let opts_a: Vec<&str> = opts_a.iter().map(String::as_str).collect();
    let opts_b: Vec<&str> = opts_b.iter().map(String::as_str).collect();
    let (_a, run_a) = scene.leader("A", &opts_a, &[]);
    let _b = scene.standby("B", &opts_b, &[], &["A", "B"]);
    // One 503 is a failure, not a verdict: a success in between resets the count.
    server_a.set(UNAVAILABLE);
    thread::sleep(Duration::from_millis(600));
    server_a.set(OK);
    scene.only_child_runs_for(run_a.pid, 2 * SEC, "one failed check among passing ones");

    let t0 = mono_now_ns();
    server_a.set(HUNG);
    let run_b = scene.wait_leading_after("B", 1, 15 * SEC, &run_a);
    let took = since(t0, run_b.start_ns);
    scene.report(&format!(
        "hung health URL to B's child: {:.0} ms",
        ms_of(took)
    ));
    assert!(took < ns(VERDICT + 5 * SEC), "took {:.3}s", secs(took));
    assert_no_overlap(&scene.after_running(run_b.pid, 300 * MS));
}

#[test]
fn failures_in_the_start_period_do_not_count() {
    let (_etcd, scene) = etcd_and_scene();
    let (opts_a, flag_a) = file_check(&scene, "A");
    std::fs::remove_file(&flag_a).expect("start unhealthy");
    let mut opts_a = opts_a;
    opts_a.extend(["--health-start-period".to_string(), "3s".to_string()]);
    let opts_a: Vec<&str> = opts_a.iter().map(String::as_str).collect();
    let (opts_b, _flag_b) = file_check(&scene, "B");
    let opts_b: Vec<&str> = opts_b.iter().map(String::as_str).collect();
    let (_a, run_a) = scene.leader("A", &opts_a, &[]);
    let _b = scene.standby("B", &opts_b, &[], &["A", "B"]);
    // Failing from the start, but within the start period: A leads on.
    thread::sleep(Duration::from_millis(1500));
    std::fs::write(&flag_a, "").expect("healthy now");
    scene.only_child_runs_for(run_a.pid, 3 * SEC, "failures in the start period");
    // The start period ended with the first success: failures count now.
    std::fs::remove_file(&flag_a).expect("unhealthy again");
    let run_b = scene.wait_leading_after("B", 1, 15 * SEC, &run_a);
    assert_no_overlap(&scene.after_running(run_b.pid, 300 * MS));
}

#[test]
fn a_check_that_outlives_its_timeout_is_killed_with_its_group() {
    let (_etcd, scene) = etcd_and_scene();
    let marker = scene.path("check-pids");
    // The check leaves a sleeper in its group and hangs: both must go at the timeout.
    let cmd = format!("echo $$ >> '{}'; sleep 60 & sleep 60", marker.display());
    let opts = tuning_with(&["--health-cmd", &cmd]);
    let opts: Vec<&str> = opts.iter().map(String::as_str).collect();
    let (_a, run_a) = scene.leader("A", &opts, &[]);
    scene.wait_ended(run_a.pid, 15 * SEC, false);
    let pids: Vec<i32> = lines(&marker)
        .iter()
        .filter_map(|l| l.parse().ok())
        .collect();
    assert!(!pids.is_empty(), "no check ran");
    let gone = wait_until(5 * SEC, 20 * MS, || {
        pids.iter()
            .all(|&p| pgrp(p as u32).is_none() || process_state(p as u32) == Some('Z'))
    });
    assert!(
        gone,
        "a check's process group outlived its timeout: {pids:?}"
    );
}

#[test]
fn health_options_are_checked_before_anything_starts() {
    for (args, needle) in [
        (
            &["--health-interval", "1s"][..],
            "needs --health-cmd or --health-http",
        ),
        (
            &["--health-cmd", "true", "--health-http", "http://h/"],
            "one health check",
        ),
        (&["--health-http", "https://h/"], "https is not supported"),
        (&["--health-http", "h:80"], "http:// URL"),
        (
            &["--health-cmd", "true", "--health-interval", "0s"],
            "more than 0",
        ),
        (
            &["--health-cmd", "true", "--health-retries", "0"],
            "--health-retries",
        ),
        (
            &["--health-cmd", "true", "--health-holdoff", "soon"],
            "--health-holdoff",
        ),
    ] {
        let mut c = leaderrun();
        c.args(["--endpoints", "127.0.0.1:9", "--election", "h"])
            .args(args)
            .args(["--", "true"]);
        let out = run_with_timeout(&mut c, 10 * SEC);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err:?}");
        assert!(err.contains(needle), "{args:?}: {err:?}");
    }
}
