//! The host is hostile too (DESIGN.md §5): job-control signals, signals ignored at start, the
//! at-most-once promise of `--run-id`, keys that block an election, an outage's log volume, and
//! the guardian left behind. Each test fails on a supervisor that lacks the rule it names.

mod common;

use common::*;
use nix::sys::signal::Signal;
use std::os::unix::process::CommandExt;

/// Job control never stops the supervisor: a stopped leaderrun cannot stop its child, whose
/// lease then expires while it runs on, and the standby's child would start beside it.
#[test]
fn job_control_signals_never_stop_the_leader_so_no_two_children_run() {
    let (_etcd, scene) = etcd_and_scene();
    // A process group of its own whose parent (this test) is in another group of the session,
    // as a shell's job is: the kernel discards TSTP, TTIN and TTOU for orphaned groups only.
    let mut cmd = leaderrun();
    cmd.args(["--endpoints", &scene.etcd, "--election", &scene.election])
        .args(["--id", "A", "--ttl", "3", "--"])
        .args(scene.fenced(&[]))
        .process_group(0);
    let a = scene.command("A", cmd).spawn();
    let run_a = scene.wait_leading("A", 1, 10 * SEC);
    let _b = scene.standby("B", &["--ttl", "3"], &[], &["A", "B"]);
    let guardian = guardian_of(a.pid()).expect("the leader's guardian");
    for sig in [Signal::SIGTSTP, Signal::SIGTTIN, Signal::SIGTTOU] {
        a.signal(sig);
        signal_pid(guardian, sig);
    }
    // Longer than the TTL: a stopped leader would have lost its lease by then.
    let steady = holds_for(5 * SEC, || {
        process_state(a.pid()) != Some('T')
            && process_state(guardian) != Some('T')
            && scene.runs().len() == 1
            && running_now(&scene.current(run_a.pid))
    });
    // Whatever happened, let a stopped leader go on before the checks below.
    a.signal(Signal::SIGCONT);
    assert!(
        steady,
        "the leader stopped ({:?}), or its guardian ({:?}), or a second child started",
        process_state(a.pid()),
        process_state(guardian)
    );
    a.signal(Signal::SIGTERM);
    scene.wait_leading("B", 1, 10 * SEC);
    assert_no_overlap(&scene.runs());
}

/// A stderr that nobody reads (a full pipe, a stalled log reader, a terminal stopped with
/// Ctrl-S) never holds up the supervisor: a log line written there would block it, and a
/// blocked leader stops neither its child nor its keepalives, so the standby's child would
/// start beside its own once the lease expired.
#[test]
fn a_stderr_nobody_reads_never_holds_up_the_leader() {
    let (_etcd, scene) = etcd_and_scene();
    // The child fills the pipe it shares with leaderrun, then runs on.
    let script = format!(
        "head -c 1000000 /dev/zero >&2 & exec {}",
        scene.fenced_words(&[])
    );
    let mut a = scene
        .leaderrun("A")
        .args(&["--ttl", "5"])
        .sh(&script)
        .stderr(Stderr::Piped)
        .spawn();
    let _unread = a.take_stderr();
    let run_a = scene.wait_leading("A", 1, 10 * SEC);
    let _b = scene.standby("B", &["--ttl", "5"], &[], &["A", "B"]);
    // The pipe is full within microseconds of the start; a second to be sure.
    std::thread::sleep(SEC);
    // Its log lines have nowhere to go: it hands over and exits all the same, within the
    // flush bound.
    let with = "while the leader's stderr is full (did it wait on it?)";
    scene.sigterm_handover(&mut a, &run_a, "B", 3 * SEC, with);
}

/// The child gets job control back at its defaults: a shell inside it works as usual.
#[test]
fn the_child_gets_job_control_signals_at_their_defaults() {
    let (_etcd, scene) = etcd_and_scene();
    let mut a = scene.candidate_sh("A", &["--ttl", "3"], "grep SigIgn /proc/self/status");
    assert_eq!(a.expect_exit(10 * SEC).code(), Some(0));
    let ignored = ignored_mask(&a.out_text());
    for sig in [Signal::SIGTSTP, Signal::SIGTTIN, Signal::SIGTTOU] {
        assert_eq!(
            ignored & bit(sig),
            0,
            "{sig} ignored in the child: {ignored:x}"
        );
    }
}

