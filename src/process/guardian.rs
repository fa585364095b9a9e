//! The guardian: a tiny process forked at start-up that cleans up after leaderrun if it dies
//! without doing so itself (SIGKILL, the OOM killer, a panic or abort).
//!
//! The parent-death signal reaches only the direct child; the guardian covers the rest of its
//! group. leaderrun keeps the current group and the current lease in a page shared with it, and
//! the guardian notices leaderrun's death by the end of file of a pipe, which the kernel delivers
//! whatever way leaderrun ended. Then it reads the page, and:
//!
//! 1. SIGKILL to the child's group, until /proc shows no live member of it ("confirmed gone");
//! 2. only then, revoke the lease, so a standby wins at once instead of waiting out the TTL.
//!
//! The revoke is bounded ([`REVOKE_BOUND`]); if etcd cannot be reached in that time, or the group
//! cannot be confirmed gone, the guardian exits quietly and the lease expires as it would have.
//! While it waits, the guardian holds only the connection settings: the runtime and the etcd
//! client are built when it fires, so it stays as small as a forked process can be.

use crate::etcd::{self, Connection, Kind};
use crate::process::signals::{FORWARDED, JOB_CONTROL};
use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::{killpg, signal, SigHandler, Signal};
use nix::unistd::{fork, ForkResult, Pid};
use std::io::{PipeWriter, Read};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

/// How long the guardian may try to revoke the lease (connecting and authenticating included):
/// past this, the lease expires by itself, as it would without a guardian.
const REVOKE_BOUND: Duration = Duration::from_secs(2);
/// How long SIGKILL may take to empty the group before the guardian gives up on the revoke.
/// A process stuck in an uninterruptible sleep is not dead: the lease then expires instead.
const CONFIRM_BOUND: Duration = Duration::from_secs(2);
/// How often the group is looked for in /proc while it dies (SIGKILL acts in microseconds).
const CONFIRM_POLL: Duration = Duration::from_millis(1);

/// What the guardian acts on, in a page shared with it: leaderrun stores, the guardian reads once
/// leaderrun is gone (the writer is dead by then, so the two need no lock). A store costs no
/// system call and wakes nobody, where a message on the pipe did, on both sides of a handover.
#[derive(Debug)]
struct Shared {
    /// The child's process group (0: none).
    group: AtomicI64,
    /// The lease to revoke (0: none).
    lease: AtomicI64,
}

impl Shared {
    /// A zeroed shared anonymous page, inherited by the fork and never unmapped.
    fn map() -> std::io::Result<&'static Shared> {
        // SAFETY: a fresh mapping, page-aligned and zero-filled (zero is a valid AtomicI64); it
        // is never unmapped, so the reference lives as long as the process.
        unsafe {
            let page = libc::mmap(
                std::ptr::null_mut(),
                std::mem::size_of::<Shared>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if page == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error());
            }
            Ok(&*page.cast::<Shared>())
        }
    }
}

/// The handle leaderrun keeps: the shared page, and the pipe's write end, only ever closed.
#[derive(Debug)]
pub struct Guardian {
    pid: Pid,
    shared: &'static Shared,
    _pipe: PipeWriter,
}

impl Guardian {
    /// Fork the guardian; it revokes leases through `conn` (the same endpoints, TLS files and
    /// credentials as leaderrun).
    ///
    /// # Safety
    /// The process must have one thread (call it before the runtime starts): the forked copy
    /// runs ordinary code.
    pub unsafe fn start(conn: Connection) -> std::io::Result<Guardian> {
        let shared = Shared::map()?;
        let (reader, writer) = std::io::pipe()?;
        match unsafe { fork() }? {
            ForkResult::Child => {
                drop(writer);
                guard(reader, shared, conn)
            }
            ForkResult::Parent { child } => Ok(Guardian {
                pid: child,
                shared,
                _pipe: writer,
            }),
        }
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// leaderrun is exiting with no child left and its leases released: forget the lease (no
    /// revoke is due), close the pipe (the guardian exits at its end of file) and reap the
    /// guardian, so it does not linger as a zombie under PID 1.
    pub fn finish(self) {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        self.lease(0);
        let pid = self.pid;
        drop(self);
        // It exits at once; bounded all the same, so an exit never hangs on it.
        for _ in 0..200 {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                // Reaped now, or by the SIGCHLD reaper before: gone either way.
                _ => return,
            }
        }
    }

    /// The child's group to kill should leaderrun die now (0: none). The child stores its own
    /// before its exec (`spawn::spawn`), so that no instant of the command runs unknown here.
    pub fn group(&self) -> &'static AtomicI64 {
        &self.shared.group
    }

    /// No group to kill any more: the child's is gone (or never ran).
    pub fn forget_group(&self) {
        self.shared.group.store(0, Ordering::SeqCst);
    }

    /// The lease to revoke should leaderrun die now, once the group is confirmed gone; 0 for
    /// none (then the lease expires by itself).
    pub fn lease(&self, id: i64) {
        self.shared.lease.store(id, Ordering::SeqCst);
    }
}

