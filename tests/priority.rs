//! Who leads, and who should: `--priority` (failover to the best candidate: worse ones pass
//! it), `--preempt` (fail-back after a wait, never without it), `leaderrun resign --to`
//! (switchover to a named candidate), `leaderrun list` and `leaderrun history`, and the
//! metrics that follow them.

mod common;

use std::net::SocketAddr;

use common::http::get;
use common::*;
use nix::sys::signal::Signal;

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}

/// The ids under the election, oldest key first.
fn queue(scene: &Scene) -> Vec<String> {
    scene.candidate_ids()
}

/// For the whole `window`, `pid` runs and every other child has ended.
fn leads_on(scene: &Scene, pid: u32, window: std::time::Duration, what: &str) {
    let mut last = Vec::new();
    let ok = holds_for(window, || {
        last = scene.runs();
        last.iter()
            .all(|r| (r.pid == pid) == running_now(r) && (r.pid != pid || running_now(r)))
            && last.iter().any(|r| r.pid == pid)
    });
    assert!(
        ok,
        "{what}: the child {pid} stopped or another child runs: {last:?}"
    );
}

fn wait_queue(scene: &Scene, want: &[&str], timeout: std::time::Duration) {
    let seen = poll_for(timeout, || queue(scene), |q| q == want);
    assert!(seen.is_ok(), "queue: want {want:?}, last {seen:?}");
}

#[test]
fn failover_goes_to_the_best_candidate_and_worse_ones_pass_it() {
    let (_etcd, scene) = etcd_and_scene();
    let (mut a, run_a) = scene.leader("A", &["--ttl", "5"], &[]);
    let _b = scene.standby("B", &["--ttl", "5"], &[], &["A", "B"]);
    // C joins last with a higher priority: B moves behind it at once.
    let _c = scene
        .leaderrun("C")
        .args(&["--ttl", "5", "--priority", "5"])
        .fenced(&[])
        .spawn();
    wait_queue(&scene, &["A", "C", "B"], 10 * SEC);
    // And A, without --preempt, leads on.
    scene.only_child_runs_for(run_a.pid, 2 * SEC, "a better candidate without --preempt");

    let t0 = mono_now_ns();
    a.signal(Signal::SIGTERM);
    let run_c = scene.wait_leading_after("C", 1, 10 * SEC, &run_a);
    scene.report(&format!(
        "handover to the best candidate: {:.1} ms",
        ms_of(since(t0, run_c.start_ns))
    ));
    assert!(
        scene.runs().iter().all(|r| r.id.as_deref() != Some("B")),
        "B ran"
    );
    assert_no_overlap(&scene.after_running(run_c.pid, 300 * MS));
    a.expect_exit(10 * SEC);
}

