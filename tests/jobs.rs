//! Singleton jobs against real etcd: `--no-wait`, `--wait-timeout` and `--run-id`.

mod common;

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;

/// A candidate that leads (its child touches a file, then sleeps): waits until its child runs.
fn holder(scene: &Scene, id: &str) -> Lr {
    let leading = scene.path(&format!("{id}.leading"));
    let lr = scene.candidate_sh(
        id,
        &[],
        &format!("touch '{}'; exec sleep 60", leading.display()),
    );
    assert!(
        wait_until(10 * SEC, POLL, || leading.exists()),
        "{id} did not lead within 10 s"
    );
    lr
}

/// Starts candidate `id` with `opts` and the command `touch <marker>; rest` (the marker in the
/// scene's dir), waits up to `timeout` for it to exit; returns it, its status, how long it ran
/// and the marker's path.
fn touching_job(
    scene: &Scene,
    id: &str,
    opts: &[&str],
    (marker, rest): (&str, &str),
    timeout: Duration,
) -> (Lr, ExitStatus, Duration, PathBuf) {
    let marker = scene.path(marker);
    let mut lr = scene.candidate_sh(id, opts, &format!("touch '{}'; {rest}", marker.display()));
    let (status, took) = lr.expect_exit_timed(timeout);
    (lr, status, took, marker)
}

/// A script that appends the candidate's id to `marker`, then `rest`.
fn record_id(marker: &Path, rest: &str) -> String {
    format!("echo \"$LEADERRUN_ID\" >> '{}'; {rest}", marker.display())
}

// ---------------------------------------------------------------------------
// --no-wait and --wait-timeout
// ---------------------------------------------------------------------------

#[test]
fn no_wait_exits_75_at_once_while_another_leads_and_runs_the_command_when_nobody_does() {
    let (_etcd, scene) = etcd_and_scene_with_election("job");
    let mut holder = holder(&scene, "holder");

    let (b, status, took, marker) = touching_job(
        &scene,
        "B",
        &["--no-wait"],
        ("ran-while-led", "true"),
        10 * SEC,
    );
    assert_eq!(status.code(), Some(75), "--no-wait while led: {status}");
    assert!(took < 3 * SEC, "--no-wait took {took:?} to give up");
    assert!(!marker.exists(), "the command ran although another led");
    assert!(
        b.log_text().contains("holder"),
        "the log does not name the leader"
    );
    // It withdrew: only the holder is left in the election.
    scene.wait_candidates(&["holder"], 5 * SEC);

    holder.signal(Signal::SIGTERM);
    let status = holder.expect_exit(10 * SEC);
    assert_eq!(status.code(), Some(143), "the holder's sleep was TERMed");
    scene.wait_candidates(&[], 5 * SEC);

    let (_c, status, took, marker) = touching_job(
        &scene,
        "C",
        &["--no-wait"],
        ("ran-alone", "exit 4"),
        10 * SEC,
    );
    assert_eq!(
        status.code(),
        Some(4),
        "--no-wait with nobody leading must run the command and exit with its status"
    );
    assert!(marker.exists(), "the command did not run");
    assert!(took < 5 * SEC, "took {took:?}");
    scene.wait_candidates(&[], 5 * SEC);
}

#[test]
fn wait_timeout_exits_75_after_the_timeout_without_running_the_command() {
    let (_etcd, scene) = etcd_and_scene_with_election("job");
    let _holder = holder(&scene, "holder");

    let (_b, status, took, marker) = touching_job(
        &scene,
        "B",
        &["--wait-timeout", "2s"],
        ("ran", "true"),
        15 * SEC,
    );
    assert_eq!(status.code(), Some(75), "{status}");
    assert!(
        took >= 1500 * MS && took <= 6 * SEC,
        "--wait-timeout 2s gave up after {took:?}"
    );
    assert!(!marker.exists(), "the command ran although another led");
    scene.wait_candidates(&["holder"], 5 * SEC);
}

#[test]
fn two_no_wait_candidates_started_together_run_the_command_once() {
    let etcd = Etcd::single();
    for round in 0..5 {
        let scene = Scene::with_election(&etcd.endpoints(), &format!("race{round}"));
        let marker = scene.path("ran");
        // docs/use-cases.md: with --no-wait, the loser of a simultaneous start exits 75
        // at once. A short job, as cron jobs often are: the loser must not
        // run it after the winner is done.
        let script = record_id(&marker, "sleep 0.5");
        let mut a = scene.candidate_sh("A", &["--no-wait"], &script);
        let mut b = scene.candidate_sh("B", &["--no-wait"], &script);
        let (sa, ta) = a.expect_exit_timed(15 * SEC);
        let (sb, tb) = b.expect_exit_timed(15 * SEC);
        let ran = lines(&marker);
        let summary =
            format!("round {round}: ran by {ran:?}; A: {sa} after {ta:?}; B: {sb} after {tb:?}");
        assert_eq!(ran.len(), 1, "{summary}");
        let mut codes = [sa.code(), sb.code()];
        codes.sort();
        assert_eq!(codes, [Some(0), Some(75)], "{summary}");
        let loser_took = if sa.code() == Some(75) { ta } else { tb };
        assert!(loser_took < 3 * SEC, "the loser waited: {summary}");
        scene.wait_candidates(&[], 5 * SEC);
    }
}

// ---------------------------------------------------------------------------
// --run-id
// ---------------------------------------------------------------------------

