//! What happens when the child exits by itself: `--on-exit exit` (leaderrun exits with its
//! code), `recampaign` (the leader becomes a standby) and `restart` (in place, with backoff and a
//! restart limit), against real etcd.

mod common;

use std::time::Instant;

use common::*;
use nix::sys::signal::Signal;

// ---------------------------------------------------------------------------
// --on-exit exit and recampaign
// ---------------------------------------------------------------------------

/// A leads (`--ttl 10 --on-exit <on_exit>`) with a child that exits by itself with `code`
/// after 2.5 s; B (`--ttl 10`) is in line before that. Returns etcd, the scene, A, A's child's
/// run and B.
fn a_child_exits_soon_with_b_in_line(on_exit: &str, code: &str) -> (Etcd, Scene, Lr, Run, Lr) {
    let (etcd, scene) = etcd_and_scene();
    let (a, run_a) = scene.leader(
        "A",
        &["--ttl", "10", "--on-exit", on_exit],
        &["--exit-after", "2500", "--exit-code", code],
    );
    let b = scene.standby("B", &["--ttl", "10"], &[], &["A", "B"]);
    assert!(
        running_now(&scene.current(run_a.pid)),
        "A's child ended before B was a standby: the test's timing is too tight"
    );
    (etcd, scene, a, run_a, b)
}

/// B's child started less than 2 s after A's child `ended`.
fn assert_took_over_at_once(ended: &Run, run_b: &Run) {
    let gap = since(ended.last_seen_ns, run_b.start_ns);
    assert!(
        gap < 2 * SEC.as_nanos() as u64,
        "B started {:.3}s after A's child exited",
        secs(gap)
    );
}

#[test]
fn child_exit_with_on_exit_exit_ends_leaderrun_with_its_code() {
    let (_etcd, scene, mut a, run_a, _b) = a_child_exits_soon_with_b_in_line("exit", "7");

    a.expect_exit_code(10 * SEC, 7, "leaderrun must exit with its child's code");
    let ended = scene.current(run_a.pid);
    assert_eq!(ended.ending, Ending::Exit);
    let run_b = scene.wait_leading("B", 1, 5 * SEC);
    assert_took_over_at_once(&ended, &run_b);
    assert_no_overlap(&scene.runs());
    // The child's end is one line, and a run that went as asked warns of nothing.
    let log = a.log_text();
    let ends: Vec<&str> = log
        .lines()
        .filter(|l| {
            ["child exited", "child stopped", "stopping"]
                .iter()
                .any(|w| l.contains(w))
        })
        .collect();
    assert_eq!(ends.len(), 1, "{log}");
    assert!(ends[0].contains("child exited status=exit code 7"), "{log}");
    assert_eq!(a.warnings(), Vec::<String>::new());
}

/// A child that exits and leaves a background job in its group: its end is one line, the
/// job's stop another, with other words (not a second "child stopped").
#[test]
fn a_child_that_leaves_a_job_behind_ends_in_one_line_and_its_job_is_stopped() {
    let (_etcd, scene) = etcd_and_scene();
    let mut a = scene.candidate_sh("A", &["--ttl", "5"], "sleep 60 & sleep 0.5; exit 3");
    a.expect_exit_code(15 * SEC, 3, "leaderrun must exit with its child's code");
    let log = a.log_text();
    let said = |words: &str| log.lines().filter(|l| l.contains(words)).count();
    assert_eq!(said("child exited status=exit code 3"), 1, "{log}");
    assert_eq!(
        said("stopping what is left of the child's process group"),
        1,
        "{log}"
    );
    assert_eq!(said("child stopped") + said("stopping child"), 0, "{log}");
}

#[test]
fn child_exit_with_on_exit_recampaign_makes_the_leader_a_standby() {
    let (_etcd, scene, mut a, first, mut b) = a_child_exits_soon_with_b_in_line("recampaign", "3");

    // A's child exits by itself: B takes over at once; A stays, as a standby.
    let run_b = scene.wait_leading("B", 1, 10 * SEC);
    let ended = scene.current(first.pid);
    assert_eq!(ended.ending, Ending::Exit);
    assert_took_over_at_once(&ended, &run_b);
    scene.wait_candidates(&["A", "B"], 10 * SEC);
    assert!(a.is_running(), "A exited instead of recampaigning");
    assert_eq!(
        runs_of(&scene.runs(), "A").len(),
        1,
        "A ran again while B led"
    );

    // B stops: A wins again, with a newer fencing token.
    b.signal(Signal::SIGTERM);
    assert_eq!(b.expect_exit(5 * SEC).code(), Some(0));
    scene.wait_leading_after("A", 2, 5 * SEC, &run_b);
    assert!(a.is_running(), "A exited after leading again");
    assert_no_overlap(&scene.runs());
}

// ---------------------------------------------------------------------------
// --on-exit restart
// ---------------------------------------------------------------------------

