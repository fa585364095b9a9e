//! Leading and standing by against real etcd: one leader at a time, handover on SIGTERM and
//! SIGKILL, the leader key deleted, taking turns with `etcdctl elect`, the fencing revision,
//! signals passed to the child, standbys told to stop, frozen or out of line.
//!
//! Every test starts its own etcd and runs candidates whose child is `examples/fenced_child`
//! (see tests/common/scene.rs); a failing test prints every log's tail and the runs.

mod common;

use std::time::Instant;

use common::*;
use nix::sys::signal::Signal;

// ---------------------------------------------------------------------------
// One leader, one standby
// ---------------------------------------------------------------------------

#[test]
fn one_candidate_leads_and_a_second_one_waits() {
    let (_etcd, scene) = etcd_and_scene();
    let (mut a, run_a) = scene.leader("A", &["--ttl", "3"], &[]);
    assert!(run_a.revision.is_some(), "LEADERRUN_REVISION missing");

    let mut b = scene.standby(
        "B",
        &["--ttl", "3", "--log-format", "json"],
        &[],
        &["A", "B"],
    );
    // Longer than a TTL: keepalives, not luck, keep A leading.
    let quiet = holds_for(4 * SEC, || {
        let runs = scene.runs();
        runs_of(&runs, "B").is_empty() && running_now(&scene.current(run_a.pid))
    });
    assert!(quiet, "B's child started, or A's stopped, while A led");
    assert!(a.is_running() && b.is_running());
    let runs = scene.runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let json = b.log_text();
    assert!(
        !json.is_empty() && json.lines().all(|l| l.starts_with('{') && l.ends_with('}')),
        "--log-format json wrote non-JSON lines:\n{json}"
    );
    // Flat objects, each with the election and the candidate id; numbers as numbers.
    for l in json.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert_eq!(v["election"], "svc", "{l}");
        assert_eq!(v["id"], "B", "{l}");
        assert!(v["message"].is_string() && v.get("fields").is_none(), "{l}");
        assert!(
            v.as_object().unwrap().values().all(|f| !f.is_object()),
            "{l}"
        );
    }
    let granted = json
        .lines()
        .find(|l| l.contains("lease granted"))
        .expect("lease granted");
    let v: serde_json::Value = serde_json::from_str(granted).unwrap();
    assert_eq!(v["ttl_ms"], 3000, "{granted}");
}

// ---------------------------------------------------------------------------
// Handover: SIGTERM and SIGKILL to the leader
// ---------------------------------------------------------------------------

#[test]
fn sigterm_to_the_leader_hands_over_well_under_the_ttl() {
    let (_etcd, scene) = etcd_and_scene();
    let (mut a, run_a) = scene.leader("A", &["--ttl", "10"], &[]);
    // B's child ignores SIGTERM: its turn shows the stop timeout and SIGKILL.
    let mut b = scene.standby(
        "B",
        &["--ttl", "10", "--stop-timeout", "1s"],
        &["--ignore-term"],
        &["A", "B"],
    );

    let run_b = scene.sigterm_handover(&mut a, &run_a, "B", 3 * SEC, "to B");

    // Second round: a child that ignores the stop signal is SIGKILLed after
    // --stop-timeout; leaderrun exits 128+9 and the next leader starts after.
    let _c = scene.standby("C", &["--ttl", "10"], &[], &["B", "C"]);
    let (_, handover) = scene.handover(&b, Signal::SIGTERM, "C", 10 * SEC);
    assert!(
        (900 * MS.as_nanos() as u64..5 * SEC.as_nanos() as u64).contains(&handover),
        "C started {:.3}s after SIGTERM to B (stop timeout 1 s)",
        secs(handover)
    );
    b.expect_exit_code(5 * SEC, 137, "B's child was SIGKILLed");
    let killed = scene.current(run_b.pid);
    assert_eq!(killed.ending, Ending::Killed, "{killed:?}");
    assert!(killed.terms_ignored >= 1, "{killed:?}");
    assert_no_overlap(&scene.runs());
}

