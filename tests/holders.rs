//! `--holders N`: at most N children across all hosts at once, against real etcd. Every
//! scenario counts, from the fenced children's own records, how many ran at once: never more
//! than N, and exactly N once settled.
//!
//! Measured figures are printed with `eprintln!`: `cargo test --test holders -- --nocapture`.

mod common;

use common::*;
use nix::sys::signal::Signal;
use std::time::Duration;

const TTL: u32 = 3;

/// The children running now.
fn running(scene: &Scene) -> Vec<Run> {
    scene.runs().into_iter().filter(running_now).collect()
}

/// Waits (<= `timeout`) until exactly `n` children run, and they keep running for a second with
/// no other starting; returns them.
fn settled(scene: &Scene, n: usize, timeout: Duration, what: &str) -> Vec<Run> {
    let got = poll_for(timeout, || running(scene), |r| r.len() == n).unwrap_or_else(|r| {
        panic!(
            "{what}: {} children run, not {n}, after {timeout:?}: {r:#?}",
            r.len()
        )
    });
    let pids: Vec<u32> = got.iter().map(|r| r.pid).collect();
    let mut now = Vec::new();
    let steady = holds_for(SEC, || {
        now = running(scene);
        now.len() == n && now.iter().all(|r| pids.contains(&r.pid))
    });
    assert!(steady, "{what}: not steady at {n} children: {now:#?}");
    got
}

/// The first in the queue, whose place is taken away next, and the one in line for it (the
/// fourth): the first's id, its index in `ids`, its run in `holding`, and the next one's id.
fn first_and_next(scene: &Scene, ids: &[&str], holding: &[Run]) -> (String, usize, Run, String) {
    let line = scene.candidate_ids();
    let (first, next) = (line[0].clone(), line[3].clone());
    let index = ids.iter().position(|id| **id == *first).unwrap();
    let run = holding
        .iter()
        .find(|r| r.id.as_deref() == Some(&first))
        .unwrap()
        .clone();
    (first, index, run, next)
}

/// `leaderrun leader --endpoints E --election <election> extra...`, run to completion.
fn ask_leader(scene: &Scene, extra: &[&str]) -> std::process::Output {
    scene.ask("leader", extra, 15 * SEC)
}

/// `lr` exits 2 with one line on stderr naming everything in `words`; returns that line.
fn refused(lr: &mut Lr, words: &[&str]) -> String {
    lr.expect_exit_code(15 * SEC, 2, "a candidate that disagrees on --holders");
    let log = lr.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("every candidate of one election must use the same --holders"))
        .unwrap_or_else(|| panic!("{}: no refusal in its log:\n{log}", lr.id));
    for w in words {
        assert!(line.contains(w), "{}: {w:?} not in {line:?}", lr.id);
    }
    line.to_string()
}

#[test]
fn the_concurrency_counter_counts_runs_alive_at_once() {
    let runs = common::records::parse(
        "start 1 100 1 A\nstart 2 150 2 B\nend 1 200 term\nstart 3 200 3 C\n\
         alive 2 300\nstart 4 301 4 D\nend 3 400 term\n",
    )
    .unwrap();
    // 1, 2 and 3 at 200 (touching counts), then 2 ends at 300, before 4 starts.
    assert_eq!(max_concurrent(&runs), 3);
    assert_eq!(max_concurrent(&runs[..2]), 2);
    assert_eq!(max_concurrent(&[]), 0);
    assert_at_most_concurrent(&runs, 3);
    let more = std::panic::catch_unwind(|| assert_at_most_concurrent(&runs, 2));
    assert!(more.is_err(), "3 at once passed a bound of 2");
}