#[test]
fn on_exit_restart_restarts_in_place_with_growing_backoff() {
    let (_etcd, scene) = etcd_and_scene();
    let mut a = scene.candidate(
        "A",
        &["--on-exit", "restart"],
        &["--exit-after", "200", "--exit-code", "3"],
    );
    let runs = scene.wait_runs(15 * SEC, "three starts of A's child", |runs| {
        runs.len() >= 3
    });
    assert!(a.is_running(), "leaderrun exited instead of restarting");
    let rev = revision(&runs[0]);
    for r in &runs {
        assert_eq!(r.id.as_deref(), Some("A"), "{r:?}");
        assert_eq!(
            revision(r),
            rev,
            "a restart in place keeps the token: {r:?}"
        );
    }
    assert_eq!(runs[0].ending, Ending::Exit);
    assert_eq!(runs[1].ending, Ending::Exit);
    let gap1 = runs[1].start_ns.saturating_sub(runs[0].last_seen_ns);
    let gap2 = runs[2].start_ns.saturating_sub(runs[1].last_seen_ns);
    assert!(
        gap1 >= 800 * MS.as_nanos() as u64,
        "first restart after {:.3}s (backoff 1 s)",
        secs(gap1)
    );
    assert!(
        gap2 > gap1,
        "restart gaps do not grow: {:.3}s then {:.3}s",
        secs(gap1),
        secs(gap2)
    );
    assert!(
        gap2 >= 1600 * MS.as_nanos() as u64,
        "second restart after {:.3}s (backoff 2 s)",
        secs(gap2)
    );
    // Leadership was kept all along: still one key, still A's.
    let keys = scene.candidates();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0].1, "A");
    assert!(a.is_running());
    assert_no_overlap(&runs);

    a.signal(Signal::SIGTERM);
    let status = a.expect_exit(10 * SEC);
    assert!(
        matches!(status.code(), Some(0) | Some(3)),
        "the child's status (0 on TERM, 3 on its own exit): {status}"
    );
}

#[test]
fn on_exit_restart_resigns_after_the_restart_limit_and_the_standby_takes_over() {
    let (_etcd, scene) = etcd_and_scene();
    let mut a = scene.candidate(
        "A",
        &[
            "--on-exit",
            "restart",
            "--restart-limit",
            "2",
            "--restart-window",
            "30s",
        ],
        &["--exit-after", "500", "--exit-code", "5"],
    );
    scene.wait_runs(10 * SEC, "A's child to start", |runs| !runs.is_empty());
    let _b = scene.standby("B", &[], &[], &["A", "B"]);

    let runs = scene.wait_runs(15 * SEC, "B's child to start", |runs| {
        runs.iter().any(|r| r.id.as_deref() == Some("B"))
    });
    let (of_a, of_b): (Vec<&Run>, Vec<&Run>) =
        runs.iter().partition(|r| r.id.as_deref() == Some("A"));
    assert_eq!(of_a.len(), 2, "A's child ran {} times, limit 2", of_a.len());
    assert_eq!(revision(of_a[0]), revision(of_a[1]), "{of_a:?}");
    assert!(of_a.iter().all(|r| r.ending == Ending::Exit), "{of_a:?}");
    assert_eq!(of_b.len(), 1);
    assert!(
        revision(of_b[0]) > revision(of_a[1]),
        "B's token {} not above A's {}",
        revision(of_b[0]),
        revision(of_a[1])
    );
    assert!(
        a.log_text().contains("too many exits"),
        "A's log does not say why it resigned"
    );
    // A campaigns again, as a standby behind B.
    scene.wait_candidates(&["A", "B"], 10 * SEC);
    assert!(a.is_running(), "A exited instead of campaigning again");
    assert_no_overlap(&scene.runs());
    assert_eq!(
        scene
            .runs()
            .iter()
            .filter(|r| r.id.as_deref() == Some("A"))
            .count(),
        2,
        "A ran again while B led"
    );
}

#[test]
fn sigterm_during_the_restart_backoff_exits_at_once_with_the_last_status() {
    let (_etcd, scene) = etcd_and_scene();
    let marker = scene.path("ran");
    let mut a = scene.candidate_sh(
        "A",
        &["--on-exit", "restart"],
        &format!("echo run >> '{}'; exit 9", marker.display()),
    );
    // Second exit: the next restart is 2 s away.
    let restarting = "restarting the child in place";
    assert!(
        wait_until(15 * SEC, 5 * MS, || a
            .log_text()
            .matches(restarting)
            .count()
            >= 2),
        "no second restart scheduled"
    );
    let t0 = Instant::now();
    a.signal(Signal::SIGTERM);
    let status = a.expect_exit(10 * SEC);
    let took = t0.elapsed();
    assert_eq!(status.code(), Some(9), "the last child's status: {status}");
    assert!(
        took < 1200 * MS,
        "took {took:?} to exit during a 2 s backoff"
    );
    assert_eq!(lines(&marker).len(), 2, "the child started again");
    scene.wait_candidates(&[], 5 * SEC);
}
