//! Role hooks against real etcd: `--on-promote` before the child starts, `--on-demote` after
//! its group is gone and before leadership is released, in order across hosts, within the
//! deadline, a failing promote vetoing the term. The hooks here hold a "VIP": a file created
//! with noclobber, so a promote that comes before the old leader's demote fails.

mod common;

use common::*;
use nix::sys::signal::Signal;
use std::time::Duration;

const POLL_MS: Duration = Duration::from_millis(50);

/// The hook options of a candidate whose hooks take and drop `scene`'s VIP file and append
/// `<ns> <event> <id> [reason]` to its journal.
fn vip_hooks(scene: &Scene) -> Vec<String> {
    let vip = scene.path("vip");
    let journal = scene.path("journal");
    let (vip, journal) = (vip.display(), journal.display());
    vec![
        "--on-promote".into(),
        format!(
            "set -C; echo \"$LEADERRUN_ID\" > {vip} && echo \"$(date +%s%N) promote $LEADERRUN_ID $LEADERRUN_ROLE\" >> {journal}"
        ),
        "--on-demote".into(),
        format!(
            "echo \"$(date +%s%N) demote $LEADERRUN_ID $LEADERRUN_REASON\" >> {journal}; rm -f {vip}"
        ),
        "--hook-timeout".into(),
        "1s".into(),
    ]
}

/// The journal's events, `(ns, "promote A leader")`, in the order written.
fn journal(scene: &Scene) -> Vec<(u128, String)> {
    lines(&scene.path("journal"))
        .into_iter()
        .filter_map(|l| {
            let (ns, rest) = l.split_once(' ')?;
            Some((ns.parse().ok()?, rest.to_string()))
        })
        .collect()
}

fn events(scene: &Scene) -> Vec<String> {
    journal(scene).into_iter().map(|(_, e)| e).collect()
}

fn wait_events(scene: &Scene, n: usize, timeout: Duration) -> Vec<String> {
    let ok = wait_until(timeout, POLL_MS, || events(scene).len() >= n);
    assert!(ok, "fewer than {n} hook events: {:?}", events(scene));
    events(scene)
}