/// The guardian's whole life: wait for the pipe's end of file; then kill the group leaderrun
/// last stored, and once it is confirmed gone, revoke the lease it last stored; exit.
fn guard(mut pipe: std::io::PipeReader, shared: &Shared, conn: Connection) -> ! {
    // It must outlive leaderrun: deaf to the signals aimed at leaderrun, its child or its
    // terminal (`systemctl kill` signals every process of the unit), and to job control too: a
    // stopped guardian could not act on leaderrun's death.
    let aimed = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGPIPE];
    for sig in aimed.into_iter().chain(FORWARDED).chain(JOB_CONTROL) {
        // SAFETY: SIG_IGN installs no handler code.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
    // Tell it apart from leaderrun in ps and top.
    let _ = nix::sys::prctl::set_name(c"leaderrun-guard");
    // Holding leaderrun's stdout open would keep readers of it waiting for end of file.
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
        let _ = nix::unistd::dup2_stderr(&null);
    }
    // Nothing is written to the pipe: a read returns at its end of file, when leaderrun is gone.
    let mut byte = [0u8; 1];
    loop {
        match pipe.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let pgid = i32::try_from(shared.group.load(Ordering::SeqCst)).unwrap_or(0);
    let lease = shared.lease.load(Ordering::SeqCst);
    let gone = pgid <= 0 || kill_group(Pid::from_raw(pgid), CONFIRM_BOUND);
    if gone && lease != 0 {
        revoke(&conn, lease, REVOKE_BOUND);
    }
    std::process::exit(0)
}

/// SIGKILL the group until no live member is left; false if some member still runs after
/// `bound` (uninterruptible sleep): the group is then not confirmed gone.
fn kill_group(pgid: Pid, bound: Duration) -> bool {
    let until = Instant::now() + bound;
    loop {
        // Again each round: a member that was forking when the first one came is covered too.
        if let Err(Errno::ESRCH) = killpg(pgid, Signal::SIGKILL) {
            return true;
        }
        if !group_has_live_member(pgid.as_raw()) {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(CONFIRM_POLL);
    }
}

/// Whether /proc shows a process of group `pgid` that is not a zombie. A zombie runs nothing;
/// it stays until its new parent (PID 1, a subreaper) reaps it, which may be late or never, so
/// `kill(-pgid, 0)` alone would wait for that. A zombie whose other threads still run (its main
/// thread exited first) counts as live.
fn group_has_live_member(pgid: i32) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        // No /proc: nothing can be confirmed.
        return true;
    };
    procs.flatten().any(|entry| {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            return false;
        };
        match stat(&format!("/proc/{pid}/stat")) {
            Some((state, group)) if group == pgid => live(state) || live_thread(pid),
            _ => false,
        }
    })
}

fn live(state: char) -> bool {
    state != 'Z' && state != 'X'
}

/// Whether a thread of `pid` still runs (its main thread, which /proc/PID/stat shows, may have
/// exited before the others).
fn live_thread(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        stat(&t.path().join("stat").to_string_lossy()).is_some_and(|(state, _)| live(state))
    })
}

/// The state letter and the process group from a /proc stat file.
fn stat(path: &str) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    let mut fields = text.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Revoke `lease` through `conn`, trying again until `bound` has passed; quietly, whatever
/// happens (nobody reads the guardian's output).
fn revoke(conn: &Connection, lease: i64, bound: Duration) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let until = tokio::time::Instant::now() + bound;
    runtime.block_on(async {
        let _ = tokio::time::timeout_at(until, async {
            loop {
                if revoke_once(conn, lease, until).await {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    });
    runtime.shutdown_background();
}

/// One attempt: true when nothing is left to do (revoked, already gone, or refused for good).
async fn revoke_once(conn: &Connection, lease: i64, until: tokio::time::Instant) -> bool {
    let left = until.saturating_duration_since(tokio::time::Instant::now());
    let client = match tokio::time::timeout(left, etcd::connect(conn)).await {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => return e.is_fatal(),
        Err(_) => return true,
    };
    let left = until.saturating_duration_since(tokio::time::Instant::now());
    let revoke = |mut c: etcd_client::Client| async move { c.lease_revoke(lease).await };
    match etcd::call_as("lease revoke", left, &client, revoke).await {
        Ok(_) => true,
        Err(e) => matches!(e.kind(), Kind::LeaseGone | Kind::Fatal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_state_and_group_whatever_the_name() {
        let dir = std::env::temp_dir().join(format!("lr-guardian-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stat");
        std::fs::write(&path, "42 (a) b) (c) Z 1 4242 4242 0 -1\n").unwrap();
        assert_eq!(stat(&path.to_string_lossy()), Some(('Z', 4242)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_group_of_zombies_is_gone_and_a_running_one_is_not() {
        use std::os::unix::process::CommandExt;
        // Not beside the tests that count or reap every child of the process.
        let _serial = crate::process::child::tests::serial();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id() as i32;
        assert!(group_has_live_member(pgid));
        // Killed but not reaped: a zombie, which the guardian counts as gone.
        assert!(kill_group(Pid::from_raw(pgid), Duration::from_secs(2)));
        assert!(!group_has_live_member(pgid));
        child.wait().unwrap();
        assert!(kill_group(Pid::from_raw(pgid), Duration::from_secs(2)));
    }
}
