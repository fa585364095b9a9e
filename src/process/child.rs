//! The supervised command: spawned in its own process group with a parent-death signal,
//! reaped by [`Reaper`], stopped by [`Child::stop`] (stop signal, timer, SIGKILL, reap).

use crate::process::guardian::Guardian;
use crate::process::spawn;
use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;
use tokio::time::{sleep, sleep_until, Instant};

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    /// The shell's convention: the exit code, or 128+N when signal N killed it.
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Code(c) => (c & 0xff) as u8,
            ExitStatus::Signal(n) => (128 + n).min(255) as u8,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(n) => match Signal::try_from(*n) {
                Ok(s) => write!(f, "killed by {s}"),
                Err(_) => write!(f, "killed by signal {n}"),
            },
        }
    }
}

/// The command and its environment.
#[derive(Debug, Clone)]
pub struct Command {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
    /// Variables of leaderrun's own environment the child must not see (a password).
    pub env_remove: Vec<&'static str>,
    /// Signals leaderrun ignores that the child gets back at their default disposition.
    pub signal_defaults: Vec<Signal>,
}

type Waiters = Arc<Mutex<HashMap<i32, oneshot::Sender<ExitStatus>>>>;

/// Reaps every child that exits (as PID 1 or a subreaper that includes orphans) and hands the
/// status of the ones we spawned to their [`Child`]. Create it before the first spawn, so that
/// no SIGCHLD is missed. Clones share the reaping.
#[derive(Clone)]
pub struct Reaper {
    waiters: Waiters,
    guardian: Option<Arc<Guardian>>,
}

impl Reaper {
    /// Install the SIGCHLD handler and start reaping. Needs a running tokio runtime. The
    /// guardian, if any, is told each child's group.
    pub fn start(guardian: Option<Arc<Guardian>>) -> std::io::Result<Reaper> {
        let mut sigchld = signal(SignalKind::child())?;
        let waiters: Waiters = Arc::default();
        let guardian_pid = guardian.as_ref().map(|g| g.pid());
        let reaper = Reaper {
            waiters: waiters.clone(),
            guardian,
        };
        tokio::spawn(async move {
            loop {
                reap_all(&waiters, guardian_pid);
                if sigchld.recv().await.is_none() {
                    return;
                }
            }
        });
        Ok(reaper)
    }

    /// Tell the guardian, if any, which lease to revoke should leaderrun die (0: none). It
    /// revokes it only once the child's group is confirmed gone.
    pub fn guard_lease(&self, id: i64) {
        if let Some(g) = &self.guardian {
            g.lease(id);
        }
    }

    /// Spawn `cmd` in a new process group, with SIGKILL as its parent-death signal.
    ///
    /// Call it from the thread that lives as long as the process (the current-thread runtime's):
    /// the parent-death signal fires when the forking *thread* exits.
    pub fn spawn(&self, cmd: &Command) -> std::io::Result<Child> {
        let group = self.guardian.as_ref().map(|g| g.group());
        let spawned = self.spawn_into(cmd, group, None);
        if let (Err(_), Some(g)) = (&spawned, &self.guardian) {
            // Its child may have stored a group that is gone already (exec failed).
            g.forget_group();
        }
        let mut child = spawned?;
        child.guardian = self.guardian.clone();
        Ok(child)
    }

    /// `spawn`, but the guardian is not told: for a short-lived helper (a health check, a hook)
    /// that must not replace the child's group in the guardian's care. Its stdout and stderr go
    /// to `output` if given (a pipe leaderrun drains), else where leaderrun's go.
    pub fn spawn_unguarded(
        &self,
        cmd: &Command,
        output: Option<BorrowedFd<'_>>,
    ) -> std::io::Result<Child> {
        self.spawn_into(cmd, None, output)
    }