#[test]
fn sigkill_of_the_leader_takes_its_child_down_and_the_standby_starts_once_it_is_gone() {
    let (_etcd, scene) = etcd_and_scene();
    let (mut a, run_a) = scene.leader("A", &["--ttl", "3"], &[]);
    let _b = scene.standby("B", &["--ttl", "3"], &[], &["A", "B"]);
    assert!(process_alive(run_a.pid));

    let t0 = mono_now_ns();
    a.kill();
    assert!(
        wait_until(SEC, 5 * MS, || !process_alive(run_a.pid)),
        "A's child {} outlived A by more than 1 s",
        run_a.pid
    );
    let run_b = scene.wait_leading("B", 1, 3 * SEC + 5 * SEC);
    assert_no_overlap(&scene.after_running(run_b.pid, 300 * MS));
    // A's guardian revokes the lease once A's child is gone (tests/crash.rs has the rest).
    let b_start = since(t0, run_b.start_ns);
    assert!(
        b_start < 2 * SEC.as_nanos() as u64,
        "B started {:.3}s after A was killed: A's lease was not revoked",
        secs(b_start)
    );
    let dead = scene.current(run_a.pid);
    assert!(dead.last_seen_ns < run_b.start_ns, "{dead:?} {run_b:?}");
    assert_no_overlap(&scene.runs());
}

#[test]
fn sigkill_of_the_leader_takes_the_childs_whole_group_down() {
    // The command forks: a shell that runs the real program as its child
    // (the `; true` stops the shell from exec'ing it). A SIGKILLed leaderrun
    // cannot stop anything itself; its parent-death signal reaches the shell
    // only. The program must die too, or it runs on next to the new leader's.
    let (_etcd, scene) = etcd_and_scene();
    let wrapper = format!("{}; true", scene.fenced_words(&[]));
    let mut a = scene.candidate_sh("A", &["--ttl", "3"], &wrapper);
    let run_a = scene.wait_leading("A", 1, 10 * SEC);
    let _b = scene.standby("B", &["--ttl", "3"], &[], &["A", "B"]);

    a.kill();
    let died = wait_until(SEC, 5 * MS, || !process_alive(run_a.pid));
    let run_b = scene.wait_leading("B", 1, 3 * SEC + 5 * SEC);
    let runs = scene.after_running(run_b.pid, 300 * MS);
    assert!(
        died,
        "A's command forked a program ({}) that outlived the SIGKILLed leaderrun",
        run_a.pid
    );
    assert_no_overlap(&runs);
}

// ---------------------------------------------------------------------------
// An operator deletes the leader key
// ---------------------------------------------------------------------------

#[test]
fn deleting_the_leader_key_stops_the_child_and_the_candidate_campaigns_again() {
    let (etcd, scene) = etcd_and_scene();
    let (mut a, first) = scene.leader("A", &["--ttl", "10"], &[]);
    let keys = scene.candidates();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key = keys[0].0.clone();

    let t0 = mono_now_ns();
    etcd.etcdctl_ok(&["del", &key]);
    let ended = scene
        .wait_runs(5 * SEC, "A's first child to end", |runs| {
            runs.iter()
                .any(|r| r.pid == first.pid && r.ending != Ending::Killed)
        })
        .into_iter()
        .find(|r| r.pid == first.pid)
        .unwrap();
    assert_eq!(ended.ending, Ending::Term);
    let took = since(t0, ended.last_seen_ns);
    assert!(
        took < 2 * SEC.as_nanos() as u64,
        "child stopped {:.3}s after the delete",
        secs(took)
    );

    scene.wait_leading_after("A", 2, 10 * SEC, &first);
    assert!(a.is_running());
    assert_no_overlap(&scene.runs());
}

