//! Crash failover: a leaderrun that dies without releasing leadership (SIGKILL standing in for
//! the OOM killer, a panic, an abort). Its guardian SIGKILLs the child's group, confirms in
//! /proc that no member of it lives, and only then revokes the lease: the standby starts far
//! under the TTL, never beside the old child. When etcd cannot be reached, the guardian gives
//! up quietly and the lease expires as before.
//!
//! Every test starts its own etcd; the children are `examples/fenced_child`, whose records show
//! any overlap.

mod common;

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;

use common::*;

/// Long enough that a standby starting within a few seconds can only be the revoke's doing.
const LONG_TTL: &str = "30";

/// SIGKILL to the leader `a`, whose child is `run_a`: B leads within 3 s (the guardian revoked
/// the lease, far under the TTL), and A's child was last seen before B's started. `what` says
/// how the scene is set up, for the report. Returns B's run.
fn sigkill_failover(scene: &Scene, a: &mut Lr, run_a: &Run, what: &str) -> Run {
    let t0 = scene.mark("SIGKILL to A");
    a.kill();
    let run_b = scene.wait_leading("B", 1, 10 * SEC);
    let took = since(t0, run_b.start_ns);
    scene.report(&format!(
        "{what}: B leads {:.1} ms after SIGKILL to A",
        ms_of(took)
    ));
    assert!(
        took < ns(3 * SEC),
        "B started {:.3}s after A was killed: the lease was not revoked",
        secs(took)
    );
    let dead = scene.current(run_a.pid);
    assert!(
        dead.last_seen_ns < run_b.start_ns,
        "A's child was seen after B's started: {dead:?} {run_b:?}"
    );
    run_b
}

#[test]
fn a_sigkilled_leaders_lease_is_revoked_once_its_child_is_gone_so_the_standby_starts_far_under_the_ttl(
) {
    let (_etcd, scene) = etcd_and_scene();
    let (mut a, run_a) = scene.leader("A", &["--ttl", LONG_TTL], &[]);
    let _b = scene.standby("B", &["--ttl", LONG_TTL], &[], &["A", "B"]);

    let run_b = sigkill_failover(&scene, &mut a, &run_a, &format!("TTL {LONG_TTL} s"));
    assert_no_overlap(&scene.after_running(run_b.pid, 300 * MS));
    assert_no_overlap(&scene.runs());
}

#[test]
fn a_child_that_ignores_sigterm_and_has_grandchildren_is_gone_before_the_standby_starts() {
    // The fenced child is a grandchild (the `; true` keeps the shell from exec'ing it), and a
    // sleeper sits beside it; all three ignore SIGTERM. The parent-death signal reaches the
    // shell only: the rest must be SIGKILLed by the guardian before it may revoke.
    let (_etcd, scene) = etcd_and_scene();
    let script = format!(
        "trap '' TERM; sh -c 'trap \"\" TERM; exec sleep 600' & {}; true",
        scene.fenced_words(&["--ignore-term"])
    );
    let mut a = scene.candidate_sh("A", &["--ttl", LONG_TTL], &script);
    let run_a = scene.wait_leading("A", 1, 10 * SEC);
    let _b = scene.standby("B", &["--ttl", LONG_TTL], &[], &["A", "B"]);
    let shell = ppid(run_a.pid).expect("the fenced child's shell");
    let group: Vec<u32> = children(shell)
        .into_iter()
        .chain([shell, run_a.pid])
        .collect();
    assert!(group.len() >= 3, "shell, sleeper, fenced child: {group:?}");
    for &p in &group {
        assert_eq!(pgrp(p), Some(shell), "{p} is in the child's group");
    }

    sigkill_failover(
        &scene,
        &mut a,
        &run_a,
        "a child's group that ignores SIGTERM",
    );
    for &p in &group {
        assert!(!process_alive(p), "{p} of A's group outlived A");
    }
    assert_no_overlap(&scene.runs());
}