/// Five candidates, three places: three children, never more. A holder SIGTERMed hands its
/// place to the next candidate in line within a handover; a holder SIGKILLed frees its place
/// only once its child is dead.
#[test]
fn five_candidates_with_three_holders_run_three_children_and_fill_a_lost_place() {
    let (_etcd, scene) = etcd_and_scene();
    let ttl = TTL.to_string();
    let opts = ["--holders", "3", "--ttl", ttl.as_str()];
    let ids = ["A", "B", "C", "D", "E"];
    let mut lrs: Vec<Lr> = ids
        .iter()
        .map(|id| scene.candidate(id, &opts, &[]))
        .collect();
    scene.wait_candidates(&ids, 10 * SEC);
    let holding = settled(&scene, 3, 10 * SEC, "five candidates, three places");
    assert_eq!(scene.runs().len(), 3, "{:#?}", scene.runs());
    // The holders are the first three in the queue, with distinct fencing tokens.
    let line = scene.candidate_ids();
    let mut holders: Vec<String> = holding.iter().filter_map(|r| r.id.clone()).collect();
    holders.sort();
    let mut first3 = line[..3].to_vec();
    first3.sort();
    assert_eq!(
        holders, first3,
        "the holders are not the first three: {line:?}"
    );

    // SIGTERM the first holder: the fourth in line starts within a handover.
    let (from, victim, old, next) = first_and_next(&scene, &ids, &holding);
    scene.mark(&format!("SIGTERM to {from}"));
    let (new, took) = scene.handover(&lrs[victim], Signal::SIGTERM, &next, 5 * SEC);
    scene.report(&format!(
        "{next} holds {:.1} ms after {from}'s SIGTERM",
        ms_of(took)
    ));
    assert!(took < ns(3 * SEC), "handover took {:.3}s", secs(took));
    lrs[victim].expect_exit_code(5 * SEC, 0, "a holder exits 0 on SIGTERM");
    let mut gone = vec![victim];
    let ended = scene.current(old.pid);
    assert_eq!(ended.ending, Ending::Term, "{ended:?}");
    assert!(new.start_ns > ended.last_seen_ns, "{ended:?} then {new:?}");
    let holding = settled(&scene, 3, 10 * SEC, "after the SIGTERM");
    assert_at_most_concurrent(&scene.runs(), 3);

    // SIGKILL another holder: the last candidate gets its place once its child is dead.
    let line = scene.candidate_ids();
    assert_eq!(line.len(), 4, "{line:?}");
    let (from, victim, old, next) = first_and_next(&scene, &ids, &holding);
    let t0 = scene.mark(&format!("SIGKILL to {from}"));
    lrs[victim].kill();
    gone.push(victim);
    let new = scene.wait_leading(&next, 1, (TTL + 8) * SEC);
    let ended = scene.current(old.pid);
    assert!(new.start_ns > ended.last_seen_ns, "{ended:?} then {new:?}");
    scene.report(&format!(
        "{next} holds {:.3}s after {from}'s SIGKILL",
        secs(since(t0, new.start_ns))
    ));
    settled(&scene, 3, 10 * SEC, "after the SIGKILL");
    let runs = scene.runs();
    assert_eq!(runs.len(), 5, "{runs:#?}");
    assert_at_most_concurrent(&runs, 3);
    // Fencing tokens are distinct: each place's token is a create revision of its own.
    let mut tokens: Vec<i64> = runs.iter().map(revision).collect();
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), runs.len(), "{runs:#?}");
    for (i, lr) in lrs.iter_mut().enumerate() {
        if !gone.contains(&i) {
            assert!(lr.is_running(), "{} exited", lr.id);
        }
    }
}

