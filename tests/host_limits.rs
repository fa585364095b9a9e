//! When the host runs out: the process limit reached under a leader (no panic, no exit 126 for a
//! fork that may work again), and etcd restored from an older copy (the fencing token never
//! goes back). Real etcd; leaderrun runs as `nobody`, since root ignores the process limit.

mod common;

use common::*;
use nix::sys::signal::Signal;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const NOBODY: u32 = 65534;
const POLL_MS: Duration = Duration::from_millis(100);

/// A copy of the binary that `nobody` can run: the checkout may sit in a directory only root
/// may enter (a CI clone under `mktemp -d`).
fn binary_for_nobody(dir: &TempDir) -> PathBuf {
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("leaderrun");
    std::fs::copy(env!("CARGO_BIN_EXE_leaderrun"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A process forked by another test's thread while the copy was open for writing holds it
    // until its exec: running the copy fails with ETXTBSY until then.
    let ready = wait_until(10 * SEC, POLL_MS, || {
        let run = Command::new(&bin).arg("--version").output();
        !matches!(run, Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY))
    });
    assert!(ready, "{} stays busy", bin.display());
    bin
}

/// leaderrun as `nobody` on `localhost:<port>` (a name: its resolution takes a blocking thread).
fn as_nobody(bin: &PathBuf, port: u16, election: &str, extra: &[&str], child: &[&str]) -> Command {
    let mut c = Command::new(bin);
    scrub_leaderrun_env(&mut c);
    c.uid(NOBODY).gid(NOBODY);
    c.args(["--endpoints", &format!("localhost:{port}")]);
    c.args(["--election", election, "--id", "limited", "--ttl", "3"]);
    c.args(extra).arg("--").args(child);
    c
}

/// Set the soft process limit of `pid` (`prlimit`, from util-linux), as `nobody` too: a
/// sandbox's root may lack CAP_SYS_RESOURCE, and a user may set its own processes' limits.
fn set_nproc(pid: u32, soft: &str) {
    let mut prlimit = Command::new("prlimit");
    prlimit.uid(NOBODY).gid(NOBODY);
    prlimit.args(["--pid", &pid.to_string(), &format!("--nproc={soft}:")]);
    let out = run_with_timeout(&mut prlimit, Duration::from_secs(10));
    assert!(out.status.success(), "prlimit: {}", stderr_of(&out));
}

/// The soft process limit of `pid`, as /proc says it.
fn nproc_of(pid: u32) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max processes"))
        .unwrap();
    line.split_whitespace().nth(2).unwrap().to_string()
}

/// leaderrun as `nobody` leading with `child`, its process limit then lowered to 1.
/// Returns it, with the soft limit it had, and the directory of its binary.
fn leading_at_the_limit(
    scene: &Scene,
    port: u16,
    opts: &[&str],
    child: &[&str],
) -> (Lr, String, TempDir) {
    let dir = TempDir::new("leaderrun-nproc");
    let bin = binary_for_nobody(&dir);
    let election = unique_name("nproc");
    let cmd = as_nobody(&bin, port, &election, opts, child);
    let lr = scene.start("limited", &mut { cmd });
    let led = wait_until(20 * SEC, POLL_MS, || {
        lr.log_text().contains("child started")
    });
    assert!(led, "never led:\n{}", lr.log_text());
    let soft = nproc_of(lr.pid());
    (lr, soft, dir)
}

/// Still running, it said why it could not start its child; given its limit back, it
/// starts one again within `within`; then it exits on TERM.
fn recovers_when_processes_can_be_made(mut lr: Lr, soft: &str, within: Duration) {
    assert!(
        lr.is_running(),
        "leaderrun ended at the process limit:\n{}",
        lr.log_text()
    );
    let log = lr.log_text();
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        log.contains("cannot start the command for now"),
        "no spawn failure logged:\n{log}"
    );
    let before = count(&log, "child started");
    set_nproc(lr.pid(), soft);
    let again = wait_until(within, POLL_MS, || {
        count(&lr.log_text(), "child started") > before
    });
    assert!(
        again,
        "no child once processes could be made:\n{}",
        lr.log_text()
    );
    lr.signal(Signal::SIGTERM);
    lr.expect_exit(20 * SEC);
}