/// A standby started on the queue's proof watches its own key from the read that began that
/// proof, which etcd may have compacted since (a long wait). It must lead without trouble
/// logged, and still stop its child when an operator deletes its key.
#[test]
fn a_leader_whose_proof_began_before_a_compaction_still_watches_its_key() {
    let (etcd, scene) = etcd_and_scene();
    let (mut a, _) = scene.leader("A", &["--ttl", "5"], &[]);
    let b = scene.standby("B", &["--ttl", "5"], &[], &["A", "B"]);
    let mut revision = 0;
    for i in 0..5 {
        let out = etcd.etcdctl_ok(&["put", "-w", "json", "unrelated", &i.to_string()]);
        let at = out.split("\"revision\":").nth(1).unwrap_or_default();
        let digits: String = at.chars().take_while(char::is_ascii_digit).collect();
        revision = digits
            .parse()
            .unwrap_or_else(|_| panic!("no revision in {out}"));
    }
    etcd.etcdctl_ok(&["compact", &revision.to_string()]);

    a.signal(Signal::SIGTERM);
    assert_eq!(a.expect_exit(5 * SEC).code(), Some(0));
    let run = scene.wait_leading("B", 1, 5 * SEC);
    etcd.etcdctl_ok(&["del", &scene.key_of("B").expect("B's key")]);
    assert_eq!(
        scene.wait_ended(run.pid, 5 * SEC, false).ending,
        Ending::Term
    );
    let log = b.log_with("verified=", 5 * SEC);
    assert!(log.contains("verified=queue"), "{log}");
    assert!(!log.contains("watch on own key"), "{log}");
    assert_no_overlap(&scene.runs());
}

// ---------------------------------------------------------------------------
// Taking turns with `etcdctl elect`
// ---------------------------------------------------------------------------

#[test]
fn leaderrun_and_etcdctl_elect_take_turns() {
    let (_etcd, scene) = etcd_and_scene();
    let name = scene.election.clone();

    // etcdctl elect leads first.
    let first = scene.start(
        "etcdctl-first",
        &mut etcdctl_command(&scene.etcd, &["elect", &name, "first"]),
    );
    let first_out = scene.dir.join("etcdctl-first.out");
    assert!(
        wait_until(10 * SEC, POLL, || file_has(&first_out, "first")),
        "etcdctl elect did not win an empty election"
    );
    let mut a = scene.standby("lr-A", &["--ttl", "3"], &[], &["first", "lr-A"]);
    assert!(
        holds_for(2 * SEC, || scene.runs().is_empty()),
        "leaderrun's child started while etcdctl elect led"
    );

    // SIGINT makes etcdctl elect resign: leaderrun wins at once.
    let (run, took) = scene.handover(&first, Signal::SIGINT, "lr-A", 5 * SEC);
    assert!(
        took < 3 * SEC.as_nanos() as u64,
        "leaderrun won {:.3}s after etcdctl resigned",
        secs(took)
    );

    // `etcdctl elect -l` shows leaderrun's id as the leader.
    let observer = scene.start(
        "etcdctl-observe",
        &mut etcdctl_command(&scene.etcd, &["elect", "-l", &name]),
    );
    let observe_out = scene.dir.join("etcdctl-observe.out");
    assert!(
        wait_until(5 * SEC, POLL, || file_has(&observe_out, "lr-A")),
        "etcdctl elect -l did not show lr-A"
    );
    drop(observer);
    let shown = std::fs::read_to_string(&observe_out).unwrap();
    let lines: Vec<&str> = shown.lines().collect();
    assert!(
        lines.len() >= 2 && lines[0].starts_with(&format!("{name}/")) && lines[1] == "lr-A",
        "etcdctl elect -l printed {shown:?}"
    );

    // Now etcdctl elect waits for leaderrun.
    let mut second = scene.start(
        "etcdctl-v2",
        &mut etcdctl_command(&scene.etcd, &["elect", &name, "v2"]),
    );
    let second_out = scene.dir.join("etcdctl-v2.out");
    scene.wait_candidates(&["lr-A", "v2"], 10 * SEC);
    assert!(
        holds_for(2 * SEC, || !file_has(&second_out, "v2")),
        "etcdctl elect won while leaderrun led"
    );
    a.signal(Signal::SIGTERM);
    assert!(
        wait_until(5 * SEC, POLL, || file_has(&second_out, "v2")),
        "etcdctl elect did not win after leaderrun's SIGTERM"
    );
    // leaderrun resigned only after its child was gone.
    assert_eq!(scene.current(run.pid).ending, Ending::Term);
    assert_eq!(a.expect_exit(5 * SEC).code(), Some(0));
    assert!(
        second.is_running(),
        "etcdctl elect v2 should hold the leadership"
    );
}