/// Four candidates, three places, each behind a fault proxy of its own. A holder's link goes
/// dark: its child stops before its lease deadline, and the fourth candidate starts only after
/// that lease expired, never as a fourth child.
#[test]
fn a_holders_link_blackholed_stops_its_child_before_the_next_candidate_starts() {
    let (etcd, scene) = etcd_and_scene();
    let proxies: Vec<FaultProxy> = (0..4)
        .map(|_| FaultProxy::start(etcd.client_addr(0)))
        .collect();
    let ttl = TTL.to_string();
    let ids = ["A", "B", "C", "D"];
    let _lrs: Vec<Lr> = ids
        .iter()
        .zip(&proxies)
        .map(|(id, p)| {
            let opts = ["--holders", "3", "--ttl", ttl.as_str()];
            scene.spawn(id, &p.endpoint(), &opts, &scene.fenced(&[]))
        })
        .collect();
    scene.wait_candidates(&ids, 10 * SEC);
    let holding = settled(&scene, 3, 10 * SEC, "four candidates, three places");
    let (cut, victim, old, next) = first_and_next(&scene, &ids, &holding);

    let t0 = scene.mark(&format!("blackhole {cut}'s link"));
    proxies[victim].set_mode(Mode::Blackhole);
    let new = scene.wait_leading(&next, 1, (TTL + 8) * SEC);
    let ended = scene.current(old.pid);
    assert_eq!(
        ended.ending,
        Ending::Term,
        "stopped gracefully in time: {ended:?}"
    );
    let old_end = since(t0, ended.last_seen_ns);
    assert!(
        old_end < ns(TTL * SEC),
        "{cut}'s child was alive {:.3}s after the cut, past its lease deadline",
        secs(old_end)
    );
    assert!(new.start_ns > ended.last_seen_ns, "{ended:?} then {new:?}");
    // The cut lease was renewed at most one keepalive interval (TTL/5) before t0.
    let new_start = since(t0, new.start_ns);
    assert!(
        new_start > ns(TTL * SEC - TTL * SEC / 5) - ns(200 * MS),
        "{next} started {:.3}s after the cut, before {cut}'s lease could expire",
        secs(new_start)
    );
    scene.report(&format!(
        "cut at t0: {cut}'s child ended t0+{:.3}s, {next}'s started t0+{:.3}s",
        secs(old_end),
        secs(new_start)
    ));
    settled(&scene, 3, 10 * SEC, "after the cut");
    assert_at_most_concurrent(&scene.runs(), 3);

    // Healed, the cut candidate queues again behind the others: still three.
    scene.mark(&format!("heal {cut}'s link"));
    proxies[victim].set_mode(Mode::Pass);
    scene.wait_candidates(&ids, 20 * SEC);
    settled(&scene, 3, 10 * SEC, "after the heal");
    let runs = scene.runs();
    assert_eq!(runs.len(), 4, "{runs:#?}");
    assert_at_most_concurrent(&runs, 3);
}

/// A 3-member cluster, three candidates, two places. Every member frozen longer than the TTL:
/// both children stop before their deadlines and nothing starts while frozen; thawed, two
/// children run again, never more.
#[test]
fn whole_cluster_frozen_longer_than_the_ttl_then_thawed_runs_n_children_again() {
    let mut cluster = EtcdCluster::start(3);
    let scene = Scene::new(&cluster.endpoints());
    let ttl = TTL.to_string();
    let opts = ["--holders", "2", "--ttl", ttl.as_str()];
    let ids = ["A", "B", "C"];
    let mut lrs: Vec<Lr> = ids
        .iter()
        .map(|id| scene.candidate(id, &opts, &[]))
        .collect();
    scene.wait_candidates(&ids, 10 * SEC);
    let holding = settled(&scene, 2, 10 * SEC, "three candidates, two places");

    for i in 0..3 {
        cluster.freeze(i);
    }
    let t0 = scene.mark("all members frozen");
    for old in &holding {
        let ended = scene.wait_ended(old.pid, (TTL + 2) * SEC, false);
        let end = since(t0, ended.last_seen_ns);
        assert!(
            end < ns(TTL * SEC),
            "{ended:?} ended {:.3}s after the freeze",
            secs(end)
        );
        assert_eq!(ended.ending, Ending::Term, "{ended:?}");
        scene.report(&format!(
            "{:?} ended {:.3}s after the freeze",
            ended.id,
            secs(end)
        ));
    }
    let quiet_until = t0 + ns((TTL + 2) * SEC);
    assert!(
        holds_for(
            Duration::from_nanos(since(mono_now_ns(), quiet_until)),
            || scene.runs().len() == 2
        ),
        "a child started while the whole cluster was frozen"
    );
    let t1 = scene.mark("thawing all members");
    for i in 0..3 {
        cluster.thaw(i);
    }
    let back = settled(&scene, 2, (2 * TTL + 15) * SEC, "after the thaw");
    let took = back
        .iter()
        .map(|r| since(t1, r.start_ns))
        .max()
        .unwrap_or(0);
    scene.report(&format!(
        "two children again {:.3}s after the thaw",
        secs(took)
    ));
    scene.wait_candidates(&ids, 20 * SEC);
    let runs = scene.runs();
    assert_at_most_concurrent(&runs, 2);
    for lr in &mut lrs {
        assert!(lr.is_running(), "{} exited", lr.id);
    }
}

