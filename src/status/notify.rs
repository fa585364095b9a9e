//! systemd's service notifications (sd_notify(3)), for a `Type=notify` unit; nothing here runs
//! without `NOTIFY_SOCKET`:
//!
//! - `READY=1` the first time the role is standby or leading: connected and campaigning, so
//!   `systemctl start` returns on a standby too;
//! - `STATUS=` the role in words on every change (`systemctl status` shows it);
//! - `STOPPING=1` as soon as leaderrun is exiting (TERM/INT, or nothing left to do), and in any
//!   case before it exits;
//! - `WATCHDOG=1` every half of `WATCHDOG_USEC` (`WatchdogSec=`).
//!
//! **The watchdog pings come from the supervisor's thread.** [`Notifier::run`] is a task on the
//! supervisor's current-thread runtime, so it runs only while that thread does: when leaderrun
//! is frozen (SIGSTOP, a paused VM) or its thread is stuck, the pings stop and systemd kills the
//! unit's whole cgroup, child included, after `WatchdogSec`. That closes the frozen-supervisor
//! gap (docs/SAFETY.md). A thread of its own would ping on for a supervisor that no longer can
//! stop its child.
//!
//! **The sender never blocks.** The notifications go out on a non-blocking `UnixDatagram` of
//! std: a notify socket that is full (a busy or stalled service manager) drops a message rather
//! than hold up the thread that must stop the child by its deadline. A message that cannot be
//! sent is logged once and never takes the supervisor down; a READY or STATUS that failed is sent
//! again with the next watchdog ping.

use crate::log::escape_controls;
use crate::log::recurring::Recurring;
use crate::process::health::Health;
use crate::status::Role;
use std::ffi::{OsStr, OsString};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::time::{interval, Interval, MissedTickBehavior};
use tracing::{debug, warn};

/// systemd's variables: leaderrun's own, never passed to the child (which is not the unit's
/// main process and must not ping the watchdog for the supervisor).
pub const VARS: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// The shortest ping period: a WATCHDOG_USEC of a few microseconds is honoured as well as a
/// timer can.
const MIN_PING: Duration = Duration::from_millis(1);

/// Tells systemd the role as it changes, and pings its watchdog.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    address: SocketAddr,
    /// `NOTIFY_SOCKET` as given, for the log.
    name: String,
    election: String,
    /// How often to ping: half of `WATCHDOG_USEC`. None: no watchdog for us.
    ping: Option<Duration>,
    /// `WATCHDOG_USEC` itself (systemd's `WatchdogSec`), when the watchdog is ours.
    watchdog: Option<Duration>,
    /// READY=1 was sent.
    ready: bool,
    /// STOPPING=1 was sent.
    stopping: bool,
    /// The last role's message did not go out: sent again with the next ping.
    unsent: bool,
    /// Since when the role is Connecting (wall clock, for the status line).
    waiting_since: Option<SystemTime>,
    /// The child's health, when a health check runs.
    health: Option<Health>,
    /// The health channel closed (with the supervisor): no more changes from it.
    health_closed: bool,
    /// Sending fails: logged when it starts, as a reminder, and when it works again.
    trouble: Recurring,
}

impl Notifier {
    /// From the process's environment: None without `NOTIFY_SOCKET` (not under systemd), or
    /// when it cannot be used (said once, in the log).
    pub fn from_env(election: &str) -> Option<Notifier> {
        Notifier::from_vars(|name| std::env::var_os(name), std::process::id(), election)
    }