// ---------------------------------------------------------------------------
// The fencing token
// ---------------------------------------------------------------------------

#[test]
fn leaderrun_revision_grows_strictly_from_one_leader_to_the_next() {
    let (_etcd, scene) = etcd_and_scene();
    let mut all: Vec<Lr> = Vec::new();
    // One at a time, so they line up in this order.
    for (n, id) in ["c0", "c1", "c2"].into_iter().enumerate() {
        all.push(scene.candidate(id, &["--ttl", "3"], &[]));
        scene.wait_candidates(&["c0", "c1", "c2"][..=n], 10 * SEC);
    }
    scene.wait_leading("c0", 1, 10 * SEC);

    let handovers = 5;
    for round in 0..handovers {
        let runs = scene.wait_runs(5 * SEC, "a leader", |runs| runs.len() == round + 1);
        let leader_id = runs.last().unwrap().id.clone().unwrap();
        let idx = all.iter().position(|l| l.id == leader_id).unwrap();
        let mut leader = all.remove(idx);
        let t0 = mono_now_ns();
        leader.signal(Signal::SIGTERM);
        let next = scene.wait_runs(5 * SEC, "the next leader", |runs| runs.len() == round + 2);
        let took = since(t0, next.last().unwrap().start_ns);
        assert!(
            took < 3 * SEC.as_nanos() as u64,
            "round {round}: handover {:.3}s",
            secs(took)
        );
        assert_eq!(leader.expect_exit(5 * SEC).code(), Some(0));
        // Restart a candidate in its place.
        let id = format!("c{}", round + 3);
        all.push(scene.candidate(&id, &["--ttl", "3"], &[]));
        let ids: Vec<String> = all.iter().map(|l| l.id.clone()).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        scene.wait_candidates(&ids, 10 * SEC);
    }
    let runs = scene.runs();
    assert_eq!(runs.len(), handovers + 1, "{runs:?}");
    let revs: Vec<i64> = runs.iter().map(revision).collect();
    assert!(
        revs.windows(2).all(|w| w[0] < w[1]),
        "revisions not strictly growing: {revs:?}"
    );
    assert_no_overlap(&runs);
}

// ---------------------------------------------------------------------------
// Signals passed to the child's group
// ---------------------------------------------------------------------------

/// What leaderrun passes on to the child.
const FORWARDED: [Signal; 9] = leaderrun::FORWARDED_SIGNALS;