/// One election, two N's: the later candidate is refused with one line naming both, and so is
/// a default leaderrun; the first candidate holds on undisturbed.
#[test]
fn candidates_that_disagree_on_the_number_of_holders_are_refused() {
    let (_etcd, scene) = etcd_and_scene();
    let (mut a, run) = scene.leader("A", &["--holders", "2", "--ttl", "3"], &[]);
    let mut b = scene.candidate("B", &["--holders", "3", "--ttl", "3"], &[]);
    refused(&mut b, &["--holders 3", "--holders 2", "svc"]);
    let mut c = scene.candidate("C", &["--ttl", "3"], &[]);
    refused(&mut c, &["--holders 1 (the default)", "--holders 2"]);
    // Refused candidates leave nothing behind; A holds on alone.
    scene.wait_candidates(&["A"], 10 * SEC);
    assert!(a.is_running());
    assert!(running_now(&scene.current(run.pid)));
    assert_eq!(scene.runs().len(), 1);
    // One that agrees joins and holds the second place.
    scene.leader("D", &["--holders", "2", "--ttl", "3"], &[]);
    assert_at_most_concurrent(&scene.runs(), 2);
}

/// A --holders candidate refuses to join an election led by a default leaderrun, or by
/// `etcdctl elect` (neither knows of N places).
#[test]
fn a_holders_candidate_joining_a_single_leader_election_is_refused() {
    let (etcd, scene) = etcd_and_scene();
    let (_a, _) = scene.leader("A", &["--ttl", "3"], &[]);
    let mut b = scene.candidate("B", &["--holders", "2", "--ttl", "3"], &[]);
    refused(&mut b, &["--holders 2", "without --holders"]);

    let other = Scene::with_election(&etcd.endpoints(), "elect");
    let elect = other.start(
        "etcdctl",
        &mut etcdctl_command(&other.etcd, &["elect", "elect", "by-etcdctl"]),
    );
    assert!(
        wait_until(10 * SEC, POLL, || file_has(&elect.out, "by-etcdctl")),
        "etcdctl elect did not win an empty election"
    );
    let mut c = other.candidate("C", &["--holders", "2", "--ttl", "3"], &[]);
    refused(&mut c, &["--holders 2", "etcdctl elect"]);
    assert!(other.runs().is_empty());
}

