//! Shared fixtures for leaderrun's integration tests: real etcd processes
//! (`etcd`), a TCP fault-injection proxy (`proxy`), the fenced child's
//! record files (`records`), /proc lookups (`procs`), and the harness that
//! runs leaderrun in a test (`scene`: start here, its doc has an example),
//! certificates made at test time (`tls`), plus small process/time helpers.
//!
//! Each integration test crate compiles this module on its own and uses only
//! part of it, hence the module-wide allows.
#![allow(dead_code, unused_imports)]

pub mod bench;
pub mod etcd;
pub mod http;
pub mod members;
pub mod procs;
pub mod proxy;
pub mod records;
pub mod scene;
pub mod tls;

pub use etcd::{
    etcdctl_at, etcdctl_at_ok, etcdctl_command, AuthToken, Etcd, EtcdCluster, EtcdOptions,
};
pub use members::{
    busiest_member, bytes_sent_by_port, keepalive_member, move_raft_leader, move_raft_leader_off,
};
pub use procs::{
    children, comm, exists, guardian_of, pgrp, ppid, process_alive, process_state, stat_fields,
};
pub use proxy::{FaultProxy, Mode};
pub use records::{
    assert_at_most_concurrent, assert_no_overlap, fenced_child_path, max_concurrent, mono_now_ns,
    overlapping, Ending, HoldParser, RecordParser, Records, Run,
};
pub use scene::*;
pub use tls::{jwt_keys, CertPair, Certs};

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A loopback TCP port that was free a moment ago. Another process may grab
/// it before the caller binds it, so callers that spawn servers must retry.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct free loopback ports. All listeners are held until every port
/// is picked so the kernel cannot hand out the same port twice.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local_addr").port())
        .collect()
}

/// Polls `cond` every `poll` until it returns true (-> true) or `timeout`
/// passes (-> false). `cond` is always evaluated at least once.
pub fn wait_until(timeout: Duration, poll: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        thread::sleep(poll.min(deadline - now));
    }
}

/// A unique name: pid + per-process counter + wall-clock nanos, so parallel
/// tests and parallel test binaries never collide.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{nanos:09}", std::process::id())
}

/// A directory under the system temp dir, removed (recursively) on Drop.
/// Set `LEADERRUN_KEEP_TMP=1` to keep it for post-mortem debugging.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        for _ in 0..100 {
            let path = std::env::temp_dir().join(unique_name(prefix));
            match std::fs::create_dir(&path) {
                Ok(()) => return TempDir { path },
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("cannot create temp dir {}: {e}", path.display()),
            }
        }
        panic!("could not find a unique temp dir name for {prefix}");
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `self.path().join(name)`.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("LEADERRUN_KEEP_TMP").is_some() {
            eprintln!("keeping temp dir {}", self.path.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Runs `cmd` to completion with piped stdout/stderr, SIGKILLing it if it
/// takes longer than `timeout` (the Output's status then shows the signal).
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let status = wait_or_kill(&mut child, timeout);
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

fn drain(mut r: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// Waits up to `timeout` for `child`; SIGKILLs and reaps it if still running.
pub fn wait_or_kill(child: &mut Child, timeout: Duration) -> ExitStatus {
    if let Some(status) = wait_timeout(child, timeout) {
        return status;
    }
    let _ = child.kill();
    child.wait().expect("wait after kill")
}

/// Waits up to `timeout` for `child` to exit, polling every 5 ms.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let mut status = None;
    wait_until(timeout, Duration::from_millis(5), || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    status
}

/// Sends `sig` to `pid`, ignoring "no such process" (it already exited).
pub fn signal_pid(pid: u32, sig: Signal) {
    match kill(Pid::from_raw(pid as i32), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => panic!("kill({pid}, {sig}) failed: {e}"),
    }
}

/// True if a process with this pid exists (zombies included).
pub fn pid_exists(pid: u32) -> bool {
    kill(Pid::from_raw(pid as i32), None).is_ok()
}

/// Owns a spawned process and SIGKILLs + reaps it on Drop, so a failing test
/// never leaks it. Use for leaderrun instances and fenced children.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    pub fn spawn(cmd: &mut Command) -> ChildGuard {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
        ChildGuard { child: Some(child) }
    }

    pub fn pid(&self) -> u32 {
        self.child_ref().id()
    }

    /// Sends a signal (SIGTERM, SIGSTOP, ...) without waiting.
    pub fn signal(&self, sig: Signal) {
        signal_pid(self.pid(), sig);
    }

    /// Waits up to `timeout` for exit; None if still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_timeout(self.child_mut(), timeout)
    }

    /// Non-blocking exit check.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child_mut().try_wait().expect("try_wait")
    }

    /// SIGKILL (after SIGCONT, in case it was stopped) and reap.
    pub fn kill(&mut self) -> ExitStatus {
        let child = self.child_mut();
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        signal_pid(child.id(), Signal::SIGCONT);
        let _ = child.kill();
        child.wait().expect("wait after kill")
    }

    /// Gives up ownership (no kill on Drop).
    pub fn into_inner(mut self) -> Child {
        self.child.take().expect("child present")
    }

    pub fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("child present")
    }

    fn child_ref(&self) -> &Child {
        self.child.as_ref().expect("child present")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.kill();
        }
    }
}

/// The last `n` lines of a text file, for panic messages.
pub fn file_tail(path: &Path, n: usize) -> String {
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => return format!("<cannot read {}: {e}>", path.display()),
    };
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
