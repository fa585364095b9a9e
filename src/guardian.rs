//! The guardian: a tiny process forked at start-up that kills the child's whole process group
//! if leaderrun dies without doing so itself (SIGKILL, a crash).
//!
//! The parent-death signal reaches only the direct child; the guardian covers the rest of its
//! group. It learns the current group over a pipe, and notices leaderrun's death by the pipe's
//! end of file, which the kernel delivers whatever way leaderrun ended.

use nix::sys::signal::{killpg, signal, SigHandler, Signal};
use nix::unistd::{fork, ForkResult, Pid};
use std::io::{PipeWriter, Read, Write};
use std::sync::Mutex;

/// The handle leaderrun keeps: the pipe's write end.
#[derive(Debug)]
pub struct Guardian {
    pid: Pid,
    pipe: Mutex<PipeWriter>,
}

impl Guardian {
    /// Fork the guardian.
    ///
    /// # Safety
    /// The process must have one thread (call it before the runtime starts): the forked copy
    /// runs ordinary code.
    pub unsafe fn start() -> std::io::Result<Guardian> {
        let (reader, writer) = std::io::pipe()?;
        match unsafe { fork() }? {
            ForkResult::Child => {
                drop(writer);
                guard(reader)
            }
            ForkResult::Parent { child } => Ok(Guardian {
                pid: child,
                pipe: Mutex::new(writer),
            }),
        }
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// leaderrun is exiting with no child left: close the pipe (the guardian exits at its end of
    /// file) and reap the guardian, so it does not linger as a zombie under PID 1.
    pub fn finish(self) {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
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

    /// The child's group to kill should leaderrun die now; 0 for none.
    pub fn watch(&self, pgid: i32) {
        let mut pipe = self.pipe.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = pipe.write_all(&pgid.to_le_bytes()) {
            tracing::warn!(error = %e, "the guardian is gone: a crash would leave the child's group running");
        }
    }
}

/// The guardian's whole life: follow the current group; at end of file, kill it and exit.
fn guard(mut pipe: std::io::PipeReader) -> ! {
    // It must outlive leaderrun: deaf to the signals aimed at leaderrun or its terminal.
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGPIPE,
        // Job control too: a stopped guardian could not act on leaderrun's death.
        Signal::SIGTSTP,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
    ] {
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
    let mut pgid = 0i32;
    let mut buf = [0u8; 4];
    while pipe.read_exact(&mut buf).is_ok() {
        pgid = i32::from_le_bytes(buf);
    }
    if pgid > 0 {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
    std::process::exit(0)
}