#[test]
fn signals_meant_for_the_child_reach_its_whole_group() {
    let (_etcd, scene) = etcd_and_scene();
    let got = scene.dir.join("signals");
    let ready = scene.dir.join("ready");
    // A shell with a background subshell: both in the child's process group.
    // Both loops end once the temp dir is gone, so a failed test leaks nothing.
    // Each writes its ready file once its trap is set.
    let ready_sub = scene.dir.join("ready-grandchild");
    let traps: String = FORWARDED
        .iter()
        .map(|sig| {
            let name = &sig.as_str()[3..];
            format!(
                "trap 'echo {name}-child >> {got}' {name}; ",
                got = got.display()
            )
        })
        .collect();
    let script = format!(
        "(trap 'echo HUP-grandchild >> {got}' HUP; echo ready > {ready_sub}; \
          while [ -e {dir} ]; do sleep 0.1; done) & \
         {traps} echo ready > {ready}; while [ -e {dir} ]; do sleep 0.1; done",
        got = got.display(),
        ready = ready.display(),
        ready_sub = ready_sub.display(),
        dir = scene.dir.path().display(),
    );
    let mut a = scene.candidate_sh("A", &["--ttl", "3"], &script);
    assert!(
        wait_until(10 * SEC, POLL, || ready.exists() && ready_sub.exists()),
        "the child never started"
    );

    let guardian = guardian_of(a.pid()).expect("A has a guardian");
    a.signal(Signal::SIGHUP);
    assert!(
        wait_until(5 * SEC, POLL, || file_has(&got, "HUP-child")
            && file_has(&got, "HUP-grandchild")),
        "SIGHUP did not reach the child's group; got {:?}",
        std::fs::read_to_string(&got).unwrap_or_default()
    );
    for sig in FORWARDED {
        a.signal(sig);
        // As `systemctl kill -s SIG` does: to every process of the unit, the guardian too.
        signal_pid(guardian, sig);
        let name = &sig.as_str()[3..];
        assert!(
            wait_until(5 * SEC, POLL, || file_has(&got, &format!("{name}-child"))),
            "{sig} did not reach the child; got {:?}",
            std::fs::read_to_string(&got).unwrap_or_default()
        );
    }
    assert!(
        a.is_running(),
        "leaderrun died of a signal meant for its child"
    );
    assert!(
        process_alive(guardian),
        "the guardian died of a signal meant for the child"
    );

    // SIGTERM kills the shell (no trap for it): 128 + 15.
    a.signal(Signal::SIGTERM);
    let status = a.expect_exit(10 * SEC);
    assert_eq!(status.code(), Some(143), "{status}");
}

// ---------------------------------------------------------------------------
// Standbys
// ---------------------------------------------------------------------------

