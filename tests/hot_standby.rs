//! `--hot-standby` against real etcd: the child runs in every role, is promoted in place (no
//! fork, no exec) after the start gate, and demoted with its confirmation, or stopped and
//! started again as a standby when it does not confirm. The children here are the example
//! replica (examples/hot-standby/replica.py), which records each role it takes.

mod common;

use common::*;
use nix::sys::signal::Signal;
use std::path::Path;
use std::time::Duration;

const POLL_MS: Duration = Duration::from_millis(50);

fn replica() -> Vec<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hot-standby/replica.py");
    vec!["python3".into(), script.display().to_string()]
}

/// One line of the replicas' journal: when, which child, which role.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Took {
    ns: u64,
    pid: u32,
    role: String,
}

fn journal(scene: &Scene) -> Vec<Took> {
    lines(&scene.path("roles"))
        .iter()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some(Took {
                ns: w.next()?.parse().ok()?,
                pid: w.next()?.parse().ok()?,
                role: w.next()?.to_string(),
            })
        })
        .collect()
}

fn wait_journal(scene: &Scene, what: &str, ok: impl Fn(&[Took]) -> bool) -> Vec<Took> {
    let done = wait_until(30 * SEC, POLL_MS, || ok(&journal(scene)));
    assert!(done, "{what}: {:#?}", journal(scene));
    journal(scene)
}

fn leaders(j: &[Took]) -> Vec<u32> {
    j.iter()
        .filter(|t| t.role == "leader")
        .map(|t| t.pid)
        .collect()
}

/// At no instant did two children act as leader: each leader interval, from its `leader`
/// line to the next `standby` line of the same child, ends before the next one begins.
fn assert_one_leader_at_a_time(j: &[Took]) {
    let mut acting: Option<&Took> = None;
    for t in j {
        match (t.role.as_str(), acting) {
            ("leader", Some(other)) => panic!("two leaders: {other:?} and {t:?} in {j:#?}"),
            ("leader", None) => acting = Some(t),
            ("standby", Some(l)) if l.pid == t.pid => acting = None,
            _ => {}
        }
    }
}

fn hot(scene: &Scene, id: &str, extra: &[&str]) -> Lr {
    let mut opts = vec!["--ttl", "5", "--hot-standby", "--stop-timeout", "1s"];
    opts.extend_from_slice(extra);
    scene
        .leaderrun(id)
        .args(&opts)
        .command(&replica())
        .env("REPLICA_JOURNAL", scene.path("roles"))
        .spawn()
}

#[test]
fn a_hot_standby_is_promoted_in_place_and_confirms_its_demotion() {
    let (etcd, scene) = etcd_and_scene();
    let a = hot(&scene, "A", &[]);
    let j = wait_journal(&scene, "A's child leads", |j| !leaders(j).is_empty());
    let a_child = leaders(&j)[0];
    let b = hot(&scene, "B", &[]);
    scene.wait_candidates(&["A", "B"], 10 * SEC);
    // B's child runs already, as a standby.
    let j = wait_journal(&scene, "B's child stands by", |j| {
        j.iter().any(|t| t.pid != a_child && t.role == "standby")
    });
    let b_child = j.iter().find(|t| t.pid != a_child).unwrap().pid;
    let resign = scene.ask("resign", &[], 30 * SEC);
    assert!(resign.status.success(), "{}", stderr_of(&resign));
    let j = wait_journal(&scene, "B's child leads", |j| leaders(j).contains(&b_child));
    assert_one_leader_at_a_time(&j);
    // The same processes throughout: A's child demoted, not restarted; B's promoted, not
    // started.
    assert!(pid_exists(a_child) && pid_exists(b_child));
    let a_took: Vec<&str> = j
        .iter()
        .filter(|t| t.pid == a_child)
        .map(|t| t.role.as_str())
        .collect();
    assert_eq!(a_took, ["standby", "leader", "standby"], "{j:#?}");
    assert!(
        a.log_text().contains("confirmed its demotion"),
        "{}",
        a.log_text()
    );
    drop((a, b, etcd));
}

