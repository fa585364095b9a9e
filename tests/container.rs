//! Container duty against real etcd: leaderrun as a child subreaper (orphans
//! of the child's tree are reaped and killed with it), the guardian (the
//! child's whole group dies with a SIGKILLed leaderrun), and leaderrun as PID 1
//! of its own PID namespace (env, reaping, TERM, exit status).
//!
//! Processes are found by unique `sleep` arguments in /proc. Each process's
//! stderr goes to `<id>.log` in the test's temp dir; a failing test prints
//! the tails.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

/// These tests poll faster than the harness's default.
const POLL: Duration = Duration::from_millis(10);

/// A `sleep` argument no other process on the machine uses: `<whole>.<pid><n>`.
fn unique_sleep(whole: u32) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{whole}.{}{n:03}", std::process::id())
}

/// Pids whose command line is exactly `sleep <arg>` (or `.../sleep <arg>`).
fn sleeps(arg: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let argv: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                // "sleep\0ARG\0" splits into ["sleep", "ARG", ""].
                argv.len() == 3 && argv[0].ends_with(b"sleep") && argv[1] == arg.as_bytes()
            })
        })
        .collect()
}

/// Waits until exactly one `sleep <arg>` exists; returns its pid.
fn wait_sleep(arg: &str, timeout: Duration) -> u32 {
    match poll_for(timeout, || sleeps(arg), |found| found.len() == 1) {
        Ok(found) => found[0],
        Err(found) => panic!("sleep {arg}: found {found:?} after {timeout:?}"),
    }
}

// ---------------------------------------------------------------------------
// Subreaper
// ---------------------------------------------------------------------------

#[test]
fn subreaper_reaps_orphans_that_left_the_group_and_kills_them_with_the_child() {
    let (_etcd, scene) = etcd_and_scene();
    let (orphan1, orphan2, main) = (unique_sleep(60), unique_sleep(60), unique_sleep(60));
    // Each orphan leaves the child's group (setsid) and its parent subshell
    // exits: the kernel reparents it to the nearest subreaper.
    let script = format!(
        "(setsid sh -c 'exec sleep {orphan1}' &); (setsid sh -c 'exec sleep {orphan2}' &); exec sleep {main}"
    );
    let mut lr = scene.candidate_sh("A", &[], &script);
    let lr_pid = lr.pid();
    let main_pid = wait_sleep(&main, 10 * SEC);
    let o1 = wait_sleep(&orphan1, 10 * SEC);
    let o2 = wait_sleep(&orphan2, 10 * SEC);
    for (what, pid) in [("orphan 1", o1), ("orphan 2", o2), ("the child", main_pid)] {
        if let Err(parent) = poll_for(2 * SEC, || ppid(pid), |p| *p == Some(lr_pid)) {
            panic!("{what} ({pid}) has parent {parent:?}, not leaderrun ({lr_pid})");
        }
    }
    // The test's premise: the orphans left the child's process group.
    assert_eq!(pgrp(main_pid), Some(main_pid));
    assert_ne!(pgrp(o1), Some(main_pid));
    assert_ne!(pgrp(o2), Some(main_pid));

    // An orphan that dies while leaderrun runs is reaped: no zombie left.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(o1 as i32), Signal::SIGKILL)
        .expect("kill orphan 1");
    assert!(
        wait_until(2 * SEC, POLL, || !exists(o1)),
        "orphan 1 ({o1}) was not reaped: state {:?}",
        stat_fields(o1).and_then(|f| f.first().cloned())
    );

    // TERM: the child and the orphan still running go, before leaderrun exits.
    lr.signal(Signal::SIGTERM);
    let status = lr.expect_exit(10 * SEC);
    assert_eq!(
        status.code(),
        Some(143),
        "exec'd sleep killed by TERM: {status}"
    );
    for (what, pid) in [("the child", main_pid), ("orphan 2", o2)] {
        assert!(
            !exists(pid),
            "{what} ({pid}) outlived leaderrun: state {:?}, parent {:?}",
            stat_fields(pid).and_then(|f| f.first().cloned()),
            ppid(pid)
        );
    }
    assert!(sleeps(&orphan2).is_empty() && sleeps(&main).is_empty());
    lr.assert_log_lacks("still being reaped");
}

// ---------------------------------------------------------------------------
// Guardian
// ---------------------------------------------------------------------------

#[test]
fn guardian_kills_the_childs_group_when_leaderrun_is_sigkilled() {
    let (_etcd, scene) = etcd_and_scene();
    let (s1, s2) = (unique_sleep(61), unique_sleep(61));
    let mut lr = scene.candidate_sh("A", &[], &format!("sleep {s1} & sleep {s2} & wait"));
    let lr_pid = lr.pid();
    let p1 = wait_sleep(&s1, 10 * SEC);
    let p2 = wait_sleep(&s2, 10 * SEC);
    let shell = ppid(p1).expect("the sleeps' shell");
    assert_eq!(ppid(shell), Some(lr_pid), "the shell is leaderrun's child");
    let guards: Vec<u32> = children(lr_pid)
        .into_iter()
        .filter(|&p| comm(p).as_deref() == Some("leaderrun-guard"))
        .collect();
    assert_eq!(guards.len(), 1, "leaderrun-guard children: {guards:?}");
    let guardian = guards[0];

    let t0 = Instant::now();
    lr.kill();
    let gone = wait_until(SEC, 5 * MS, || {
        !process_alive(p1) && !process_alive(p2) && !process_alive(shell)
    });
    let took = t0.elapsed();
    assert!(
        gone,
        "after SIGKILL of leaderrun, alive after {took:?}: sleep {} sleep {} shell {}",
        process_alive(p1),
        process_alive(p2),
        process_alive(shell)
    );
    let guard_gone = wait_until(SEC, 5 * MS, || {
        !process_alive(guardian) || comm(guardian).as_deref() != Some("leaderrun-guard")
    });
    assert!(guard_gone, "leaderrun-guard ({guardian}) still running");
}