/// Lease ids etcd holds now (`etcdctl lease list`).
fn leases(etcd: &Etcd) -> Vec<String> {
    let out = etcd.etcdctl_ok(&["lease", "list"]);
    out.lines()
        .skip(1)
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn a_standby_exits_0_at_once_on_sigterm_or_sigint() {
    let (etcd, scene) = etcd_and_scene();
    let (mut a, run_a) = scene.leader("A", &["--ttl", "10"], &[]);
    let mut b = scene.candidate("B", &["--ttl", "10"], &[]);
    let mut c = scene.standby("C", &["--ttl", "10"], &[], &["A", "B", "C"]);

    // Signals meant for a child do nothing to a standby (it has no child).
    for sig in FORWARDED {
        b.signal(sig);
    }
    assert!(
        holds_for(SEC, || b.is_running()),
        "a standby died of a signal meant for a child"
    );
    scene.wait_candidates(&["A", "B", "C"], 2 * SEC);

    for (standby, sig) in [(&mut b, Signal::SIGTERM), (&mut c, Signal::SIGINT)] {
        let t0 = Instant::now();
        standby.signal(sig);
        let status = standby.expect_exit(5 * SEC);
        let took = t0.elapsed();
        assert_eq!(status.code(), Some(0), "{} on {sig}: {status}", standby.id);
        assert!(
            took < 2 * SEC,
            "{} took {took:?} to exit on {sig}",
            standby.id
        );
    }
    // Their keys and leases are gone at once (revoked, not left to expire),
    // and A leads on.
    scene.wait_candidates(&["A"], 2 * SEC);
    if let Err(left) = poll_for(2 * SEC, || leases(&etcd), |left| left.len() == 1) {
        panic!("the standbys' leases were not revoked: {left:?}");
    }
    assert!(running_now(&scene.current(run_a.pid)));
    assert!(a.is_running());
    assert_eq!(scene.runs().len(), 1);
}

/// A leads, B then C stand in line, C watching both. B leaves (SIGTERM: it withdraws, its key
/// goes): A is still ahead of C. C must not start a child, and waits on with the same key (its
/// place in line and its fencing revision), not with a new lease at the back; it leads with
/// that key after A.
#[test]
fn a_candidate_whose_predecessor_left_waits_on_in_its_place() {
    let (_etcd, scene) = etcd_and_scene();
    let (mut a, run_a) = scene.leader("A", &["--ttl", "5"], &[]);
    let mut b = scene.standby("B", &["--ttl", "5"], &[], &["A", "B"]);
    let c = scene.standby("C", &["--ttl", "5"], &[], &["A", "B", "C"]);
    let c_key = scene.key_of("C").expect("C's key");

    b.signal(Signal::SIGTERM);
    assert_eq!(b.expect_exit(5 * SEC).code(), Some(0));
    scene.wait_candidates(&["A", "C"], 5 * SEC);
    assert!(
        holds_for(2 * SEC, || runs_of(&scene.runs(), "C").is_empty()),
        "C started a child while A leads"
    );
    assert_eq!(scene.key_of("C"), Some(c_key.clone()), "C lost its place");
    assert!(running_now(&scene.current(run_a.pid)));

    a.signal(Signal::SIGTERM);
    assert_eq!(a.expect_exit(5 * SEC).code(), Some(0));
    scene.wait_leading("C", 1, 5 * SEC);
    assert_eq!(scene.key_of("C"), Some(c_key), "C leads with another key");
    assert!(
        !c.log_text().contains("new lease"),
        "C campaigned again:\n{}",
        c.log_text()
    );
    assert_no_overlap(&scene.runs());
}

/// The verify-before-start rule on the queue's proof. A leads; B, C and D stand in line, D
/// too far back for its read to list the whole line ahead of it. Each leader in turn is
/// stopped: the next in line leads with the key it first wrote, its start verified by the
/// queue (the read that listed the line ahead, and the deletions watched since), not by a read
/// after the deletion; never two children at once.
#[test]
fn verify_before_start_on_the_queues_proof_hands_over_in_line_order() {
    let (_etcd, scene) = etcd_and_scene();
    let ttl = ["--ttl", "5"];
    let (a, _) = scene.leader("A", &ttl, &[]);
    let ids = ["A", "B", "C", "D"];
    let mut line = vec![a];
    for n in 2..=ids.len() {
        line.push(scene.standby(ids[n - 1], &ttl, &[], &ids[..n]));
    }
    let first_keys = scene.candidates();
    for i in 0..ids.len() - 1 {
        line[i].signal(Signal::SIGTERM);
        assert_eq!(line[i].expect_exit(5 * SEC).code(), Some(0));
        let next = ids[i + 1];
        scene.wait_leading(next, 1, 5 * SEC);
        let key = first_keys.iter().find(|(_, v)| v == next).map(|(k, _)| k);
        let leads = |log: &str| {
            key.is_some_and(|k| log.contains(&format!("leading: child started key={k} ")))
        };
        let log = line[i + 1].log_with("leading: child started", 5 * SEC);
        assert!(leads(&log), "{next} leads with another key:\n{log}");
        assert!(
            log.contains("verified=queue"),
            "{next} was not verified by the queue:\n{log}"
        );
        assert!(
            !log.contains("new lease"),
            "{next} campaigned again:\n{log}"
        );
    }
    assert_no_overlap(&scene.runs());
}

/// A waiting candidate whose line ahead is not known whole lets a handover pass before it
/// reads the line again (holders::SETTLE), watching on meanwhile. A leads; B, C and D stand in
/// line, D too far back to know its line whole (it watches C and B). B withdraws (D's line
/// moves up: it settles), then A and C hand over right after (usually within the settle: D
/// sees C go and reads at once; else it read when the settle ended): D leads on the queue's
/// proof, with its first key, never beside C.
#[test]
fn a_candidate_that_lets_a_handover_pass_still_sees_its_turn() {
    let (_etcd, scene) = etcd_and_scene();
    let ttl = ["--ttl", "5"];
    let (mut a, _) = scene.leader("A", &ttl, &[]);
    let mut b = scene.standby("B", &ttl, &[], &["A", "B"]);
    let c = scene.standby("C", &ttl, &[], &["A", "B", "C"]);
    let debug = ["--ttl", "5", "--log-level", "debug"];
    let d = scene.standby("D", &debug, &[], &["A", "B", "C", "D"]);
    let d_key = scene.key_of("D").expect("D's key");
    let log = d.log_with("waiting for one of the holders", 5 * SEC);
    assert!(log.contains("whole=false"), "{log}");

    for lr in [&b, &a] {
        lr.signal(Signal::SIGTERM);
    }
    assert_eq!(b.expect_exit(5 * SEC).code(), Some(0));
    assert_eq!(a.expect_exit(5 * SEC).code(), Some(0));
    let run_c = scene.wait_leading("C", 1, 5 * SEC);
    c.signal(Signal::SIGTERM);
    let run_d = scene.wait_leading_after("D", 1, 5 * SEC, &run_c);
    assert!(running_now(&scene.current(run_d.pid)));
    let log = d.log_with("leading: child started", 5 * SEC);
    assert!(
        log.contains(&format!("leading: child started key={d_key} ")),
        "D leads with another key:
{log}"
    );
    assert!(log.contains("verified=queue"), "{log}");
    assert_no_overlap(&scene.runs());
}

/// A leads, B then C stand in line (`--ttl ttl`). `take_b_out` takes B out of line behind its
/// back; then A resigns. Whatever etcd tells B's pending campaign (etcd issue 19597: phantom
/// leadership), C must lead, B must not start a child for 3 s after `then` (while C leads), and
/// B must get back in line, behind C.
fn b_taken_out_of_line_does_not_lead_out_of_turn(
    ttl: &str,
    take_b_out: impl FnOnce(&Etcd, &Scene, &Lr),
    then: impl FnOnce(&Lr),
    out_of_turn: &str,
) {
    let (etcd, scene) = etcd_and_scene();
    let (mut a, _) = scene.leader("A", &["--ttl", ttl], &[]);
    let mut b = scene.standby("B", &["--ttl", ttl], &[], &["A", "B"]);
    let _c = scene.standby("C", &["--ttl", ttl], &[], &["A", "B", "C"]);

    take_b_out(&etcd, &scene, &b);
    a.signal(Signal::SIGTERM);
    assert_eq!(a.expect_exit(5 * SEC).code(), Some(0));
    let run_c = scene.wait_leading("C", 1, 5 * SEC);
    then(&b);
    assert!(
        holds_for(3 * SEC, || runs_of(&scene.runs(), "B").is_empty()),
        "{out_of_turn}"
    );
    assert!(running_now(&scene.current(run_c.pid)));
    scene.wait_candidates(&["B", "C"], 10 * SEC);
    assert!(b.is_running());
    assert_no_overlap(&scene.runs());
}

/// B freezes while its campaign is pending; its lease expires, its key goes. When A resigns,
/// the server answers both pending campaigns, B's included although B's key is gone. B thaws,
/// must not lead, and campaigns again with a fresh lease, as a standby behind C.
#[test]
fn a_frozen_standby_whose_lease_expired_does_not_lead_after_it_thaws() {
    b_taken_out_of_line_does_not_lead_out_of_turn(
        "3",
        |_, scene, b| {
            b.signal(Signal::SIGSTOP);
            scene.wait_candidates(&["A", "C"], 3 * SEC + 5 * SEC);
        },
        |b| b.signal(Signal::SIGCONT),
        "B started a child after its lease expired, while C leads",
    );
}

/// B's key goes, its lease stays. B's pending campaign alone would wait on for the keys created
/// before its old one, and be told "elected" when A resigns although C is first (phantom
/// leadership). B must not lead out of turn, and must get back in line, behind C: its wait
/// watches its own key with the keys ahead.
#[test]
fn a_standby_whose_key_was_deleted_never_leads_out_of_turn_and_gets_back_in_line() {
    b_taken_out_of_line_does_not_lead_out_of_turn(
        "10",
        |etcd, scene, _| {
            etcd.etcdctl_ok(&["del", &scene.key_of("B").expect("B's key")]);
        },
        |_| {},
        "B started a child out of turn while C leads",
    );
}