#[test]
fn a_child_that_never_confirms_is_stopped_before_the_next_leader_and_started_again() {
    let (_etcd, scene) = etcd_and_scene();
    let mut a = scene
        .leaderrun("A")
        .args(&["--ttl", "5", "--hot-standby", "--stop-timeout", "1s"])
        .command(&replica())
        .env("REPLICA_JOURNAL", scene.path("roles"))
        .env("REPLICA_NO_CONFIRM", "1")
        .spawn();
    let j = wait_journal(&scene, "A's child leads", |j| !leaders(j).is_empty());
    let a_child = leaders(&j)[0];
    let b = hot(&scene, "B", &[]);
    scene.wait_candidates(&["A", "B"], 10 * SEC);
    let resign = scene.ask("resign", &[], 30 * SEC);
    assert!(resign.status.success(), "{}", stderr_of(&resign));
    let j = wait_journal(&scene, "B's child leads", |j| {
        leaders(j).iter().any(|&p| p != a_child)
    });
    let b_leads = j
        .iter()
        .find(|t| t.role == "leader" && t.pid != a_child)
        .unwrap();
    // A's child said standby but never confirmed: it was stopped (not merely told) before B's
    // child was told it leads.
    assert!(
        !pid_exists(a_child) || !running(a_child),
        "A's child lives on"
    );
    let log = a.log_with("did not confirm", 5 * SEC);
    assert!(log.contains("did not confirm"), "{log}");
    let a_standby = j.iter().rfind(|t| t.pid == a_child).unwrap();
    assert!(a_standby.ns < b_leads.ns, "{j:#?}");
    // A runs on, with a new child standing by.
    let restarted = wait_until(20 * SEC, POLL_MS, || {
        journal(&scene)
            .iter()
            .any(|t| t.pid != a_child && t.pid != b_leads.pid && t.role == "standby")
    });
    assert!(
        restarted,
        "A's child was not started again: {:#?}",
        journal(&scene)
    );
    assert!(a.is_running());
    a.signal(Signal::SIGTERM);
    a.expect_exit(20 * SEC);
    drop(b);
}

/// Whether `pid` runs (a zombie does not: DESIGN.md §5).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

#[test]
fn a_hot_standby_leader_cut_off_demotes_its_child_before_the_lease_can_expire() {
    let (etcd, scene) = etcd_and_scene();
    let proxy = FaultProxy::start(etcd.client_addr(0));
    let a = scene
        .leaderrun("A")
        .endpoints(&proxy.endpoint())
        .args(&["--ttl", "5", "--hot-standby", "--stop-timeout", "1s"])
        .command(&replica())
        .env("REPLICA_JOURNAL", scene.path("roles"))
        .spawn();
    let j = wait_journal(&scene, "A's child leads", |j| !leaders(j).is_empty());
    let a_child = leaders(&j)[0];
    let b = hot(&scene, "B", &[]);
    scene.wait_candidates(&["A", "B"], 10 * SEC);
    proxy.set_mode(Mode::Blackhole);
    let j = wait_journal(&scene, "B's child leads", |j| {
        leaders(j).iter().any(|&p| p != a_child)
    });
    assert_one_leader_at_a_time(&j);
    assert!(
        a.log_text().contains("confirmed its demotion"),
        "{}",
        a.log_text()
    );
    drop((a, b));
}

#[test]
fn an_unhealthy_hot_standby_withdraws_from_the_queue_until_it_is_healthy() {
    let (_etcd, scene) = etcd_and_scene();
    let sick = scene.path("b-sick");
    let check = format!("test ! -e {}", sick.display());
    let opts = [
        "--health-cmd",
        &check,
        "--health-interval",
        "200ms",
        "--health-retries",
        "2",
    ];
    let _a = hot(&scene, "A", &[]);
    wait_journal(&scene, "A's child leads", |j| !leaders(j).is_empty());
    let b = hot(&scene, "B", &opts);
    scene.wait_candidates(&["A", "B"], 10 * SEC);
    std::fs::write(&sick, "").unwrap();
    scene.wait_candidates(&["A"], 10 * SEC);
    let log = b.log_with("withdrawing", 5 * SEC);
    assert!(log.contains("unhealthy: withdrawing"), "{log}");
    std::fs::remove_file(&sick).unwrap();
    scene.wait_candidates(&["A", "B"], 10 * SEC);
}