    /// Spawn `cmd`; its group's id goes to `group` (the guardian's page) before its exec.
    fn spawn_into(
        &self,
        cmd: &Command,
        group: Option<&AtomicI64>,
        output: Option<BorrowedFd<'_>>,
    ) -> std::io::Result<Child> {
        let defaults: Vec<i32> = cmd.signal_defaults.iter().map(|&s| s as i32).collect();
        let image = spawn::Image::new(
            &cmd.program,
            &cmd.args,
            &cmd.env,
            &cmd.env_remove,
            &defaults,
        )
        .map(|image| match output {
            Some(fd) => image.output_to(fd),
            None => image,
        });
        let pid = image
            .and_then(|image| spawn::spawn(&image, group))
            .map_err(|e| explain_spawn_error(&cmd.program, e))?;
        let pid = Pid::from_raw(pid);
        let (tx, rx) = oneshot::channel();
        // No await since spawn: the reaper task (same thread) cannot have reaped it yet.
        self.waiters.lock().unwrap().insert(pid.as_raw(), tx);
        Ok(Child {
            pid,
            exit: rx,
            status: None,
            guardian: None,
        })
    }
}

/// The spawn error as the user can act on it. exec's ENOENT names the program even when what
/// is missing is its script's interpreter (`#!/usr/bin/nope`): say which.
fn explain_spawn_error(program: &std::path::Path, e: std::io::Error) -> std::io::Error {
    let detail = match e.raw_os_error() {
        Some(libc::ENOENT) if program.exists() => match interpreter(program) {
            Some(interp) => format!("its interpreter {interp} was not found"),
            None => e.to_string(),
        },
        Some(libc::E2BIG) => "the argument list and environment are too long".into(),
        _ => e.to_string(),
    };
    std::io::Error::new(e.kind(), format!("{}: {detail}", program.display()))
}

/// The `#!` line's interpreter of a script, if it has one.
fn interpreter(program: &std::path::Path) -> Option<String> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(program).ok()?.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = line.split(|&b| b == b'\n').next()?;
    let interp = String::from_utf8_lossy(line)
        .split_whitespace()
        .next()?
        .to_string();
    Some(interp)
}

/// Collect every exited child without blocking. Statuses of children we did not spawn
/// (orphans reparented to us) are dropped: reaping them is all they need. The guardian's end is
/// said: it should live as long as leaderrun.
fn reap_all(waiters: &Waiters, guardian: Option<Pid>) {
    loop {
        let (pid, status) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, ExitStatus::Code(code)),
            Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, ExitStatus::Signal(sig as i32)),
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Ok(_) => continue,
            Err(Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "waitpid failed");
                return;
            }
        };
        match waiters.lock().unwrap().remove(&pid.as_raw()) {
            Some(tx) => {
                let _ = tx.send(status);
            }
            None if Some(pid) == guardian => tracing::warn!(
                pid = pid.as_raw(),
                %status,
                "the guardian is gone: a crash would leave the child's group running"
            ),
            None => tracing::debug!(pid = pid.as_raw(), %status, "reaped an orphan"),
        }
    }
}

/// A running (or exited, not yet observed) child and its process group.
#[derive(Debug)]
pub struct Child {
    pid: Pid,
    exit: oneshot::Receiver<ExitStatus>,
    status: Option<ExitStatus>,
    guardian: Option<Arc<Guardian>>,
}

/// Make leaderrun the reaper of its descendants: orphans of the child's tree are reparented to
/// us, reaped by [`Reaper`], and killed by [`Child::stop`]. PID 1 (a container's entrypoint) is
/// that already. Returns whether we are PID 1.
pub fn adopt_orphans() -> std::io::Result<bool> {
    // Opened now, so that the first stop does not pay for it.
    main_children();
    if std::process::id() == 1 {
        return Ok(true);
    }
    nix::sys::prctl::set_child_subreaper(true)?;
    Ok(false)
}