/// Under `nohup`, a hangup reaches neither leaderrun nor its child, as a shell keeps it.
#[test]
fn a_signal_ignored_at_start_stays_ignored_for_leaderrun_and_the_child() {
    let (_etcd, scene) = etcd_and_scene();
    let a = scene
        .leaderrun("A")
        .args(&["--ttl", "3"])
        .ignore_signals(&[Signal::SIGHUP])
        .spawn();
    let run_a = scene.wait_leading("A", 1, 10 * SEC);
    let mask =
        ignored_mask(&std::fs::read_to_string(format!("/proc/{}/status", run_a.pid)).unwrap());
    assert_ne!(
        mask & bit(Signal::SIGHUP),
        0,
        "SIGHUP must stay ignored in the child"
    );
    a.signal(Signal::SIGHUP);
    signal_pid(run_a.pid, Signal::SIGHUP);
    assert!(
        holds_for(2 * SEC, || running_now(&scene.current(run_a.pid))),
        "the child died of a hangup it was started immune to"
    );
    assert!(process_alive(a.pid()), "leaderrun died of the hangup");
}

/// A leader that started a `--run-id` run and then lost leadership (its link cut for longer
/// than the TTL) stops the run and never starts it again, even when it could lead again.
#[test]
fn a_run_id_run_starts_once_even_after_its_leader_lost_leadership_during_it() {
    let (etcd, scene) = etcd_and_scene();
    let proxy = FaultProxy::start(etcd.client_addr(0));
    let mut a = scene
        .leaderrun("A")
        .endpoints(&proxy.endpoint())
        .args(&["--ttl", "3", "--run-id", "nightly-1"])
        .spawn();
    let run = scene.wait_leading("A", 1, 10 * SEC);
    proxy.set_mode(Mode::Blackhole);
    scene.wait_ended(run.pid, 10 * SEC, true);
    proxy.set_mode(Mode::Pass);
    // The fenced child exits 0 on its stop signal: leaderrun exits with that status.
    let status = a.expect_exit(20 * SEC);
    assert_eq!(
        status.code(),
        Some(0),
        "exits with the stopped run's status: {status}"
    );
    assert!(
        a.log_text().contains("not started again"),
        "the log says why it exits"
    );
    assert_eq!(
        scene.runs().len(),
        1,
        "the run started again: {:?}",
        scene.runs()
    );
    assert!(
        etcd.get("leaderrun.runs/svc/nightly-1").is_some(),
        "the run stays recorded"
    );
}

