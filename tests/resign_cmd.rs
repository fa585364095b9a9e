//! `leaderrun resign`: a remote step-down. The leader stops its child, resigns and campaigns
//! again behind the others; a request is bound to the leader it names; nobody to hand over to,
//! nobody leading, and a leader that does not listen each end with their documented status.

mod common;

use std::process::Output;

use common::*;
use nix::sys::signal::Signal;

/// `leaderrun resign` on the scene's election, run to completion (bounded).
fn resign(scene: &Scene, extra: &[&str]) -> Output {
    scene.ask("resign", extra, 40 * SEC)
}

/// The id in a `old: id=... key=...` line.
fn id_in(line: &str) -> &str {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix("id="))
        .unwrap_or_else(|| panic!("no id in {line:?}"))
}

#[test]
fn step_down_stops_the_child_before_the_standby_starts_and_goes_behind_it() {
    let (_etcd, scene) = etcd_and_scene();
    let (mut a, run_a) = scene.leader("A", &["--ttl", "5"], &[]);
    let mut b = scene.standby("B", &["--ttl", "5"], &[], &["A", "B"]);

    let t0 = mono_now_ns();
    let out = resign(&scene, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let shown = stdout_of(&out);
    let shown: Vec<&str> = shown.lines().collect();
    assert_eq!(shown.len(), 2, "{shown:?}");
    assert!(
        shown[0].starts_with("old: ") && id_in(shown[0]) == "A",
        "{shown:?}"
    );
    assert!(
        shown[1].starts_with("new: ") && id_in(shown[1]) == "B",
        "{shown:?}"
    );

    let run_b = scene.wait_leading_after("B", 1, 10 * SEC, &run_a);
    let took = since(t0, run_b.start_ns);
    scene.report(&format!("resign to B's child: {:.1} ms", ms_of(took)));
    // Far under the TTL: a handover, not an expiry.
    assert!(took < ns(3 * SEC), "handover took {:.3}s", secs(took));
    assert_eq!(scene.current(run_a.pid).ending, Ending::Term);
    assert_no_overlap(&scene.after_running(run_b.pid, 300 * MS));

    // A campaigns again, behind B; it did not exit.
    scene.wait_candidates(&["A", "B"], 10 * SEC);
    let queue: Vec<String> = scene.candidates().into_iter().map(|(_, v)| v).collect();
    assert_eq!(queue, ["B", "A"]);
    assert!(a.is_running(), "A exited: {}", a.log_text());

    // And back: the step-down works in either direction.
    let out = resign(&scene, &["--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout_of(&out))
        .unwrap_or_else(|e| panic!("not JSON: {:?}: {e}", stdout_of(&out)));
    assert_eq!(
        (v["old"]["id"].as_str(), v["new"]["id"].as_str()),
        (Some("B"), Some("A"))
    );
    let run_a2 = scene.wait_leading_after("A", 2, 10 * SEC, &run_b);
    assert_no_overlap(&scene.after_running(run_a2.pid, 300 * MS));
    for lr in [&mut a, &mut b] {
        lr.signal(Signal::SIGTERM);
        lr.expect_exit(10 * SEC);
    }
    // Each request went with its lease.
    assert!(election_keys(&scene.etcd, "leaderrun.resign").is_empty());
}

#[test]
fn a_step_down_request_is_bound_to_the_leader_it_names() {
    let (etcd, scene) = etcd_and_scene();
    let (_a, run_a) = scene.leader("A", &["--ttl", "5"], &[]);
    let _b = scene.standby("B", &["--ttl", "5"], &[], &["A", "B"]);
    let (key_a, _) = scene.candidates().remove(0);
    let request = "leaderrun.resign/".to_string() + &scene.election;

    // A request for A's key at another revision (an earlier leader of the same lease), and one
    // for another key: A leads on.
    etcd.put(&request, &format!("{} {key_a}", revision(&run_a) + 1000));
    etcd.put(
        &request,
        &format!("{} {}/1234", revision(&run_a), scene.election),
    );
    scene.only_child_runs_for(run_a.pid, 2 * SEC, "a request naming another leader");

    // The request for A hands over to B; the same request again leaves B alone.
    let meant_for_a = format!("{} {key_a}", revision(&run_a));
    etcd.put(&request, &meant_for_a);
    let run_b = scene.wait_leading_after("B", 1, 10 * SEC, &run_a);
    etcd.put(&request, "");
    etcd.put(&request, &meant_for_a);
    let runs = scene.after_running(run_b.pid, 2 * SEC);
    assert!(running_now(&scene.current(run_b.pid)), "{runs:?}");
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_no_overlap(&runs);
}

#[test]
fn resign_with_nobody_waiting_exits_1_and_the_leader_leads_on() {
    let (_etcd, scene) = etcd_and_scene();
    let (_a, run_a) = scene.leader("A", &["--ttl", "5"], &[]);
    let out = resign(&scene, &[]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(err.contains("nobody waits"), "{err:?}");
    assert!(stdout_of(&out).is_empty());
    scene.only_child_runs_for(run_a.pid, SEC, "resign with nobody to hand over to");
}

#[test]
fn resign_with_nobody_leading_exits_3() {
    let (_etcd, scene) = etcd_and_scene_with_election("empty");
    let out = resign(&scene, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out), "no leader\n");
}

#[test]
fn resign_gives_up_with_1_on_a_leader_that_does_not_listen() {
    let (_etcd, scene) = etcd_and_scene_with_election("elect");
    // etcdctl elect leads and another waits: nobody acts on the request.
    let _x = scene.start(
        "etcdctl-x",
        &mut etcdctl_command(&scene.etcd, &["elect", &scene.election, "X"]),
    );
    wait_until(10 * SEC, 20 * MS, || scene.candidates().len() == 1);
    let _y = scene.start(
        "etcdctl-y",
        &mut etcdctl_command(&scene.etcd, &["elect", &scene.election, "Y"]),
    );
    wait_until(10 * SEC, 20 * MS, || scene.candidates().len() == 2);
    let t0 = std::time::Instant::now();
    let out = resign(&scene, &["--timeout", "2s"]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        t0.elapsed() >= 2 * SEC && t0.elapsed() < 15 * SEC,
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(
        err.contains("no handover within 2s") && err.contains("id=X"),
        "{err:?}"
    );
    // X still leads, and the request is gone.
    assert_eq!(scene.candidates()[0].1, "X");
    assert!(election_keys(&scene.etcd, "leaderrun.resign").is_empty());
}

#[test]
fn resign_refuses_bad_usage_with_2_before_contacting_etcd() {
    for args in [
        &[][..],
        &["--election", "w", "--timeout", "0s"],
        &["--election", "w", "--timeout", "2h"],
        &["--election"],
    ] {
        let mut c = leaderrun();
        c.args(["resign", "--endpoints", "127.0.0.1:9"]).args(args);
        let out = run_with_timeout(&mut c, 10 * SEC);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err:?}");
        assert!(stdout_of(&out).is_empty(), "{args:?}");
    }
}

/// Remote step-down is optional for a leader: a role that cannot read the request key gets one
/// warning, and leadership is not at stake.
#[test]
fn a_leader_whose_role_cannot_read_requests_warns_once_and_leads_on() {
    const USER: &str = "no-resign";
    const PASSWORD: &str = "pw";
    let etcd = Etcd::single();
    etcd.enable_auth("root-secret");
    let scene = Scene::with_election(&etcd.endpoints(), "web");
    etcd.add_user_with_prefixes(USER, PASSWORD, &["web/"]);
    let pw = scene.path("password");
    std::fs::write(&pw, PASSWORD).expect("write password file");
    let user = [
        "--user",
        USER,
        "--password-file",
        pw.to_str().unwrap(),
        "--ttl",
        "3",
    ];
    let a = scene.leaderrun("A").args(&user).fenced(&[]).spawn();
    let run_a = scene.wait_leading("A", 1, 10 * SEC);
    let warned = poll_for(
        5 * SEC,
        || a.warnings(),
        |w| w.iter().any(|l| l.contains("remote step-down")),
    )
    .unwrap_or_else(|w| panic!("no warning about remote step-down: {w:#?}"));
    let about: Vec<&String> = warned.iter().filter(|l| l.contains("step-down")).collect();
    assert_eq!(about.len(), 1, "{about:#?}");
    assert!(about[0].contains("leaderrun.resign/web"), "{about:#?}");
    // Several TTLs: it leads on, and says it once.
    scene.only_child_runs_for(run_a.pid, 4 * SEC, "a leader without the request key");
    let about = a
        .warnings()
        .into_iter()
        .filter(|l| l.contains("step-down"))
        .count();
    assert_eq!(about, 1);
}