/// The main thread's list of children, kept open. The kernel hands orphans to a reaper's first
/// live thread, its main one, and leaderrun spawns from that thread too, so this one list has
/// them all. A kept file reads in a tenth of the time /proc takes to open (0.1 ms on the old
/// leader's way to resigning).
fn main_children() -> Option<&'static std::fs::File> {
    static MAIN: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();
    MAIN.get_or_init(|| {
        std::fs::File::open(format!("/proc/self/task/{}/children", std::process::id())).ok()
    })
    .as_ref()
}

/// A /proc file's text, read again from its start.
fn read_from_start(file: &std::fs::File) -> String {
    use std::os::unix::fs::FileExt;
    let (mut text, mut buf) = (Vec::new(), [0u8; 4096]);
    while let Ok(n @ 1..) = file.read_at(&mut buf, text.len() as u64) {
        text.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// Our children as the kernel lists them (orphans reparented to us included), but for `except`.
fn children(except: Option<Pid>) -> Vec<Pid> {
    let mut text = main_children().map(read_from_start).unwrap_or_default();
    // Spawned from another thread (a test harness's): that thread's own list.
    if nix::unistd::gettid().as_raw() as u32 != std::process::id() {
        if let Ok(own) = std::fs::read_to_string("/proc/thread-self/children") {
            text.push(' ');
            text.push_str(&own);
        }
    }
    text.split_whitespace()
        .filter_map(|p| p.parse().ok())
        .map(Pid::from_raw)
        .filter(|p| Some(*p) != except)
        .collect()
}

/// Rounds of killing adopted orphans: each round may orphan the next generation.
const ORPHAN_ROUNDS: usize = 50;

/// SIGKILL every descendant that was reparented to us, generation by generation, until the
/// reaper has collected them all (bounded: ORPHAN_ROUNDS × GROUP_POLL).
async fn kill_orphans(guardian: Option<Pid>) {
    for _ in 0..ORPHAN_ROUNDS {
        let left = children(guardian);
        if left.is_empty() {
            return;
        }
        for pid in &left {
            let _ = nix::sys::signal::kill(*pid, Signal::SIGKILL);
        }
        sleep(GROUP_POLL).await;
    }
    tracing::warn!("descendants of the child are still being reaped");
}

/// While the child's group still has members after the child itself exited, check this often.
const GROUP_POLL: Duration = Duration::from_millis(10);

impl Child {
    pub fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// How the child exited, if it has (without waiting).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.exit.try_recv().ok();
        }
        self.status
    }

    /// Wait for the child (the group leader) to exit. Cancel-safe.
    pub async fn wait(&mut self) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        // The sender only goes away with the reaper task, which lives as long as the runtime.
        let s = (&mut self.exit).await.unwrap_or(ExitStatus::Signal(9));
        self.status = Some(s);
        s
    }

    /// Send `sig` to the child's whole process group.
    pub fn signal_group(&self, sig: Signal) {
        match killpg(self.pid, sig) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => tracing::warn!(pid = self.pid.as_raw(), %sig, error = %e, "kill failed"),
        }
    }

    fn group_is_empty(&self) -> bool {
        matches!(killpg(self.pid, None), Err(Errno::ESRCH))
    }

    /// The stop rule: `sig` to the group, wait until the group is gone or `kill_at`, then
    /// SIGKILL to the group; returns the child's status once reaped. Nothing of the group
    /// survives this call (short of processes that left the group themselves).
    pub async fn stop(&mut self, sig: Signal, kill_at: Instant) -> ExitStatus {
        // A child that exited was logged when it exited: one line an end. What is left of its
        // group (a background job of a script) is stopped, and said so, in other words.
        let reaped = self.status.is_some();
        let exited = reaped && self.group_is_empty();
        if !exited {
            match reaped {
                true => {
                    tracing::info!(pgid = self.pid.as_raw(), signal = %sig, "stopping what is left of the child's process group")
                }
                false => tracing::info!(pid = self.pid.as_raw(), signal = %sig, "stopping child"),
            }
            self.signal_group(sig);
            // A stopped group acts on nothing but SIGKILL until it is continued (systemd does
            // the same).
            self.signal_group(Signal::SIGCONT);
        }
        let graceful = tokio::select! {
            s = self.wait() => Some(s),
            _ = sleep_until(kill_at) => None,
        };
        if graceful.is_some() {
            // The leader is gone; give the rest of its group the same grace.
            while !self.group_is_empty() && Instant::now() < kill_at {
                sleep(GROUP_POLL).await;
            }
        } else {
            tracing::warn!(
                pid = self.pid.as_raw(),
                "child did not stop in time: SIGKILL"
            );
        }
        self.signal_group(Signal::SIGKILL);
        let status = self.wait().await;
        // Descendants that left the group but were orphaned to us go too.
        kill_orphans(self.guardian.as_ref().map(|g| g.pid())).await;
        if let Some(g) = &self.guardian {
            g.forget_group();
        }
        if reaped {
            tracing::debug!(pid = self.pid.as_raw(), %status, "child's group gone");
        } else {
            tracing::info!(pid = self.pid.as_raw(), %status, "child stopped");
        }
        status
    }
}