#[test]
fn the_guardian_gives_up_quietly_when_etcd_is_unreachable_and_the_lease_expires_as_before() {
    // A reaches etcd through a proxy that is blackholed just before the kill: its guardian (same
    // endpoints) cannot revoke. B, on etcd directly, must wait for A's lease to expire.
    let ttl: u32 = 8;
    let (etcd, scene) = etcd_and_scene();
    let proxy = FaultProxy::start(etcd.client_addr(0));
    let opts = ["--ttl", "8"];
    let mut a = scene
        .leaderrun("A")
        .endpoints(&proxy.endpoint())
        .args(&opts)
        .spawn();
    let run_a = scene.wait_leading("A", 1, 10 * SEC);
    let _b = scene.standby("B", &opts, &[], &["A", "B"]);
    let guardian = guardian_of(a.pid()).expect("A's guardian");

    proxy.set_mode(Mode::Blackhole);
    let t0 = scene.mark("A's link blackholed, SIGKILL to A");
    a.kill();
    assert!(
        wait_until(SEC, 5 * MS, || !process_alive(run_a.pid)),
        "A's child outlived A"
    );
    // The guardian tries for a bounded time, then exits.
    let gave_up = wait_until(6 * SEC, 10 * MS, || !process_alive(guardian));
    let after = since(t0, mono_now_ns());
    scene.report(&format!("guardian gone {:.3}s after the kill", secs(after)));
    assert!(
        gave_up,
        "A's guardian ({guardian}) still runs 6 s after A's death"
    );

    let run_b = scene.wait_leading("B", 1, (ttl + 10) * SEC);
    let took = since(t0, run_b.start_ns);
    scene.report(&format!("B leads {:.3}s after SIGKILL to A", secs(took)));
    // A's lease was renewed at most one keepalive interval (1.6 s) before the kill.
    assert!(
        took > ns(ttl * SEC - 2 * SEC),
        "B started {:.3}s after A was killed, before A's lease could expire",
        secs(took)
    );
    assert_no_overlap(&scene.runs());
}

#[test]
fn over_tls_with_a_user_the_guardian_revokes_with_leaderruns_own_connection_settings() {
    const USER: &str = "web-user";
    const PASSWORD: &str = "web-pass";
    let certs = Certs::generate();
    let etcd = Etcd::start_with(EtcdOptions::mutual_tls(&certs));
    etcd.enable_auth("root-secret");
    etcd.add_user_with_prefixes(USER, PASSWORD, &["web/", "leaderrun.runs/web/"]);
    let scene = Scene::on(&etcd, "web");
    assert!(scene.etcd.starts_with("https://"));
    let pw = scene.path("password");
    std::fs::write(&pw, format!("{PASSWORD}\n")).expect("write the password file");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let host = certs.client("host");
    let opts: Vec<OsString> = [
        "--cacert".into(),
        certs.ca_cert.clone().into_os_string(),
        "--cert".into(),
        host.cert.clone().into_os_string(),
        "--key".into(),
        host.key.clone().into_os_string(),
        "--user".into(),
        USER.into(),
        "--password-file".into(),
        pw.clone().into_os_string(),
        "--ttl".into(),
        LONG_TTL.into(),
    ]
    .into();

    let mut a = scene.leaderrun("A").args(&opts).spawn();
    let run_a = scene.wait_leading("A", 1, 10 * SEC);
    let _b = scene.leaderrun("B").args(&opts).spawn();
    scene.wait_candidates(&["A", "B"], 10 * SEC);

    sigkill_failover(&scene, &mut a, &run_a, "over mutual TLS with a user");
    assert_no_overlap(&scene.runs());
}

#[test]
fn a_sigkilled_standbys_lease_is_revoked_so_its_key_leaves_the_queue_at_once() {
    let (etcd, scene) = etcd_and_scene();
    let (_a, _) = scene.leader("A", &["--ttl", LONG_TTL], &[]);
    let mut b = scene.standby("B", &["--ttl", LONG_TTL], &[], &["A", "B"]);
    let t0 = scene.mark("SIGKILL to the standby B");
    b.kill();
    scene.wait_candidates(&["A"], 5 * SEC);
    scene.report(&format!(
        "B's key gone {:.1} ms after the kill",
        ms_of(since(t0, mono_now_ns()))
    ));
    let leases = etcd.lease_list();
    assert_eq!(leases.len(), 1, "only A's lease is left: {leases:?}");
}
