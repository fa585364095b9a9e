//! A hot standby's role channel (`--hot-standby`): the child runs in every role and learns
//! each change from a file, `LEADERRUN_ROLE_FILE`, replaced atomically and announced by a
//! signal (`--role-signal`) to its group; it confirms a demotion with a datagram
//! `ROLE=standby` on `LEADERRUN_NOTIFY_SOCKET` (sd_notify's format). Only a datagram from a
//! process of the child's own group counts, as systemd's `NotifyAccess=main` checks its
//! sender; anything else is ignored and logged.
//!
//! The role file is a few `KEY=value` lines a shell can source: `ROLE=leader` with the term's
//! `REVISION` (the fencing token), `KEY` and `LEASE`, or `ROLE=standby`.

use crate::log::recurring::Recurring;
use crate::process::child::Child;
use nix::sys::signal::Signal;
use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, UnixAddr};
use std::io::{IoSliceMut, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tokio::io::Interest;
use tokio::net::UnixDatagram;

/// The signal that tells the child to read its role file, unless `--role-signal` says
/// otherwise: SIGURG, ignored by default (a child that has not yet set its handler is not
/// killed by it) and not among the signals passed on to the child.
pub const DEFAULT_SIGNAL: Signal = Signal::SIGURG;

/// At most this many stale datagrams are dropped before a request (a socket buffer's worth).
const MAX_DRAINED: usize = 4096;

/// Datagrams read before the supervisor's other work gets a turn.
const BATCH: usize = 32;

/// The largest datagram read; longer ones are garbage anyway.
const MAX_DATAGRAM: usize = 4096;

/// What the child is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Told {
    Standby,
    Leader {
        revision: i64,
        key: String,
        lease: String,
    },
}

impl Told {
    fn file_text(&self) -> String {
        match self {
            Told::Standby => "ROLE=standby\n".into(),
            Told::Leader {
                revision,
                key,
                lease,
            } => {
                // Quoted as a shell reads it: election names may hold spaces.
                let key = key.replace('\'', "'\\''");
                format!("ROLE=leader\nREVISION={revision}\nKEY='{key}'\nLEASE={lease}\n")
            }
        }
    }
}

/// At most this many entries of the base directory are looked at for stale role directories.
const SWEEP_BOUND: usize = 10_000;

/// Remove the role directories that a leaderrun killed without its clean-up (SIGKILL) left in
/// `base`: ours (same owner), named `leaderrun-<pid>`, whose notify socket nobody has bound any
/// more (a connect is refused). The socket, not the pid, tells: a pid may be reused, or belong to
/// another pid namespace sharing the directory. Best effort, bounded.
fn sweep_stale(base: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    // Our own uid, as the kernel shows it (no `user` feature of nix for one call).
    let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
        return;
    };
    for entry in entries.take(SWEEP_BOUND).flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("leaderrun-")) else {
            continue;
        };
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let dir = entry.path();
        let ours = std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir() && m.uid() == uid);
        let socket = dir.join("notify");
        let stale = matches!(
            std::os::unix::net::UnixDatagram::unbound().and_then(|s| s.connect(&socket)),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
        );
        if ours && stale {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// The file, the socket and the signal; the private directory that holds the first two goes
/// when it is dropped.
pub struct RoleChannel {
    dir: PathBuf,
    file: PathBuf,
    socket_path: PathBuf,
    socket: UnixDatagram,
    signal: Signal,
    noise: Recurring,
}

impl RoleChannel {
    /// A private directory (mode 0700) under `$XDG_RUNTIME_DIR` or the temp dir, the role file
    /// saying `standby`, and the socket bound with SO_PASSCRED. Needs the runtime.
    pub fn new(signal: Signal) -> std::io::Result<RoleChannel> {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        sweep_stale(&base);
        let dir = base.join(format!("leaderrun-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        let socket_path = dir.join("notify");
        let socket = UnixDatagram::bind(&socket_path)?;
        setsockopt(&socket, sockopt::PassCred, &true).map_err(std::io::Error::from)?;
        let channel = RoleChannel {
            file: dir.join("role"),
            dir,
            socket_path,
            socket,
            signal,
            noise: Recurring::new("hot standby's notify socket"),
        };
        channel.write(&Told::Standby)?;
        Ok(channel)
    }

    /// The child's variables: where to read its role, where to confirm, how it starts.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("LEADERRUN_ROLE".into(), "standby".into()),
            (
                "LEADERRUN_ROLE_FILE".into(),
                self.file.display().to_string(),
            ),
            (
                "LEADERRUN_NOTIFY_SOCKET".into(),
                self.socket_path.display().to_string(),
            ),
        ]
    }

    /// Replace the role file (a new file renamed over the old: a reader sees one or the
    /// other, whole), then signal the child's group.
    pub fn tell(&mut self, child: &Child, told: &Told) -> std::io::Result<()> {
        self.write(told)?;
        child.signal_group(self.signal);
        Ok(())
    }

    fn write(&self, told: &Told) -> std::io::Result<()> {
        let tmp = self.dir.join("role.new");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(told.file_text().as_bytes())?;
        std::fs::rename(&tmp, &self.file)
    }

    /// Drop what the socket holds: a confirmation counts only after the request it answers.
    /// Bounded: a flooding child cannot keep it reading.
    pub fn drain(&mut self) {
        for _ in 0..MAX_DRAINED {
            if self.receive_now().is_none() {
                return;
            }
        }
    }

    /// Resolves when the group of the child `leader` confirms `ROLE=standby`. Cancel-safe; anything else
    /// that arrives is logged (a recurring condition) and dropped.
    pub async fn confirmed_standby(&mut self, leader: u32) {
        loop {
            if self.socket.readable().await.is_err() {
                return std::future::pending().await;
            }
            // A few at a time: a child that floods the socket must not keep the supervisor's
            // thread from its timers (the deadline among them).
            for _ in 0..BATCH {
                let Some((pid, text)) = self.receive_now() else {
                    break;
                };
                match verdict(pid, &text, leader) {
                    Ok(true) => {
                        self.noise.clear();
                        return;
                    }
                    Ok(false) => {}
                    Err(why) => self.noise.report(why),
                }
            }
            tokio::task::yield_now().await;
        }
    }

    /// One datagram, if one is waiting: the sender's pid (0 if the kernel gave none) and text.
    fn receive_now(&self) -> Option<(i32, String)> {
        let fd = self.socket.as_raw_fd();
        let received = self.socket.try_io(Interest::READABLE, || {
            let mut buf = [0u8; MAX_DATAGRAM];
            let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = recvmsg::<UnixAddr>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_DONTWAIT)
                .map_err(std::io::Error::from)?;
            let mut pid = 0;
            for c in msg.cmsgs().map_err(std::io::Error::from)? {
                if let ControlMessageOwned::ScmCredentials(cred) = c {
                    pid = cred.pid();
                }
            }
            let n = msg.bytes;
            Ok((
                pid,
                String::from_utf8_lossy(&buf[..n.min(MAX_DATAGRAM)]).into_owned(),
            ))
        });
        received.ok()
    }
}