#[cfg(test)]
#[allow(clippy::await_holding_lock)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    // Every reaper collects every child of the process: tests that spawn must not overlap.
    static SPAWNING: Mutex<()> = Mutex::new(());
    pub(crate) fn serial() -> std::sync::MutexGuard<'static, ()> {
        SPAWNING.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sh(script: &str) -> Command {
        Command {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![],
            env_remove: vec![],
            signal_defaults: vec![],
        }
    }

    #[test]
    fn exit_status_follows_the_shell_convention() {
        assert_eq!(ExitStatus::Code(3).code(), 3);
        assert_eq!(ExitStatus::Signal(15).code(), 143);
        assert_eq!(ExitStatus::Signal(9).code(), 137);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn reap_reports_the_exit_code() {
        let _serial = serial();
        let reaper = Reaper::start(None).unwrap();
        let mut child = reaper.spawn(&sh("exit 7")).unwrap();
        assert_eq!(child.wait().await, ExitStatus::Code(7));
    }

    /// What std's spawn gave, the hand-made clone gives: the environment asked for, its own
    /// process group, no blocked signals, SIGPIPE at its default, the parent-death signal.
    #[tokio::test(flavor = "current_thread")]
    async fn spawn_starts_the_command_as_std_did_in_its_own_group() {
        let _serial = serial();
        let reaper = Reaper::start(None).unwrap();
        let out = tempfile_path("spawn-env");
        std::env::set_var("LEADERRUN_TEST_SECRET", "x");
        let script = format!(
            "exec >{out}; echo \"set=$LEADERRUN_TEST_SET secret=${{LEADERRUN_TEST_SECRET-}}\"; \
             grep -E '^(SigBlk|SigIgn)' /proc/self/status; echo pgid=$(cut -d' ' -f5 /proc/self/stat) pid=$$; \
             grep -c . /proc/self/status >/dev/null",
            out = out.display()
        );
        let mut cmd = sh(&script);
        cmd.env = vec![("LEADERRUN_TEST_SET".into(), "yes".into())];
        cmd.env_remove = vec!["LEADERRUN_TEST_SECRET"];
        let mut child = reaper.spawn(&cmd).unwrap();
        assert_eq!(child.wait().await, ExitStatus::Code(0));
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.contains("set=yes secret=\n"), "{text}");
        assert!(text.contains("SigBlk:\t0000000000000000"), "{text}");
        // SIGPIPE (bit 13) is not ignored: the Rust runtime's SIG_IGN is not inherited.
        let ign = text
            .lines()
            .find_map(|l| l.strip_prefix("SigIgn:\t"))
            .unwrap();
        let ign = u64::from_str_radix(ign.trim(), 16).unwrap();
        assert_eq!(ign & (1 << 12), 0, "{text}");
        let pgid = text.lines().find_map(|l| l.strip_prefix("pgid=")).unwrap();
        let (pgid, pid) = pgid.split_once(" pid=").unwrap();
        assert_eq!(pgid, pid, "not its own group leader: {text}");
        let _ = std::fs::remove_file(out);
    }

    /// The guardian's page gets the group from the child itself, before its exec (a leaderrun
    /// SIGKILLed right after the exec must not leave the group unknown): stored even when the
    /// exec then fails, which `Reaper::spawn` clears.
    #[tokio::test(flavor = "current_thread")]
    async fn spawn_stores_the_new_group_for_the_guardian_before_its_exec() {
        let _serial = serial();
        let reaper = Reaper::start(None).unwrap();
        let group = AtomicI64::new(0);
        let mut child = reaper
            .spawn_into(&sh("exit 0"), Some(&group), None)
            .unwrap();
        let stored = group.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(stored, i64::from(child.pid.as_raw()));
        child.wait().await;
        let mut missing = sh("");
        missing.program = "/nonexistent/leaderrun-test".into();
        let unguarded = AtomicI64::new(0);
        assert!(reaper.spawn_into(&missing, Some(&unguarded), None).is_err());
        assert_ne!(unguarded.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn spawn_reports_a_missing_program_and_runs_a_script_without_shebang() {
        let _serial = serial();
        let reaper = Reaper::start(None).unwrap();
        let mut missing = sh("");
        missing.program = "/nonexistent/leaderrun-test".into();
        let e = reaper.spawn(&missing).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
        // execvp semantics, as std's: a script without `#!` runs under /bin/sh.
        let script = tempfile_path("no-shebang");
        std::fs::write(&script, "exit 5\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let mut cmd = sh("");
        cmd.program = script.clone();
        cmd.args = vec![];
        let mut child = reaper.spawn(&cmd).unwrap();
        assert_eq!(child.wait().await, ExitStatus::Code(5));
        let _ = std::fs::remove_file(script);
    }

    fn tempfile_path(what: &str) -> PathBuf {
        std::env::temp_dir().join(format!("leaderrun-{what}-{}", std::process::id()))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn stop_signals_the_whole_group() {
        let _serial = serial();
        let reaper = Reaper::start(None).unwrap();
        // A grandchild in the same group must go too.
        let mut child = reaper.spawn(&sh("sleep 30 & wait")).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let kill_at = Instant::now() + Duration::from_secs(5);
        let status = child.stop(Signal::SIGTERM, kill_at).await;
        assert_eq!(status, ExitStatus::Signal(15));
        assert!(child.group_is_empty());
        assert!(
            Instant::now() < kill_at,
            "graceful stop should not wait for SIGKILL"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn stop_kills_orphans_that_left_the_group() {
        let _serial = serial();
        adopt_orphans().unwrap();
        let reaper = Reaper::start(None).unwrap();
        // setsid leaves the group; the subshell exits, so the sleeper is orphaned to us.
        let mut child = reaper.spawn(&sh("(setsid sleep 30 &) ; sleep 30")).unwrap();
        let until = Instant::now() + Duration::from_secs(3);
        while children(None).len() < 2 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(children(None).len(), 2, "the orphan should be ours");
        child
            .stop(Signal::SIGTERM, Instant::now() + Duration::from_secs(2))
            .await;
        assert!(children(None).is_empty(), "left: {:?}", children(None));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn stop_kills_a_child_that_ignores_the_stop_signal() {
        let _serial = serial();
        let reaper = Reaper::start(None).unwrap();
        let mut child = reaper
            .spawn(&sh("trap '' TERM; while :; do sleep 0.05; done"))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let start = Instant::now();
        let status = child
            .stop(Signal::SIGTERM, start + Duration::from_millis(300))
            .await;
        assert_eq!(status, ExitStatus::Signal(9));
        assert!(start.elapsed() >= Duration::from_millis(300));
        // SIGKILLed members may linger briefly as zombies until their new parent reaps them.
        let until = Instant::now() + Duration::from_secs(2);
        while !child.group_is_empty() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(child.group_is_empty());
    }
}