fn port_of(etcd: &Etcd) -> u16 {
    etcd.client_addr(0).port()
}

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

#[test]
fn a_full_process_table_never_panics_a_leader_and_a_start_is_tried_again() {
    let (mut etcd, scene) = etcd_and_scene();
    let child = ["/bin/sleep", "600"];
    let (lr, soft, _bin) = leading_at_the_limit(&scene, port_of(&etcd), &[], &child);
    set_nproc(lr.pid(), "1");
    // Idle blocking threads used to retire after 10 s; the next one then had to be made.
    std::thread::sleep(Duration::from_secs(12));
    // etcd goes away and comes back: the lease is lost, the child stopped, and reaching etcd
    // again resolves `localhost` on a blocking thread. It wins again but cannot fork its
    // child: it says so and hands over, not exit 126.
    etcd.kill(0);
    std::thread::sleep(Duration::from_secs(5));
    etcd.restart(0);
    std::thread::sleep(Duration::from_secs(8));
    recovers_when_processes_can_be_made(lr, &soft, 20 * SEC);
}

#[test]
fn a_restart_that_meets_the_process_limit_is_retried_not_exit_126() {
    let (etcd, scene) = etcd_and_scene();
    let opts = ["--on-exit", "restart"];
    let child = ["/bin/sleep", "2"];
    let (lr, soft, _bin) = leading_at_the_limit(&scene, port_of(&etcd), &opts, &child);
    set_nproc(lr.pid(), "1");
    // The child exits after 2 s; its restarts cannot fork.
    std::thread::sleep(Duration::from_secs(8));
    recovers_when_processes_can_be_made(lr, &soft, 30 * SEC);
}

#[test]
fn the_fencing_token_never_goes_back_when_etcd_is_restored_from_an_older_copy() {
    let (mut etcd, scene) = etcd_and_scene();
    // The older copy: a data dir taken while the store's revision is low.
    let backup = TempDir::new("leaderrun-etcd-backup");
    etcd.kill(0);
    let copy = Command::new("cp")
        .arg("-a")
        .arg(etcd.data_dir(0))
        .arg(backup.join("data"))
        .status()
        .unwrap();
    assert!(copy.success());
    etcd.restart(0);
    // A leads, term after term (its child exits after 1 s, and it campaigns again), while
    // writes move the revision well past the copy's: A has seen the high revisions.
    let opts = ["--ttl", "3", "--on-exit", "recampaign"];
    let (mut a, _) = scene.leader("A", &opts, &["--exit-after", "1000"]);
    for i in 0..30 {
        etcd.put(&format!("filler/{i}"), "x");
    }
    let high = wait_until(30 * SEC, POLL_MS, || {
        scene.runs().iter().any(|r| revision(r) > 30)
    });
    assert!(high, "no term above revision 30: {:?}", scene.runs());
    // The restore: the same member, its data dir replaced by the older copy.
    etcd.kill(0);
    let data = etcd.data_dir(0);
    std::fs::remove_dir_all(&data).unwrap();
    let back = Command::new("cp")
        .arg("-a")
        .arg(backup.join("data"))
        .arg(&data)
        .status()
        .unwrap();
    assert!(back.success());
    etcd.restart(0);
    // A loses its lease (unknown to the older copy), campaigns again, and is elected with a key
    // below the revisions it saw: it must say so and start nothing.
    let said = wait_until(30 * SEC, POLL_MS, || {
        a.log_text().contains("the fencing token would go back")
    });
    assert!(said, "no error about the token:\n{}", a.log_text());
    std::thread::sleep(Duration::from_secs(2));
    let runs = runs_of(&scene.runs(), "A")
        .into_iter()
        .map(revision)
        .collect::<Vec<_>>();
    assert!(
        runs.windows(2).all(|w| w[1] > w[0]),
        "tokens handed to children: {runs:?}"
    );
    a.signal(Signal::SIGTERM);
    a.expect_exit(20 * SEC);
}