#[test]
fn a_leader_with_preempt_steps_down_for_a_better_candidate_after_the_wait() {
    let (_etcd, scene) = etcd_and_scene();
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let addr_s = addr.to_string();
    let (_a, run_a) = scene.leader(
        "A",
        &["--ttl", "5", "--preempt", "2s", "--status-addr", &addr_s],
        &[],
    );
    let t0 = mono_now_ns();
    let _c = scene
        .leaderrun("C")
        .args(&["--ttl", "5", "--priority", "7", "--preempt", "2s"])
        .fenced(&[])
        .spawn();
    let run_c = scene.wait_leading_after("C", 1, 20 * SEC, &run_a);
    let waited = since(t0, run_c.start_ns);
    scene.report(&format!("preempted after {:.2} s", secs(waited)));
    assert!(
        waited >= ns(2 * SEC),
        "preempted too soon: {:.2}s",
        secs(waited)
    );
    assert_eq!(scene.current(run_a.pid).ending, Ending::Term);
    assert_no_overlap(&scene.after_running(run_c.pid, 300 * MS));
    // A waits behind C, and C, best of all, is not preempted back.
    wait_queue(&scene, &["C", "A"], 10 * SEC);
    leads_on(&scene, run_c.pid, 3 * SEC, "the better candidate leading");

    let metrics = poll_for(
        5 * SEC,
        || get(addr, "/metrics").map(|a| a.body).unwrap_or_default(),
        |m| m.contains("leaderrun_leader_changes_total{reason=\"preempted\"} 1"),
    )
    .unwrap_or_else(|last| panic!("no preempted change in:\n{last}"));
    assert!(
        metrics.contains(&format!(
            "leaderrun_info{{election=\"{}\",id=\"A\",priority=\"0\"}} 1",
            scene.election
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("leaderrun_seconds_without_leader 0\n"),
        "{metrics}"
    );
}

#[test]
fn without_preempt_a_better_candidate_waits_its_turn() {
    let (_etcd, scene) = etcd_and_scene();
    let (_a, run_a) = scene.leader("A", &["--ttl", "5"], &[]);
    let _c = scene
        .leaderrun("C")
        .args(&["--ttl", "5", "--priority", "9", "--preempt", "1s"])
        .fenced(&[])
        .spawn();
    scene.wait_candidates(&["A", "C"], 10 * SEC);
    // C's own --preempt does not unseat A: the leader's policy decides (and a warning says
    // they disagree).
    scene.only_child_runs_for(run_a.pid, 4 * SEC, "a leader without --preempt");
}

#[test]
fn resign_to_hands_over_to_the_named_candidate() {
    let (_etcd, scene) = etcd_and_scene();
    let (mut a, run_a) = scene.leader("A", &["--ttl", "5"], &[]);
    let _b = scene.standby("B", &["--ttl", "5"], &[], &["A", "B"]);
    let _c = scene.standby("C", &["--ttl", "5"], &[], &["A", "B", "C"]);

    let out = scene.ask("resign", &["--to", "C", "--format", "json"], 40 * SEC);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let v = json(&stdout_of(&out));
    assert_eq!(
        (v["old"]["id"].as_str(), v["new"]["id"].as_str()),
        (Some("A"), Some("C"))
    );
    let run_c = scene.wait_leading_after("C", 1, 10 * SEC, &run_a);
    assert!(
        scene.runs().iter().all(|r| r.id.as_deref() != Some("B")),
        "B ran"
    );
    assert_no_overlap(&scene.after_running(run_c.pid, 300 * MS));
    assert!(a.is_running(), "A exited: {}", a.log_text());

    // Nobody by that name: exit 1, one line naming the candidates; C leads on.
    let out = scene.ask("resign", &["--to", "nobody"], 40 * SEC);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(
        err.contains("no candidate nobody") && err.contains("B"),
        "{err}"
    );
    // To the leader itself: nothing to do, said so.
    let out = scene.ask("resign", &["--to", "C"], 40 * SEC);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("already"), "{}", stderr_of(&out));
    leads_on(&scene, run_c.pid, SEC, "refused switchovers");
}

#[test]
fn list_shows_each_candidate_with_its_role_and_priority() {
    let (etcd, scene) = etcd_and_scene();
    let (_a, _run_a) = scene.leader("A", &["--ttl", "5"], &[]);
    let _b = scene
        .leaderrun("B")
        .args(&["--ttl", "5", "--priority", "3", "--preempt", "1m"])
        .fenced(&[])
        .spawn();
    scene.wait_candidates(&["A", "B"], 10 * SEC);
    // A key that is no candidate is listed as what it is.
    etcd.put(&format!("{}/stray", scene.election), "x");

    let out = scene.ask("list", &["--format", "json"], 20 * SEC);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let v = json(&stdout_of(&out));
    let rows = v.as_array().expect("an array");
    assert_eq!(rows.len(), 3, "{v}");
    assert_eq!(
        (rows[0]["role"].as_str(), rows[0]["id"].as_str()),
        (Some("leader"), Some("A"))
    );
    assert_eq!(rows[0]["priority"], 0);
    assert!(
        rows[0]["ttl_left"]
            .as_i64()
            .is_some_and(|t| (1..=5).contains(&t)),
        "{v}"
    );
    assert_eq!(
        (rows[1]["role"].as_str(), rows[1]["id"].as_str()),
        (Some("standby"), Some("B"))
    );
    assert_eq!(rows[1]["priority"], 3);
    assert_eq!(rows[1]["preempt"], "1m");
    assert!(
        rows[2]["role"].as_str().unwrap().contains("no lease"),
        "{v}"
    );

    let out = scene.ask("list", &[], 20 * SEC);
    let text = stdout_of(&out);
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(text.lines().nth(1).unwrap().starts_with("leader"), "{text}");
}

#[test]
fn history_lists_the_terms_newest_first_with_why_each_ended() {
    let (_etcd, scene) = etcd_and_scene();
    let (mut a, run_a) = scene.leader("A", &["--ttl", "5"], &[]);
    let _b = scene.standby("B", &["--ttl", "5"], &[], &["A", "B"]);
    let out = scene.ask("resign", &[], 40 * SEC);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let run_b = scene.wait_leading_after("B", 1, 10 * SEC, &run_a);

    let terms = poll_for(
        10 * SEC,
        || {
            json(&stdout_of(&scene.ask(
                "history",
                &["--format", "json"],
                20 * SEC,
            )))
        },
        |v| {
            v.as_array()
                .is_some_and(|t| t.len() == 2 && t[1]["reason"].is_string())
        },
    )
    .unwrap_or_else(|last| panic!("history: {last}"));
    let t = terms.as_array().unwrap();
    assert_eq!(t[0]["id"], "B");
    assert_eq!(t[0]["token"].as_i64(), Some(revision(&run_b)));
    assert!(
        t[0]["end_ms"].is_null() && t[0]["reason"].is_null(),
        "{terms}"
    );
    assert_eq!(t[1]["id"], "A");
    assert_eq!(t[1]["reason"], "step-down");
    assert!(
        t[1]["gap_to_next_ms"].as_u64().is_some_and(|g| g < 3000),
        "{terms}"
    );

    // A's crash: its term is closed by the next leader as lost.
    drop(_b);
    let out = scene.ask("history", &["--limit", "1"], 20 * SEC);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out).lines().count(), 2, "{}", stdout_of(&out));
    a.signal(Signal::SIGTERM);
    a.expect_exit(10 * SEC);
}