/// `leaderrun leader --holders 3` lists the three holders, a line each, in queue order; without
/// it, the first only.
#[test]
fn leader_lists_the_holders() {
    let (_etcd, scene) = etcd_and_scene_with_election("web");
    let out = ask_leader(&scene, &["--holders", "3"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out), "no leader\n");

    let ids = ["A", "B", "C", "D"];
    let _lrs: Vec<Lr> = ids
        .iter()
        .map(|id| scene.candidate(id, &["--holders", "3"], &[]))
        .collect();
    scene.wait_candidates(&ids, 10 * SEC);
    settled(&scene, 3, 10 * SEC, "four candidates, three places");
    let line = scene.candidate_ids();

    let out = ask_leader(&scene, &["--holders", "3"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    let shown: Vec<&str> = text.lines().collect();
    assert_eq!(shown.len(), 3, "{text}");
    for (row, id) in shown.iter().zip(&line) {
        assert!(
            row.starts_with(&format!("id={id} key=web/")),
            "{row} for {id}"
        );
    }

    let out = ask_leader(&scene, &["--holders", "3", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    let ids_shown: Vec<String> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
            v["id"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(ids_shown, line[..3].to_vec(), "{text}");

    // From the environment too, as every option; without it, the first only.
    let mut c = scene.subcommand("leader", &[]);
    c.env("LEADERRUN_HOLDERS", "2");
    let out = run_with_timeout(&mut c, 15 * SEC);
    assert_eq!(stdout_of(&out).lines().count(), 2, "{}", stdout_of(&out));
    let out = ask_leader(&scene, &[]);
    assert_eq!(stdout_of(&out).lines().count(), 1, "{}", stdout_of(&out));
}

/// `leaderrun resign` asks the oldest holder to hand over: its child stops, and the next
/// candidate in line gets the place within a handover; still never more than N at once.
#[test]
fn leaderrun_resign_hands_the_oldest_holders_place_to_the_next_in_line() {
    let (_etcd, scene) = etcd_and_scene();
    let opts = ["--holders", "2", "--ttl", "5"];
    let ids = ["A", "B", "C"];
    let _lrs: Vec<Lr> = ids
        .iter()
        .map(|id| scene.candidate(id, &opts, &[]))
        .collect();
    scene.wait_candidates(&ids, 10 * SEC);
    let holding = settled(&scene, 2, 10 * SEC, "three candidates, two places");
    let line = scene.candidate_ids();
    let old = holding
        .iter()
        .find(|r| r.id.as_deref() == Some(&line[0]))
        .unwrap();

    let t0 = scene.mark(&format!("leaderrun resign: {} should hand over", line[0]));
    let out = scene.ask("resign", &[], 40 * SEC);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let new = scene.wait_leading(&line[2], 1, 10 * SEC);
    let ended = scene.current(old.pid);
    assert_eq!(ended.ending, Ending::Term, "{ended:?}");
    assert!(new.start_ns > ended.last_seen_ns, "{ended:?} then {new:?}");
    let took = since(t0, new.start_ns);
    scene.report(&format!(
        "resign to {}'s child: {:.1} ms",
        line[2],
        ms_of(took)
    ));
    assert!(
        took < ns(3 * SEC),
        "took {:.3}s: an expiry, not a handover",
        secs(took)
    );
    settled(&scene, 2, 10 * SEC, "after the step-down");
    assert_at_most_concurrent(&scene.runs(), 2);
}

/// A waiting candidate whose key is deleted by hand (its lease stays) must not hold out of
/// turn: it gets back in line behind the others, and the next place goes to the one ahead.
#[test]
fn a_waiting_candidate_whose_key_was_deleted_never_holds_out_of_turn() {
    let (etcd, scene) = etcd_and_scene();
    let opts = ["--holders", "2", "--ttl", "10"];
    let mut lrs: Vec<Lr> = Vec::new();
    for (i, id) in ["A", "B", "C", "D"].iter().enumerate() {
        // One at a time: the queue is A, B, C, D.
        lrs.push(scene.candidate(id, &opts, &[]));
        scene.wait_candidates(&["A", "B", "C", "D"][..=i], 10 * SEC);
    }
    settled(&scene, 2, 10 * SEC, "four candidates, two places");
    let (c_key, _) = scene
        .candidates()
        .into_iter()
        .find(|(_, v)| v == "C")
        .expect("C's key");
    scene.mark("delete C's key");
    etcd.etcdctl_ok(&["del", &c_key]);
    // C gets back in line with a new key, behind D.
    let back = poll_for(10 * SEC, || scene.candidate_ids(), |q| q.len() == 4);
    let back = back.unwrap_or_else(|q| panic!("C did not get back in line: {q:?}"));
    assert_eq!(back, ["A", "B", "D", "C"], "C is not behind D");
    let (run_d, _) = scene.handover(&lrs[0], Signal::SIGTERM, "D", 5 * SEC);
    assert!(
        holds_for(SEC, || runs_of(&scene.runs(), "C").is_empty()),
        "C started a child out of turn while D holds: {:#?}",
        scene.runs()
    );
    assert!(running_now(&scene.current(run_d.pid)));
    assert_at_most_concurrent(&scene.runs(), 2);
}

/// `--no-wait` with N places: a candidate takes a free place, and exits 75 only when all N are
/// taken.
#[test]
fn no_wait_takes_a_free_place_and_exits_75_when_all_are_taken() {
    let (_etcd, scene) = etcd_and_scene();
    let opts = ["--holders", "2", "--ttl", "3", "--no-wait"];
    let (_a, _) = scene.leader("A", &opts, &[]);
    let (mut b, _) = scene.leader("B", &opts, &[]);
    let mut c = scene.candidate("C", &opts, &[]);
    c.expect_exit_code(15 * SEC, 75, "both places are taken");
    assert!(b.is_running());
    assert_eq!(scene.runs().len(), 2, "{:#?}", scene.runs());
    scene.wait_candidates(&["A", "B"], 10 * SEC);
}