/// `(granted, remaining)` TTL in seconds of the lease that holds `key`.
fn key_lease_ttl(etcd: &str, key: &str) -> (i64, i64) {
    let json = etcdctl_at_ok(etcd, &["get", "-w", "json", key]);
    let v: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("bad JSON {json:?}: {e}"));
    let lease = v["kvs"][0]["lease"]
        .as_i64()
        .unwrap_or_else(|| panic!("{key} has no lease: {json}"));
    assert_ne!(lease, 0, "{key} has no lease: {json}");
    let text = etcdctl_at_ok(etcd, &["lease", "timetolive", &format!("{lease:x}")]);
    // "lease 694d... granted with TTL(3600s), remaining(3599s)" (etcdctl 3.4;
    // later versions say "remaining TTL(3599s)").
    let number_after = |tags: &[&str]| -> i64 {
        let rest = tags
            .iter()
            .find_map(|tag| text.split(tag).nth(1))
            .unwrap_or_else(|| panic!("none of {tags:?} in {text:?}"));
        rest.split('s')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("cannot read {tags:?} in {text:?}"))
    };
    (
        number_after(&["granted with TTL("]),
        number_after(&["remaining(", "remaining TTL("]),
    )
}

#[test]
fn run_id_runs_once_per_id_and_a_late_host_exits_0_naming_who_ran_it() {
    let (_etcd, scene) = etcd_and_scene_with_election("nightly");
    let marker = scene.path("ran");
    let script = record_id(&marker, "true");
    let opts = ["--run-id", "R1", "--run-id-ttl", "1h"];

    let mut h1 = scene.candidate_sh("host1", &opts, &script);
    let status = h1.expect_exit(15 * SEC);
    assert_eq!(status.code(), Some(0), "{status}");
    assert_eq!(lines(&marker), ["host1"]);
    // A run that went well says nothing above INFO (cron mails what --log-level warn shows).
    assert_eq!(h1.warnings(), Vec::<String>::new());

    // A late host: the run is recorded, it exits 0 without running.
    let mut h2 = scene.candidate_sh("host2", &opts, &script);
    let (status, took) = h2.expect_exit_timed(15 * SEC);
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(took < 5 * SEC, "took {took:?}");
    assert_eq!(lines(&marker), ["host1"], "host2 ran the recorded run");
    let log = h2.log_text();
    assert!(
        log.contains("id=host1") && log.contains("revision="),
        "host2's log does not say who ran R1:\n{log}"
    );

    // The record: outside the election prefix, naming host1, with its own
    // lease of --run-id-ttl.
    let key = "leaderrun.runs/nightly/R1";
    let value = etcdctl_at_ok(&scene.etcd, &["get", key, "--print-value-only"]);
    assert!(
        value.starts_with("id=host1 revision=") && value.contains(" at="),
        "{key} = {value:?}"
    );
    let runs_keys = etcdctl_at_ok(
        &scene.etcd,
        &["get", "--prefix", "leaderrun.runs/", "--keys-only"],
    );
    let runs_keys: Vec<&str> = runs_keys.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(runs_keys, [key]);
    let under_name = etcdctl_at_ok(&scene.etcd, &["get", "--prefix", "nightly/", "--keys-only"]);
    assert!(
        under_name.trim().is_empty(),
        "keys left under nightly/ (candidates resign; records live elsewhere): {under_name:?}"
    );
    let (granted, remaining) = key_lease_ttl(&scene.etcd, key);
    assert_eq!(granted, 3600, "--run-id-ttl 1h");
    assert!(
        remaining <= 3600 && remaining > 3500,
        "remaining TTL {remaining}s"
    );

    // Another run id runs again.
    let mut h3 = scene.candidate_sh("host2", &["--run-id", "R2"], &script);
    let status = h3.expect_exit(15 * SEC);
    assert_eq!(status.code(), Some(0), "{status}");
    assert_eq!(lines(&marker), ["host1", "host2"]);
    let value = etcdctl_at_ok(
        &scene.etcd,
        &["get", "leaderrun.runs/nightly/R2", "--print-value-only"],
    );
    assert!(value.starts_with("id=host2 "), "{value:?}");
    let (granted, _) = key_lease_ttl(&scene.etcd, "leaderrun.runs/nightly/R2");
    assert_eq!(granted, 86400, "--run-id-ttl defaults to 24h");
}

#[test]
fn run_id_on_three_hosts_started_together_runs_once() {
    let etcd = Etcd::single();
    for round in 0..2 {
        let scene = Scene::with_election(&etcd.endpoints(), "nightly");
        let marker = scene.path("ran");
        let script = record_id(&marker, "sleep 0.3");
        let run_id = format!("day-{round}");
        let opts = ["--run-id", run_id.as_str()];
        let mut hosts: Vec<Lr> = ["h1", "h2", "h3"]
            .iter()
            .map(|id| scene.candidate_sh(id, &opts, &script))
            .collect();
        let mut statuses = Vec::new();
        for h in &mut hosts {
            let (status, took) = h.expect_exit_timed(20 * SEC);
            statuses.push((h.id.clone(), status.code(), took));
        }
        let ran = lines(&marker);
        assert_eq!(ran.len(), 1, "round {round}: ran by {ran:?}; {statuses:?}");
        assert!(
            statuses.iter().all(|(_, code, _)| *code == Some(0)),
            "round {round}: {statuses:?}"
        );
        // The others say who ran it.
        for h in hosts.iter().filter(|h| h.id != ran[0]) {
            let log = h.log_text();
            assert!(
                log.contains(&format!("id={}", ran[0])),
                "round {round}: {} does not name {}:\n{log}",
                h.id,
                ran[0]
            );
        }
        scene.wait_candidates(&[], 5 * SEC);
    }
}