#[test]
fn absurd_priorities_and_policies_are_refused_before_anything_starts() {
    for (flag, value) in [
        ("--priority", "1001"),
        ("--priority", "-1"),
        ("--priority", "high"),
        ("--preempt", "soon"),
        ("--preempt", "0s"),
        ("--preempt", "500ms"),
    ] {
        let out = leaderrun()
            .args(["--election", "x", flag, value, "--", "true"])
            .output()
            .unwrap();
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {err}");
        assert_eq!(err.lines().count(), 1, "{err:?}");
        assert!(err.contains(flag), "{err}");
    }
    let out = leaderrun()
        .args(["history", "--election", "x", "--limit", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
}

#[test]
fn with_n_holders_the_n_best_hold() {
    let (_etcd, scene) = etcd_and_scene();
    let opts = ["--ttl", "5", "--holders", "2"];
    let mut a = scene.candidate("A", &opts, &[]);
    scene.wait_leading("A", 1, 10 * SEC);
    let _b = scene.candidate("B", &opts, &[]);
    scene.wait_leading("B", 1, 10 * SEC);
    let _c = scene.candidate("C", &opts, &[]);
    scene.wait_candidates(&["A", "B", "C"], 10 * SEC);
    let mut d_opts = opts.to_vec();
    d_opts.extend(["--priority", "5"]);
    let _d = scene.candidate("D", &d_opts, &[]);
    // C, waiting, moves behind D; the holders stay.
    wait_queue(&scene, &["A", "B", "D", "C"], 10 * SEC);
    a.signal(Signal::SIGTERM);
    scene.wait_leading("D", 1, 10 * SEC);
    a.expect_exit(10 * SEC);
    assert!(
        scene.runs().iter().all(|r| r.id.as_deref() != Some("C")),
        "C ran"
    );
}