    fn from_vars(
        var: impl Fn(&str) -> Option<OsString>,
        pid: u32,
        election: &str,
    ) -> Option<Notifier> {
        let var = |name| var(name).filter(|v| !v.is_empty());
        let socket_var = var("NOTIFY_SOCKET")?;
        let name = escape_controls(&socket_var.to_string_lossy()).into_owned();
        let address = match address(&socket_var) {
            Ok(a) => a,
            Err(why) => {
                warn!(socket = %name, "NOTIFY_SOCKET: {why}; not notifying systemd");
                return None;
            }
        };
        let socket = match UnixDatagram::unbound().and_then(|s| {
            s.set_nonblocking(true)?;
            Ok(s)
        }) {
            Ok(s) => s,
            Err(e) => {
                warn!(socket = %name, error = %e, "cannot open a socket to notify systemd; going on without");
                return None;
            }
        };
        let usec = var("WATCHDOG_USEC");
        let ping = match watchdog(usec.clone(), var("WATCHDOG_PID"), pid) {
            Ok(ping) => ping,
            Err(why) => {
                warn!("{why}: no watchdog pings");
                None
            }
        };
        if let Some(p) = ping {
            debug!(every_ms = crate::log::ms(p), "pinging systemd's watchdog");
        }
        Some(Notifier {
            socket,
            address,
            name,
            election: election.to_string(),
            ping,
            watchdog: ping
                .and(usec)
                .and_then(|u| u.to_str()?.parse().ok())
                .map(Duration::from_micros),
            ready: false,
            stopping: false,
            unsent: false,
            waiting_since: None,
            health: None,
            health_closed: false,
            trouble: Recurring::new("notifying systemd (NOTIFY_SOCKET)"),
        })
    }

    /// systemd's watchdog interval (`WatchdogSec`), when this process pings it.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Follow the role until the supervisor drops its status channel (it is returning), then
    /// make sure STOPPING=1 went out. Pings the watchdog meanwhile. Spawn it on the supervisor's
    /// runtime, and await it after the supervisor returned.
    pub async fn run(
        mut self,
        mut roles: watch::Receiver<Role>,
        mut health: watch::Receiver<Option<Health>>,
    ) {
        let mut pings = self.ping.map(|period| {
            let mut pings = interval(period);
            // After a freeze, one ping, not a burst that would hide it.
            pings.set_missed_tick_behavior(MissedTickBehavior::Delay);
            pings
        });
        let role = roles.borrow_and_update().clone();
        self.tell(&role);
        loop {
            tokio::select! {
                changed = roles.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let role = roles.borrow_and_update().clone();
                    self.health = *health.borrow_and_update();
                    self.tell(&role);
                }
                changed = health.changed(), if !self.health_closed => {
                    match changed {
                        Ok(()) => {
                            self.health = *health.borrow_and_update();
                            let role = roles.borrow().clone();
                            self.tell(&role);
                        }
                        Err(_) => self.health_closed = true,
                    }
                }
                _ = tick(&mut pings) => {
                    if self.unsent {
                        let role = roles.borrow().clone();
                        self.tell(&role);
                    }
                    self.send("WATCHDOG=1\n");
                }
            }
        }
        if !self.stopping {
            self.send("STOPPING=1\n");
        }
    }

    /// Send the role's message: STATUS, with READY=1 or STOPPING=1 the first time they apply.
    fn tell(&mut self, role: &Role) {
        if *role == Role::Connecting {
            self.waiting_since.get_or_insert_with(SystemTime::now);
        } else {
            self.waiting_since = None;
        }
        let ready = !self.ready && matches!(role, Role::Standby | Role::Leading { .. });
        let stopping = !self.stopping && *role == Role::Exiting;
        let mut msg = String::new();
        if ready {
            msg.push_str("READY=1\n");
        }
        msg.push_str(&format!("STATUS={}\n", self.status_line(role)));
        if stopping {
            msg.push_str("STOPPING=1\n");
        }
        let sent = self.send(&msg);
        self.unsent = !sent;
        if sent {
            self.ready |= ready;
            self.stopping |= stopping;
        }
    }

    /// The role in words, on one line.
    fn status_line(&self, role: &Role) -> String {
        match role {
            Role::Connecting => {
                let since = self.waiting_since.unwrap_or_else(SystemTime::now);
                format!(
                    "waiting for etcd since {}",
                    humantime::format_rfc3339_seconds(since)
                )
            }
            Role::Standby => format!(
                "standby: campaigning on {}",
                escape_controls(&self.election)
            ),
            Role::Leading { key, revision, pid } => {
                let child = match pid {
                    Some(pid) => format!("child pid {pid}"),
                    None => "child restarting".to_string(),
                };
                let health = match self.health {
                    Some(h) => format!(", health {h}"),
                    None => String::new(),
                };
                format!(
                    "leading: key {}, revision {revision}, {child}{health}",
                    escape_controls(key)
                )
            }
            Role::Stopping => "stopping the child: leadership is ending".to_string(),
            Role::Exiting => "stopping: leaderrun is exiting".to_string(),
        }
    }

    /// One datagram, never blocking; whether it went out.
    fn send(&mut self, msg: &str) -> bool {
        match self.socket.send_to_addr(msg.as_bytes(), &self.address) {
            Ok(_) => {
                self.trouble.clear();
                true
            }
            Err(e) => {
                self.trouble.report(format_args!("{}: {e}", self.name));
                false
            }
        }
    }
}