impl Drop for RoleChannel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a datagram from `pid` saying `text` confirms demotion of the child `leader` (the
/// leader of its group): Err(why) for one that is not evidence at all.
fn verdict(pid: i32, text: &str, leader: u32) -> Result<bool, String> {
    if pid <= 0 || !in_group(pid, leader) {
        return Err(format!(
            "a datagram from pid {pid}, not of the child's group: ignored"
        ));
    }
    let says_standby = text
        .lines()
        .any(|l| l.trim_end_matches('\r') == "ROLE=standby");
    if !says_standby {
        let shown = crate::log::shown_value(text);
        return Err(format!("a datagram without ROLE=standby: {shown}"));
    }
    Ok(true)
}

/// Whether process `pid` is in the process group led by `leader` (its pgrp, from /proc).
fn in_group(pid: i32, leader: u32) -> bool {
    if pid as u32 == leader {
        return true;
    }
    let stat = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat"));
    let Ok(stat) = stat else { return false };
    // `pid (comm) state ppid pgrp ...`: comm may hold spaces and parentheses.
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return false;
    };
    after.split_whitespace().nth(2) == Some(&leader.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_directory_whose_socket_nobody_binds_is_swept_and_a_live_one_kept() {
        let base =
            std::env::temp_dir().join(format!("leaderrun-sweep-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let make = |name: &str| {
            let dir = base.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("role"), "ROLE=leader\n").unwrap();
            dir
        };
        // A dead leaderrun's: its socket file is left, bound by nobody.
        let dead = make("leaderrun-4000001");
        drop(std::os::unix::net::UnixDatagram::bind(dead.join("notify")).unwrap());
        // A live one's, and directories that are not role directories.
        let live = make("leaderrun-4000002");
        let _bound = std::os::unix::net::UnixDatagram::bind(live.join("notify")).unwrap();
        let other = make("leaderrun-x");
        let no_socket = make("leaderrun-4000003");
        sweep_stale(&base);
        assert!(!dead.exists());
        assert!(live.exists() && other.exists() && no_socket.exists());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn only_the_childs_group_saying_role_standby_confirms() {
        let me = std::process::id();
        // Our own group's leader is not us in a test harness; our pid leads nothing else here.
        assert_eq!(verdict(me as i32, "ROLE=standby\n", me), Ok(true));
        assert_eq!(verdict(me as i32, "STATUS=x\nROLE=standby", me), Ok(true));
        assert!(verdict(me as i32, "ROLE=leader\n", me).is_err());
        assert!(verdict(me as i32, "garbage\u{0}\u{7}", me).is_err());
        assert!(verdict(0, "ROLE=standby\n", me).is_err());
        assert!(verdict(1, "ROLE=standby\n", me).is_err());
    }

    #[test]
    fn the_role_file_can_be_sourced_by_a_shell() {
        let told = Told::Leader {
            revision: 42,
            key: "svc/694d".into(),
            lease: "694d".into(),
        };
        assert_eq!(
            told.file_text(),
            "ROLE=leader\nREVISION=42\nKEY='svc/694d'\nLEASE=694d\n"
        );
        assert_eq!(Told::Standby.file_text(), "ROLE=standby\n");
    }
}
