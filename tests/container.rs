//! Container duty against real etcd: leaderrun as a child subreaper (orphans
//! of the child's tree are reaped and killed with it), the guardian (the
//! child's whole group dies with a SIGKILLed leaderrun), and leaderrun as PID 1
//! of its own PID namespace (env, reaping, TERM, exit status).
//!
//! Processes are found by unique `sleep` arguments in /proc. Each process's
//! stderr goes to `<id>.log` in the test's temp dir; a failing test prints
//! the tails.

mod common;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{file_tail, wait_until, ChildGuard, Etcd, TempDir};
use nix::sys::signal::Signal;

const SEC: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);
const POLL: Duration = Duration::from_millis(10);
const LOG_TAIL: usize = 30;

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/// leaderrun with no LEADERRUN_* variables from the test's environment.
fn leaderrun() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_leaderrun"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("LEADERRUN_") {
            c.env_remove(k);
        }
    }
    c
}

struct Scene {
    dir: TempDir,
    etcd: String,
    logs: RefCell<Vec<(String, PathBuf)>>,
}

struct Proc {
    id: String,
    log: PathBuf,
    guard: ChildGuard,
}

impl Scene {
    fn new(etcd: &str) -> Scene {
        Scene {
            dir: TempDir::new("leaderrun-container"),
            etcd: etcd.to_string(),
            logs: RefCell::new(Vec::new()),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `leaderrun --endpoints E --election svc --id ID -- /bin/sh -c script`.
    fn leaderrun_sh(&self, id: &str, script: &str) -> Proc {
        let mut c = leaderrun();
        c.args(["--endpoints", &self.etcd, "--election", "svc", "--id", id])
            .args(["--", "/bin/sh", "-c", script]);
        self.start(id, &mut c)
    }

    /// Spawns `c` with stdout to `<id>.out` and stderr to `<id>.log`.
    fn start(&self, id: &str, c: &mut Command) -> Proc {
        let log = self.path(&format!("{id}.log"));
        let out = self.path(&format!("{id}.out"));
        let err_file = std::fs::File::create(&log).expect("create log");
        let out_file = std::fs::File::create(&out).expect("create out");
        c.stdin(Stdio::null()).stdout(out_file).stderr(err_file);
        self.logs.borrow_mut().push((id.to_string(), log.clone()));
        self.logs.borrow_mut().push((format!("{id} (stdout)"), out));
        Proc {
            id: id.to_string(),
            log,
            guard: ChildGuard::spawn(c),
        }
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for (id, path) in self.logs.borrow().iter() {
            eprintln!(
                "===== {id}: {} =====\n{}",
                path.display(),
                file_tail(path, LOG_TAIL)
            );
        }
    }
}

impl Proc {
    fn pid(&self) -> u32 {
        self.guard.pid()
    }

    fn signal(&self, sig: Signal) {
        self.guard.signal(sig)
    }

    fn expect_exit(&mut self, timeout: Duration) -> ExitStatus {
        let id = self.id.clone();
        self.guard
            .wait_timeout(timeout)
            .unwrap_or_else(|| panic!("{id} still running after {timeout:?}"))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

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
    let mut found = vec![];
    assert!(
        wait_until(timeout, POLL, || {
            found = sleeps(arg);
            found.len() == 1
        }),
        "sleep {arg}: found {found:?} after {timeout:?}"
    );
    found[0]
}

/// Fields of /proc/<pid>/stat after the command name: [state, ppid, pgrp, ...].
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

fn ppid(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

fn pgrp(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(2)?.parse().ok()
}

/// The process exists in /proc at all (zombies included).
fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// A process that exists and is not a zombie (a zombie is dead for our
/// purposes when its reaper is not ours to judge).
fn alive(pid: u32) -> bool {
    stat_fields(pid)
        .and_then(|f| f.first().cloned())
        .is_some_and(|s| s != "Z" && s != "X")
}

fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

/// Children of `pid`, as the kernel lists them.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return vec![];
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Subreaper
// ---------------------------------------------------------------------------

#[test]
fn subreaper_reaps_orphans_that_left_the_group_and_kills_them_with_the_child() {
    let etcd = Etcd::single();
    let scene = Scene::new(&etcd.endpoints());
    let (orphan1, orphan2, main) = (unique_sleep(60), unique_sleep(60), unique_sleep(60));
    // Each orphan leaves the child's group (setsid) and its parent subshell
    // exits: the kernel reparents it to the nearest subreaper.
    let script = format!(
        "(setsid sh -c 'exec sleep {orphan1}' &); (setsid sh -c 'exec sleep {orphan2}' &); exec sleep {main}"
    );
    let mut lr = scene.leaderrun_sh("A", &script);
    let lr_pid = lr.pid();
    let main_pid = wait_sleep(&main, 10 * SEC);
    let o1 = wait_sleep(&orphan1, 10 * SEC);
    let o2 = wait_sleep(&orphan2, 10 * SEC);
    for (what, pid) in [("orphan 1", o1), ("orphan 2", o2), ("the child", main_pid)] {
        let mut parent = None;
        assert!(
            wait_until(2 * SEC, POLL, || {
                parent = ppid(pid);
                parent == Some(lr_pid)
            }),
            "{what} ({pid}) has parent {parent:?}, not leaderrun ({lr_pid})"
        );
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
    assert!(
        !lr.log_text().contains("still being reaped"),
        "{}",
        lr.log_text()
    );
}

// ---------------------------------------------------------------------------
// Guardian
// ---------------------------------------------------------------------------

#[test]
fn guardian_kills_the_childs_group_when_leaderrun_is_sigkilled() {
    let etcd = Etcd::single();
    let scene = Scene::new(&etcd.endpoints());
    let (s1, s2) = (unique_sleep(61), unique_sleep(61));
    let mut lr = scene.leaderrun_sh("A", &format!("sleep {s1} & sleep {s2} & wait"));
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
    lr.guard.kill();
    let gone = wait_until(SEC, 5 * MS, || !alive(p1) && !alive(p2) && !alive(shell));
    let took = t0.elapsed();
    assert!(
        gone,
        "after SIGKILL of leaderrun, alive after {took:?}: sleep {} sleep {} shell {}",
        alive(p1),
        alive(p2),
        alive(shell)
    );
    let guard_gone = wait_until(SEC, 5 * MS, || {
        !alive(guardian) || comm(guardian).as_deref() != Some("leaderrun-guard")
    });
    assert!(guard_gone, "leaderrun-guard ({guardian}) still running");
}

// ---------------------------------------------------------------------------
// PID 1
// ---------------------------------------------------------------------------

#[test]
fn as_pid_1_of_a_pid_namespace_it_reaps_orphans_and_passes_on_term_and_the_status() {
    let etcd = Etcd::single();
    let scene = Scene::new(&etcd.endpoints());
    let d = scene.dir.path().display().to_string();
    // Inside: report the env and PID 1's name, orphan five sleepers (their
    // subshells exit at once), let them die, count zombies in the namespace,
    // then wait for TERM and exit 42.
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
echo "$z" > '{d}/zombies.tmp' && mv '{d}/zombies.tmp' '{d}/zombies'
trap 'exit 42' TERM
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
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("LEADERRUN_") {
            c.env_remove(k);
        }
    }
    let mut unshare = scene.start("unshare", &mut c);
    let zombies_file = scene.path("zombies");
    let mut exited = None;
    let ready = wait_until(20 * SEC, POLL, || {
        exited = unshare.guard.try_wait();
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
    let mut inner = vec![];
    assert!(
        wait_until(5 * SEC, POLL, || {
            inner = children(unshare.pid())
                .into_iter()
                .filter(|&p| comm(p).as_deref() == Some("leaderrun"))
                .collect();
            inner.len() == 1
        }),
        "no leaderrun child of unshare: {inner:?}"
    );
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
    assert!(!alive(leaderrun_pid));
}