/// The next ping, never without a watchdog.
async fn tick(pings: &mut Option<Interval>) {
    match pings {
        Some(pings) => {
            pings.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// `NOTIFY_SOCKET`'s address: a path, or `@name` in the abstract namespace.
fn address(value: &OsStr) -> Result<SocketAddr, String> {
    let bytes = value.as_bytes();
    let parsed = match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(value),
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
        _ => return Err("not a socket path or an abstract name (@name)".to_string()),
    };
    parsed.map_err(|e| e.to_string())
}

/// The ping period from `WATCHDOG_USEC` and `WATCHDOG_PID`, as sd_watchdog_enabled(3) reads
/// them: Ok(None) when there is no watchdog for us, Err with what is wrong with a bad value.
fn watchdog(
    usec: Option<OsString>,
    pid: Option<OsString>,
    ours: u32,
) -> Result<Option<Duration>, String> {
    let Some(usec) = usec else {
        return Ok(None);
    };
    let text = usec.to_string_lossy();
    let usec = match text.parse::<u64>() {
        Ok(n) if n > 0 => n,
        _ => {
            return Err(format!(
                "WATCHDOG_USEC={} is not a positive number of microseconds",
                escape_controls(&text)
            ))
        }
    };
    if let Some(pid) = pid {
        let text = pid.to_string_lossy();
        match text.parse::<u32>() {
            Ok(p) if p == ours => {}
            Ok(p) => {
                debug!(watchdog_pid = p, "the watchdog is another process's");
                return Ok(None);
            }
            Err(_) => {
                return Err(format!(
                    "WATCHDOG_PID={} is not a process ID",
                    escape_controls(&text)
                ))
            }
        }
    }
    Ok(Some((Duration::from_micros(usec) / 2).max(MIN_PING)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn os(s: &str) -> Option<OsString> {
        Some(s.into())
    }

    #[test]
    fn the_watchdog_pings_at_half_the_interval_for_us_only() {
        let ping = |usec: Option<&str>, pid: Option<&str>| {
            watchdog(usec.and_then(os), pid.and_then(os), 42)
        };
        assert_eq!(ping(None, None), Ok(None));
        assert_eq!(
            ping(Some("10000000"), None),
            Ok(Some(Duration::from_secs(5)))
        );
        assert_eq!(
            ping(Some("1000000"), Some("42")),
            Ok(Some(Duration::from_millis(500)))
        );
        assert_eq!(ping(Some("1000000"), Some("43")), Ok(None));
        assert_eq!(ping(Some("1"), None), Ok(Some(MIN_PING)));
        for bad in ["abc", "0", "-5", "1.5", " 5"] {
            let e = ping(Some(bad), None).unwrap_err();
            assert!(e.contains("WATCHDOG_USEC"), "{bad}: {e}");
        }
        assert!(ping(Some("1000000"), Some("x")).is_err());
        // A bad value that is not ours to use is not looked at.
        assert_eq!(ping(None, Some("x")), Ok(None));
    }

    #[test]
    fn the_socket_is_a_path_or_an_abstract_name() {
        let a = address(OsStr::new("/run/systemd/notify")).unwrap();
        assert_eq!(
            a.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        let a = address(OsStr::new("@leaderrun/notify")).unwrap();
        assert_eq!(a.as_abstract_name(), Some(&b"leaderrun/notify"[..]));
        assert!(address(OsStr::new("run/notify")).is_err());
        assert!(address(OsStr::new("vsock:2:1234")).is_err());
    }

    fn notifier(vars: &[(&str, &str)]) -> Option<Notifier> {
        let vars: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        Notifier::from_vars(|k| vars.get(k).cloned(), 42, "web\n1")
    }

    #[test]
    fn nothing_without_notify_socket() {
        assert!(notifier(&[]).is_none());
        assert!(notifier(&[("NOTIFY_SOCKET", ""), ("WATCHDOG_USEC", "1000")]).is_none());
        let n = notifier(&[("NOTIFY_SOCKET", "/nonexistent"), ("WATCHDOG_USEC", "abc")]);
        assert_eq!(n.unwrap().ping, None);
    }

    #[test]
    fn status_lines_name_the_role_on_one_line() {
        let n = notifier(&[("NOTIFY_SOCKET", "/nonexistent")]).unwrap();
        let leading = Role::Leading {
            key: "web/694d".into(),
            revision: 42,
            pid: Some(7),
        };
        assert_eq!(
            n.status_line(&leading),
            "leading: key web/694d, revision 42, child pid 7"
        );
        let mut n = n;
        n.health = Some(Health::Failing {
            failures: 1,
            retries: 3,
        });
        assert_eq!(
            n.status_line(&leading),
            "leading: key web/694d, revision 42, child pid 7, health failing (1 of 3)"
        );
        assert_eq!(
            n.status_line(&Role::Standby),
            "standby: campaigning on web\\n1"
        );
        assert!(n
            .status_line(&Role::Connecting)
            .starts_with("waiting for etcd since 20"));
        assert!(n.status_line(&Role::Stopping).starts_with("stopping"));
        assert!(n.status_line(&Role::Exiting).starts_with("stopping"));
    }

    /// READY=1 goes out once, with the first standby or leading role; STOPPING=1 once, with
    /// the exiting role or at the end; an unwritable socket is survived.
    #[tokio::test]
    async fn ready_once_then_stopping_at_the_end() {
        let dir = std::env::temp_dir().join(format!("leaderrun-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let systemd = UnixDatagram::bind(&path).unwrap();
        systemd.set_nonblocking(true).unwrap();
        let n = notifier(&[("NOTIFY_SOCKET", path.to_str().unwrap())]).unwrap();
        let status = crate::status::Status::default();
        let task = tokio::spawn(n.run(status.subscribe(), status.subscribe_health()));
        tokio::task::yield_now().await;
        for role in [Role::Standby, Role::Connecting, Role::Standby] {
            status.set(role);
            tokio::task::yield_now().await;
        }
        drop(status);
        task.await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while let Ok(n) = systemd.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        let all = got.concat();
        assert_eq!(all.matches("READY=1").count(), 1, "{got:?}");
        assert!(got[0].starts_with("STATUS=waiting for etcd"), "{got:?}");
        assert!(got[1].starts_with("READY=1\nSTATUS=standby"), "{got:?}");
        assert!(got[2].starts_with("STATUS=waiting for etcd"), "{got:?}");
        assert_eq!(got.last().map(String::as_str), Some("STOPPING=1\n"));
        // The socket gone: the notifier goes on, and ends as before.
        std::fs::remove_file(&path).unwrap();
        let n = notifier(&[("NOTIFY_SOCKET", path.to_str().unwrap())]).unwrap();
        let status = crate::status::Status::default();
        let task = tokio::spawn(n.run(status.subscribe(), status.subscribe_health()));
        status.set(Role::Standby);
        tokio::task::yield_now().await;
        drop(status);
        task.await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