/// A run whose spawn fails never ran: its record is withdrawn, the error names what is missing,
/// and another host runs it.
#[test]
fn a_run_that_could_not_start_is_not_recorded_and_another_host_runs_it() {
    let (etcd, scene) = etcd_and_scene();
    let script = scene.path("job.sh");
    std::fs::write(&script, "#!/nonexistent/interpreter\necho hi\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut a = scene
        .leaderrun("A")
        .args(&["--ttl", "3", "--run-id", "r1"])
        .command(&[&script])
        .spawn();
    assert_eq!(a.expect_exit(10 * SEC).code(), Some(127));
    assert!(
        a.log_text().contains("/nonexistent/interpreter"),
        "the error names the missing interpreter"
    );
    assert!(
        a.log_text().contains("withdrawn"),
        "the log says the record was withdrawn"
    );
    assert_eq!(
        etcd.get("leaderrun.runs/svc/r1"),
        None,
        "no record of a run that did not start"
    );
    let mut b = scene.candidate(
        "B",
        &["--ttl", "3", "--run-id", "r1"],
        &["--exit-after", "100"],
    );
    assert_eq!(b.expect_exit(10 * SEC).code(), Some(0));
    assert_eq!(scene.runs().len(), 1, "B runs it");
}

/// A key under the prefix that is no live candidate blocks the election: a candidate says so
/// once, naming the key, and does not lead.
#[test]
fn a_key_that_blocks_the_election_is_named_once_in_a_warning() {
    let (etcd, scene) = etcd_and_scene();
    etcd.put("svc/x", "left by hand");
    let mut a = scene.candidate("A", &["--ttl", "3"], &[]);
    let warned = poll_for(
        10 * SEC,
        || a.warnings(),
        |w| w.iter().any(|l| l.contains("svc/x")),
    );
    let warnings = warned.unwrap_or_else(|w| panic!("no warning naming svc/x: {w:?}"));
    assert!(
        warnings.iter().any(|l| l.contains("without a lease")),
        "{warnings:?}"
    );
    assert!(
        holds_for(2 * SEC, || scene.runs().is_empty()),
        "nobody leads past the key"
    );
    etcd.etcdctl_ok(&["del", "svc/x"]);
    scene.wait_leading("A", 1, 10 * SEC);
    let named = a.warnings().iter().filter(|l| l.contains("svc/x")).count();
    assert_eq!(named, 1, "warned once");
    a.signal(Signal::SIGTERM);
    a.expect_exit(5 * SEC);
}

/// Election names that nest share keys: a candidate of `svc/inner` blocks `svc`, and the
/// candidate of `svc` names the nested election.
#[test]
fn a_candidate_of_a_nested_election_is_named_as_blocking() {
    let (etcd, scene) = etcd_and_scene();
    let inner = scene
        .command(
            "inner",
            etcdctl_command(&etcd.endpoints(), &["elect", "svc/inner", "me"]),
        )
        .spawn();
    wait_until(10 * SEC, POLL, || {
        !election_keys(&etcd.endpoints(), "svc/inner").is_empty()
    });
    let a = scene.candidate("A", &["--ttl", "3"], &[]);
    let warned = poll_for(
        10 * SEC,
        || a.warnings(),
        |w| w.iter().any(|l| l.contains("svc/inner")),
    );
    warned.unwrap_or_else(|w| panic!("no warning naming the nested election: {w:?}"));
    assert!(scene.runs().is_empty());
    drop(inner);
}

/// While a leader rides out an outage, its log says what changed, not every retry.
#[test]
fn an_outage_is_logged_once_per_change_not_at_every_retry() {
    let (etcd, scene) = etcd_and_scene();
    let proxy = FaultProxy::start(etcd.client_addr(0));
    let a = scene
        .leaderrun("A")
        .endpoints(&proxy.endpoint())
        .args(&["--ttl", "2"])
        .spawn();
    scene.wait_leading("A", 1, 10 * SEC);
    let before = a.warnings().len();
    proxy.set_mode(Mode::Reset);
    std::thread::sleep(6 * SEC);
    let during = a.warnings().len() - before;
    proxy.set_mode(Mode::Pass);
    assert!(
        during <= 12,
        "{during} warnings in 6 s of outage at TTL 2: {:#?}",
        &a.warnings()[before..]
    );
    assert!(during >= 1, "the outage must be reported");
    for w in &a.warnings()[before..] {
        assert_one_phrase(w);
    }
}

/// An etcd error's line says what failed in words, never gRPC's status dump nor the chain of
/// wrappers around it.
fn assert_one_phrase(line: &str) {
    for dump in [
        "grpc",
        "source:",
        "Os {",
        "os error",
        "transport error",
        "tonic",
        "Custom {",
    ] {
        assert!(!line.contains(dump), "{dump:?} in {line}");
    }
}

/// An endpoint that refuses connections is said so, naming it, in text and JSON alike.
#[test]
fn an_unreachable_endpoint_is_named_with_its_cause_in_one_phrase() {
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let scene = Scene::new(&format!("127.0.0.1:{port}"));
    let text = scene.candidate("A", &["--ttl", "2"], &[]);
    let json = scene.candidate("B", &["--ttl", "2", "--log-format", "json"], &[]);
    let said = format!("{endpoint}: lease grant: connection refused");
    let log = text.log_with("WARN", 10 * SEC);
    let warn = log.lines().find(|l| l.contains("WARN")).expect("a warning");
    assert!(warn.ends_with(&format!("error={said}")), "{warn}");
    assert_one_phrase(warn);
    let log = json.log_with("WARN", 10 * SEC);
    let warn = log.lines().find(|l| l.contains("WARN")).expect("a warning");
    let v: serde_json::Value = serde_json::from_str(warn).unwrap();
    assert_eq!(v["error"], said.as_str(), "{warn}");
    assert_eq!(
        (v["election"].as_str(), v["id"].as_str()),
        (Some("svc"), Some("B"))
    );
}

/// leaderrun reaps its guardian before it exits: none is left behind as a zombie.
#[test]
fn the_guardian_is_gone_when_leaderrun_has_exited() {
    let (_etcd, scene) = etcd_and_scene();
    let (mut a, _) = scene.leader("A", &["--ttl", "3"], &[]);
    let guardian = guardian_of(a.pid()).expect("the leader's guardian");
    a.signal(Signal::SIGTERM);
    a.expect_exit(5 * SEC);
    assert!(
        !exists(guardian),
        "the guardian outlived leaderrun (state {:?})",
        process_state(guardian)
    );
}

/// The `SigIgn:` mask of a /proc status text.
fn ignored_mask(status: &str) -> u64 {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .unwrap_or_else(|| panic!("no SigIgn in {status:?}"));
    u64::from_str_radix(line.trim(), 16).unwrap()
}

fn bit(sig: Signal) -> u64 {
    1 << (sig as u64 - 1)
}