/// The guardian is told nothing by messages any more (it reads a shared page once leaderrun is
/// gone), so a guardian that died is noticed when it is reaped: leaderrun says so, and leads on.
#[test]
fn a_guardian_that_dies_is_reported_and_the_leader_leads_on() {
    let (_etcd, scene) = etcd_and_scene();
    let (mut lr, first) = scene.leader("A", &[], &[]);
    let guards: Vec<u32> = children(lr.pid())
        .into_iter()
        .filter(|&p| comm(p).as_deref() == Some("leaderrun-guard"))
        .collect();
    assert_eq!(guards.len(), 1, "leaderrun-guard children: {guards:?}");
    signal_pid(guards[0], Signal::SIGKILL);
    let said = wait_until(5 * SEC, 10 * MS, || {
        lr.log_text()
            .contains("the guardian is gone: a crash would leave the child's group running")
    });
    assert!(said, "no warning about the guardian:\n{}", lr.log_text());
    assert!(process_alive(first.pid), "the child should run on");
    assert!(lr.is_running(), "leaderrun should lead on");
}

// ---------------------------------------------------------------------------
// PID 1
// ---------------------------------------------------------------------------

#[test]
fn as_pid_1_of_a_pid_namespace_it_reaps_orphans_and_passes_on_term_and_the_status() {
    let (_etcd, scene) = etcd_and_scene();
    let d = scene.dir.path().display().to_string();
    // Inside: report the env and PID 1's name, orphan five sleepers (their
    // subshells exit at once), let them die, count zombies in the namespace,
    // then wait for TERM and exit 42. The trap is set before the zombie count is published:
    // the test sends TERM as soon as it sees the count.
    let script = format!(
        r#"printf '%s\n' "$LEADERRUN_ELECTION" "$LEADERRUN_ID" "$LEADERRUN_KEY" "$LEADERRUN_REVISION" "$LEADERRUN_LEASE" > '{d}/env'
cat /proc/1/comm > '{d}/init'
for i in 1 2 3 4 5; do (sleep 0.2 &); done
sleep 1
z=0
for f in /proc/[0-9]*/stat; do
  read -r s < "$f" 2>/dev/null || continue
  st=${{s##*) }}
  case "$st" in Z*) z=$((z+1)) ;; esac
done
trap 'exit 42' TERM
echo "$z" > '{d}/zombies.tmp' && mv '{d}/zombies.tmp' '{d}/zombies'
while :; do sleep 0.1; done
"#
    );
    let mut c = Command::new("unshare");
    c.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(env!("CARGO_BIN_EXE_leaderrun"))
        .args([
            "--endpoints",
            &scene.etcd,
            "--election",
            "ns",
            "--id",
            "pid1",
        ])
        .args(["--", "/bin/sh", "-c", &script]);
    scrub_leaderrun_env(&mut c);
    let mut unshare = scene.start("unshare", &mut c);
    let zombies_file = scene.path("zombies");
    let mut exited = None;
    let ready = wait_until(20 * SEC, POLL, || {
        exited = unshare.try_wait();
        exited.is_some() || zombies_file.exists()
    });
    if let Some(status) = exited {
        panic!(
            "unshare --pid --fork --mount-proc exited ({status}) before the child ran: it needs \
             root (CAP_SYS_ADMIN); these tests run as root. Its stderr:\n{}",
            unshare.log_text()
        );
    }
    assert!(
        ready,
        "the child inside the namespace did not report in 20 s"
    );

    // leaderrun is the namespace's PID 1 and the child saw its variables.
    assert_eq!(
        std::fs::read_to_string(scene.path("init")).unwrap().trim(),
        "leaderrun"
    );
    assert!(
        unshare.log_text().contains("pid1=true"),
        "{}",
        unshare.log_text()
    );
    let env: Vec<String> = std::fs::read_to_string(scene.path("env"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(env.len(), 5, "{env:?}");
    assert_eq!(env[0], "ns", "LEADERRUN_ELECTION");
    assert_eq!(env[1], "pid1", "LEADERRUN_ID");
    assert_eq!(env[2], format!("ns/{}", env[4]), "LEADERRUN_KEY vs _LEASE");
    assert!(
        env[3].parse::<i64>().is_ok_and(|r| r > 0),
        "LEADERRUN_REVISION {:?}",
        env[3]
    );
    assert!(
        u64::from_str_radix(&env[4], 16).is_ok(),
        "LEADERRUN_LEASE {:?}",
        env[4]
    );
    let zombies = std::fs::read_to_string(&zombies_file).unwrap();
    assert_eq!(
        zombies.trim(),
        "0",
        "zombies in the namespace 0.8 s after the orphans exited"
    );

    // TERM to leaderrun itself (unshare does not pass signals on).
    let leaderrun_children = || -> Vec<u32> {
        children(unshare.pid())
            .into_iter()
            .filter(|&p| comm(p).as_deref() == Some("leaderrun"))
            .collect()
    };
    let inner = poll_for(5 * SEC, leaderrun_children, |inner| inner.len() == 1)
        .unwrap_or_else(|inner| panic!("no leaderrun child of unshare: {inner:?}"));
    let leaderrun_pid = inner[0];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(leaderrun_pid as i32),
        Signal::SIGTERM,
    )
    .expect("SIGTERM leaderrun");
    let status = unshare.expect_exit(10 * SEC);
    assert_eq!(
        status.code(),
        Some(42),
        "the child's TERM trap exits 42; leaderrun and unshare pass it on: {status}"
    );
    assert!(!process_alive(leaderrun_pid));
}