fn opts<'a>(hooks: &'a [String], extra: &[&'a str]) -> Vec<&'a str> {
    let mut o: Vec<&str> = extra.to_vec();
    o.extend(hooks.iter().map(String::as_str));
    o
}

#[test]
fn hooks_run_in_order_across_hosts_and_the_vip_is_never_taken_twice() {
    let (_etcd, scene) = etcd_and_scene();
    let hooks = vip_hooks(&scene);
    let (mut a, _) = scene.leader("A", &opts(&hooks, &["--ttl", "5"]), &[]);
    let b = scene.standby("B", &opts(&hooks, &["--ttl", "5"]), &[], &["A", "B"]);
    assert_eq!(wait_events(&scene, 1, 5 * SEC), ["promote A leader"]);
    // A is told to stop: its child goes, its demote hook drops the VIP, then B may take it.
    a.signal(Signal::SIGTERM);
    a.expect_exit(20 * SEC);
    let seen = wait_events(&scene, 3, 20 * SEC);
    assert_eq!(
        seen,
        ["promote A leader", "demote A shutdown", "promote B leader"]
    );
    let c = scene.standby("C", &opts(&hooks, &["--ttl", "5"]), &[], &["B", "C"]);
    // A switchover: B steps down through its end path.
    let resign = scene.ask("resign", &[], 30 * SEC);
    assert!(resign.status.success(), "{}", stderr_of(&resign));
    let seen = wait_events(&scene, 5, 20 * SEC);
    assert_eq!(seen[3..], ["demote B step-down", "promote C leader"]);
    // The journal's instants agree with its order: each hook ended before the next began.
    let at: Vec<u128> = journal(&scene).iter().map(|(ns, _)| *ns).collect();
    assert!(at.windows(2).all(|w| w[0] <= w[1]), "{:?}", journal(&scene));
    for lr in [&b, &c] {
        lr.assert_log_lacks("hook failed");
    }
    drop((b, c));
}

#[test]
fn a_leader_cut_off_runs_its_demote_hook_before_the_standby_promotes() {
    let (etcd, scene) = etcd_and_scene();
    let proxy = FaultProxy::start(etcd.client_addr(0));
    let hooks = vip_hooks(&scene);
    let a_opts = opts(&hooks, &["--ttl", "5"]);
    let a = scene.spawn("A", &proxy.endpoint(), &a_opts, &scene.fenced(&[]));
    let run_a = scene.wait_leading("A", 1, 10 * SEC);
    let b = scene.standby("B", &opts(&hooks, &["--ttl", "5"]), &[], &["A", "B"]);
    proxy.set_mode(Mode::Blackhole);
    let seen = wait_events(&scene, 3, 30 * SEC);
    assert_eq!(
        seen,
        ["promote A leader", "demote A lost", "promote B leader"]
    );
    // A's child was gone before B's started, and A's demote hook ended before B's promote.
    let run_b = scene.wait_leading("B", 1, 10 * SEC);
    let ended = scene.current(run_a.pid);
    assert!(ended.last_seen_ns < run_b.start_ns, "{ended:?} {run_b:?}");
    b.assert_log_lacks("hook failed");
    drop(a);
}

#[test]
fn a_failing_promote_hook_vetoes_the_term_and_the_next_candidate_leads() {
    let (_etcd, scene) = etcd_and_scene();
    let journal = scene.path("journal");
    let demote = format!(
        "echo \"$(date +%s%N) demote $LEADERRUN_ID $LEADERRUN_REASON\" >> {}",
        journal.display()
    );
    let a_opts = [
        "--ttl",
        "5",
        "--on-promote",
        "echo no VIP for me >&2; exit 3",
        "--on-demote",
        &demote,
    ];
    let a = scene.candidate("A", &a_opts, &[]);
    let vetoed = wait_until(10 * SEC, POLL_MS, || a.log_text().contains("vetoed"));
    assert!(vetoed, "{}", a.log_text());
    assert_eq!(wait_events(&scene, 1, 5 * SEC), ["demote A vetoed"]);
    // A stays out for the holdoff: B leads meanwhile; A's child never ran.
    let _b = scene.candidate("B", &["--ttl", "5"], &[]);
    scene.wait_leading("B", 1, 10 * SEC);
    assert!(runs_of(&scene.runs(), "A").is_empty(), "{:?}", scene.runs());
    let log = a.log_with("no VIP for me", 5 * SEC);
    assert!(log.contains("no VIP for me"), "{log}");
}

#[test]
fn a_promote_hook_that_hangs_is_killed_at_its_timeout() {
    let (_etcd, scene) = etcd_and_scene();
    let a_opts = [
        "--ttl",
        "5",
        "--on-promote",
        "sleep 60",
        "--hook-timeout",
        "1s",
    ];
    let t0 = std::time::Instant::now();
    let a = scene.candidate("A", &a_opts, &[]);
    let vetoed = wait_until(10 * SEC, POLL_MS, || a.log_text().contains("vetoed"));
    assert!(vetoed, "{}", a.log_text());
    assert!(t0.elapsed() < 8 * SEC, "took {:?}", t0.elapsed());
    assert!(runs_of(&scene.runs(), "A").is_empty());
}

#[test]
fn a_hook_timeout_that_does_not_fit_the_ttl_is_refused_at_start() {
    let out = run_with_timeout(
        leaderrun().args([
            "--endpoints",
            "127.0.0.1:1",
            "--election",
            "e",
            "--ttl",
            "3",
            "--on-demote",
            "true",
            "--hook-timeout",
            "2s",
            "--",
            "true",
        ]),
        30 * SEC,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains("--hook-timeout") && err.contains("--ttl"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
