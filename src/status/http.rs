//! The HTTP status endpoint (`--status-addr`): GET and HEAD of
//!
//! - `/leader`: 200 only while this candidate leads, its child runs and the lease's stop time
//!   `D - m - G` is ahead; else 503 (a load balancer's health check: HAProxy's `option
//!   httpchk`, like Patroni's `/primary`);
//! - `/standby`: 200 while this candidate holds a lease and waits in the campaign; else 503;
//! - `/health`: 200 while the supervisor runs and, when leading, the deadline D is ahead;
//! - `/status`: the facts as JSON; `/metrics`: Prometheus text ([`crate::metrics`]).
//!
//! **It shares the supervisor's thread.** The server is a task on the supervisor's
//! current-thread runtime: an answer proves that the thread which keeps the lease and stops the
//! child runs, and no answer ever says "leader" about a supervisor that could no longer act.
//! So nothing a client does may hold that thread: every connection is bounded by
//! [`crate::status::http1`] (request head within 5 s and 8 KiB, garbage answered 400) and closed after
//! [`CONNECTION_LIFETIME`] whatever happens, and at most [`MAX_CONNECTIONS`] are open at a
//! time. When they are all taken, a new connection takes the place of the oldest one that is
//! waiting for a request (idle, or sending its head slowly): connections held open by one
//! client, or reopened as fast as they are closed, cannot keep a load balancer's probe out,
//! and memory and descriptors stay bounded (a connection is only closed at once when all the
//! others are being answered, which takes a moment). A per-client limit would not do: the
//! load balancer and a misbehaving client may share an address, and many addresses defeat it.
//! No handler waits on anything but `/status` on a standby,
//! which reads the leader's id from etcd on demand within [`LEADER_READ_TIMEOUT`] (no standing
//! watch per standby: etcd's load matters with hundreds of them).

use crate::election::{self, Candidate};
use crate::error::Error;
use crate::etcd::{self, Connection};
use crate::lease::{LeaseFacts, LeaseView};
use crate::log::recurring::Recurring;
use crate::metrics;
use crate::process::health::Health;
use crate::status::http1::{self, Request, Response};
use crate::status::Role;
use etcd_client::Client;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// Any connection is closed after this, busy or not.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Connections open at once; a new one beyond them takes the place of the oldest one waiting
/// for a request ([`Connections::make_room`]).
pub const MAX_CONNECTIONS: usize = 128;
/// `/status` on a standby: how long the read of the leader's id may take.
pub const LEADER_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Listen on `addr` (at start-up, before anything starts: an address that cannot be bound is
/// a configuration error of this host, exit 2).
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, Error> {
    let bound = match addr {
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => every_address(addr.port()),
        _ => std::net::TcpListener::bind(addr),
    };
    let listener = bound
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| Error::Usage(format!("--status-addr {addr}: cannot listen there: {e}")))?;
    Ok(listener)
}

/// Every address of the host (`[::]:PORT`, or `:PORT`): one IPv6 socket with IPV6_V6ONLY off,
/// which takes IPv4 connections too (as `::ffff:a.b.c.d`) whatever the host's
/// `net.ipv6.bindv6only` says; `0.0.0.0:PORT` on a host without IPv6.
fn every_address(port: u16) -> std::io::Result<std::net::TcpListener> {
    use nix::sys::socket::{self as sock, sockopt, AddressFamily, SockFlag, SockType};
    use std::os::fd::AsRawFd;
    let fd = match sock::socket(
        AddressFamily::Inet6,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    ) {
        Err(nix::errno::Errno::EAFNOSUPPORT) => {
            return std::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, port))
        }
        other => other?,
    };
    sock::setsockopt(&fd, sockopt::Ipv6V6Only, &false)?;
    // As std's bind does: a port in TIME_WAIT from a previous run can be listened on again.
    sock::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    let any = std::net::SocketAddrV6::new(std::net::Ipv6Addr::UNSPECIFIED, port, 0, 0);
    sock::bind(fd.as_raw_fd(), &sock::SockaddrIn6::from(any))?;
    sock::listen(&fd, sock::Backlog::MAXCONN)?;
    Ok(std::net::TcpListener::from(fd))
}

/// What the answers are made of.
pub struct Context {
    pub roles: watch::Receiver<Role>,
    /// The child's health while leading with a health check.
    pub health: watch::Receiver<Option<Health>>,
    pub lease: watch::Receiver<Option<LeaseView>>,
    pub election: String,
    pub id: String,
    /// `--priority` and `--preempt` (None: never), as `/status` shows them.
    pub priority: u32,
    pub preempt: Option<std::time::Duration>,
    pub connection: Connection,
    /// A standby's client for reading the leader's id, built at the first `/status` that needs
    /// it and kept.
    client: tokio::sync::Mutex<Option<Client>>,
}

impl Context {
    pub fn new(
        roles: watch::Receiver<Role>,
        health: watch::Receiver<Option<Health>>,
        lease: watch::Receiver<Option<LeaseView>>,
        election: &str,
        id: &str,
        connection: &Connection,
    ) -> Context {
        Context {
            roles,
            health,
            lease,
            election: election.to_string(),
            id: id.to_string(),
            priority: 0,
            preempt: None,
            connection: connection.clone(),
            client: tokio::sync::Mutex::new(None),
        }
    }
}

/// Serve `listener` until the task is dropped (with the runtime, when the supervisor returns).
/// Spawn it on the supervisor's runtime.
pub async fn serve(listener: std::net::TcpListener, ctx: Context) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "the status endpoint cannot run");
            return;
        }
    };
    if let Ok(addr) = listener.local_addr() {
        // [::] with IPV6_V6ONLY off takes IPv4 too (every_address).
        let every = addr.ip().is_unspecified();
        tracing::info!(address = %addr, ipv4 = every || addr.is_ipv4(), ipv6 = addr.is_ipv6(), "status endpoint listening");
    }
    let ctx = Arc::new(ctx);
    let table = Arc::new(Mutex::new(Connections::default()));
    let mut trouble = Recurring::new("accepting on --status-addr");
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                trouble.clear();
                stream
            }
            Err(e) => {
                // Out of file descriptors, most likely: never a busy loop.
                trouble.report(e);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let room = lock(&table).make_room();
        let Some(evicted) = room else {
            // Every connection is being answered: closing this one costs nothing.
            drop(stream);
            continue;
        };
        if evicted {
            // The evicted connection's task runs and closes its socket before the next
            // accept: never more than one descriptor beyond the bound.
            tokio::task::yield_now().await;
        }
        let _ = stream.set_nodelay(true);
        let (id, open) = lock(&table).add();
        let (ctx, table) = (ctx.clone(), table.clone());
        tokio::spawn(async move {
            let _entry = Entry { table, id };
            let conn = http1::serve(stream, &open.waiting, |req| answer(&ctx, req));
            tokio::select! {
                _ = tokio::time::timeout(CONNECTION_LIFETIME, conn) => {}
                () = open.close.notified() => {}
            }
        });
    }
}

fn lock(table: &Mutex<Connections>) -> std::sync::MutexGuard<'_, Connections> {
    // Nothing panics while holding it; a poisoned table is still a table.
    table
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The open connections, by age (ids grow).
#[derive(Default)]
struct Connections {
    next: u64,
    open: BTreeMap<u64, Arc<Open>>,
}

/// One open connection, as the table sees it.
#[derive(Default)]
struct Open {
    /// Waiting for a request head: it may be closed for a newer connection.
    waiting: AtomicBool,
    /// Told to close.
    close: Notify,
}

impl Connections {
    /// Room for one more: Some(false) if there was some, Some(true) if the oldest connection
    /// waiting for a request was told to close for it, None if every one is being answered.
    fn make_room(&mut self) -> Option<bool> {
        if self.open.len() < MAX_CONNECTIONS {
            return Some(false);
        }
        let oldest = self
            .open
            .iter()
            .find(|(_, o)| o.waiting.load(Ordering::Relaxed))
            .map(|(id, _)| *id)?;
        let evicted = self.open.remove(&oldest)?;
        // A permit: it closes even if its task has not run yet.
        evicted.close.notify_one();
        Some(true)
    }

    /// A new connection, waiting for its first request.
    fn add(&mut self) -> (u64, Arc<Open>) {
        let id = self.next;
        self.next += 1;
        let open = Arc::new(Open {
            waiting: AtomicBool::new(true),
            close: Notify::new(),
        });
        self.open.insert(id, open.clone());
        (id, open)
    }
}

/// A connection's place in the table, given up when its task ends (or is dropped).
struct Entry {
    table: Arc<Mutex<Connections>>,
    id: u64,
}

impl Drop for Entry {
    fn drop(&mut self) {
        lock(&self.table).open.remove(&self.id);
    }
}

/// The verdicts, computed from the role and the lease's live facts at the moment of asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdicts {
    pub leader: bool,
    pub standby: bool,
    pub health: bool,
}

pub fn verdicts(role: &Role, lease: Option<LeaseFacts>, alive: bool, now: Instant) -> Verdicts {
    let leading = matches!(role, Role::Leading { .. });
    let child = matches!(role, Role::Leading { pid: Some(_), .. });
    Verdicts {
        // The stop time, not the role alone: at that instant the supervisor stops the child.
        leader: alive && child && lease.is_some_and(|l| l.may_run(now)),
        standby: alive && *role == Role::Standby,
        health: alive
            && *role != Role::Exiting
            && (!leading || lease.is_some_and(|l| now < l.deadline)),
    }
}

async fn answer(ctx: &Context, req: Request) -> Response {
    if req.method != "GET" && req.method != "HEAD" {
        let mut r = text(405, "only GET and HEAD\n");
        r.headers.push("Allow: GET, HEAD".into());
        return r;
    }
    let role = ctx.roles.borrow().clone();
    // The channel closes when the supervisor returns.
    let alive = ctx.roles.has_changed().is_ok();
    let lease = ctx.lease.borrow().as_ref().and_then(LeaseView::facts);
    let now = Instant::now();
    let v = verdicts(&role, lease, alive, now);
    let yes_no = |ok: bool, yes: &'static str, no: &'static str| {
        if ok {
            text(200, yes)
        } else {
            text(503, no)
        }
    };
    match req.path.as_str() {
        "/leader" => yes_no(v.leader, "leader\n", "not leader\n"),
        "/standby" => yes_no(v.standby, "standby\n", "not standby\n"),
        "/health" => yes_no(v.health, "ok\n", "unhealthy\n"),
        "/metrics" => Response::new(
            200,
            metrics::CONTENT_TYPE,
            metrics::encode_text(
                v.leader,
                lease.map(|l| {
                    (
                        metrics::signed_secs(now, l.deadline),
                        now.saturating_duration_since(l.acknowledged).as_secs_f64(),
                    )
                }),
            ),
        ),
        "/status" => {
            let leader = match &role {
                Role::Leading { .. } => Ok(Some(ctx.id.clone())),
                _ => leader_id(ctx).await,
            };
            let json = status_json(ctx, &role, lease, v, leader, Instant::now());
            Response::new(200, "application/json", format!("{json}\n"))
        }
        _ => text(
            404,
            "not found: /leader, /standby, /health, /status, /metrics\n",
        ),
    }
}

/// `/status`: role, election, id, key, revision, lease, the current leader's id, the child's
/// pid, seconds since the last acknowledged keepalive and until the deadline D.
fn status_json(
    ctx: &Context,
    role: &Role,
    lease: Option<LeaseFacts>,
    v: Verdicts,
    leader: Result<Option<String>, String>,
    now: Instant,
) -> serde_json::Value {
    let (key, revision, pid) = match role {
        Role::Leading { key, revision, pid } => (Some(key.clone()), Some(*revision), *pid),
        _ => (None, None, None),
    };
    let mut json = serde_json::json!({
        "role": role_name(role),
        "leader": v.leader,
        "healthy": v.health,
        "election": ctx.election,
        "id": ctx.id,
        "priority": ctx.priority,
        "preempt": ctx.preempt.map_or("never".to_string(), |d| humantime::format_duration(d).to_string()),
        "key": key,
        "revision": revision,
        "lease": lease.map(|l| format!("{:x}", l.id)),
        "ttl_seconds": lease.map(|l| l.timing.ttl.as_secs_f64()),
        "leader_id": leader.as_ref().ok().cloned().flatten(),
        "pid": pid,
        "health": ctx.health.borrow().map(|h| h.to_string()),
        "since_keepalive_seconds": lease.map(|l| now.saturating_duration_since(l.acknowledged).as_secs_f64()),
        "deadline_in_seconds": lease.map(|l| metrics::signed_secs(now, l.deadline)),
    });
    if let (Err(e), Some(map)) = (leader, json.as_object_mut()) {
        map.insert("leader_id_error".into(), e.into());
    }
    json
}

fn role_name(role: &Role) -> &'static str {
    match role {
        Role::Connecting => "connecting",
        Role::Standby => "standby",
        Role::Leading { .. } => "leading",
        Role::Stopping => "stopping",
        Role::Exiting => "exiting",
    }
}

/// Who leads, read from etcd now: the value of the first-created key under `NAME/` if it is a
/// live candidate. Err: the read failed or timed out (said in `/status`, never logged: a
/// client asking often must not fill the log).
async fn leader_id(ctx: &Context) -> Result<Option<String>, String> {
    let read = async {
        let mut cached = ctx.client.lock().await;
        let client = match &*cached {
            Some(c) => c.clone(),
            None => {
                let c = etcd::connect(&ctx.connection)
                    .await
                    .map_err(|e| e.to_string())?;
                cached.insert(c).clone()
            }
        };
        drop(cached);
        let (first, _) = election::first_candidates(&client, &ctx.election, 1, LEADER_READ_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        Ok(first
            .into_iter()
            .next()
            .filter(|kv| election::classify(&ctx.election, kv) == Candidate::Live)
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    };
    match tokio::time::timeout(LEADER_READ_TIMEOUT, read).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer from etcd within {}",
            humantime::format_duration(LEADER_READ_TIMEOUT)
        )),
    }
}

fn text(status: u16, body: &'static str) -> Response {
    Response::new(status, "text/plain; charset=utf-8", body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::timing::Timing;

    fn facts(now: Instant, deadline_in: Duration) -> LeaseFacts {
        LeaseFacts {
            id: 1,
            timing: Timing::new(Duration::from_secs(10), None).unwrap(),
            deadline: now + deadline_in,
            acknowledged: now,
            gone: false,
        }
    }

    fn leading(pid: Option<u32>) -> Role {
        Role::Leading {
            key: "e/1".into(),
            revision: 2,
            pid,
        }
    }

    #[test]
    fn leader_needs_a_running_child_and_the_stop_time_ahead() {
        let now = Instant::now();
        // T = 10 s: m = 1 s, G = 3 s, so the stop time is D - 4 s.
        let fresh = Some(facts(now, Duration::from_secs(10)));
        let near = Some(facts(now, Duration::from_secs(4)));
        assert!(verdicts(&leading(Some(5)), fresh, true, now).leader);
        assert!(!verdicts(&leading(Some(5)), near, true, now).leader);
        assert!(verdicts(&leading(Some(5)), near, true, now).health);
        assert!(!verdicts(&leading(None), fresh, true, now).leader);
        assert!(!verdicts(&leading(Some(5)), None, true, now).leader);
        assert!(!verdicts(&leading(Some(5)), fresh, false, now).leader);
        for role in [
            Role::Stopping,
            Role::Exiting,
            Role::Standby,
            Role::Connecting,
        ] {
            assert!(!verdicts(&role, fresh, true, now).leader, "{role:?}");
        }
    }

    #[test]
    fn a_full_table_closes_its_oldest_waiting_connection_for_a_new_one() {
        let mut t = Connections::default();
        let opened: Vec<(u64, Arc<Open>)> = (0..MAX_CONNECTIONS).map(|_| t.add()).collect();
        // The two oldest are being answered: the third oldest goes.
        opened[0].1.waiting.store(false, Ordering::Relaxed);
        opened[1].1.waiting.store(false, Ordering::Relaxed);
        assert_eq!(t.make_room(), Some(true));
        assert!(!t.open.contains_key(&opened[2].0));
        assert!(t.open.contains_key(&opened[0].0) && t.open.contains_key(&opened[3].0));
        let (_, newest) = t.add();
        assert_eq!(t.open.len(), MAX_CONNECTIONS);
        // Every one answering: no room.
        for o in t.open.values() {
            o.waiting.store(false, Ordering::Relaxed);
        }
        assert_eq!(t.make_room(), None);
        newest.waiting.store(true, Ordering::Relaxed);
        assert_eq!(t.make_room(), Some(true));
        assert_eq!(t.open.len(), MAX_CONNECTIONS - 1);
        assert_eq!(t.make_room(), Some(false));
    }

    #[test]
    fn standby_and_health() {
        let now = Instant::now();
        let fresh = Some(facts(now, Duration::from_secs(10)));
        let v = verdicts(&Role::Standby, fresh, true, now);
        assert!(v.standby && v.health && !v.leader);
        assert!(!verdicts(&Role::Exiting, fresh, true, now).health);
        let past = Some(facts(now, Duration::ZERO));
        assert!(!verdicts(&leading(Some(1)), past, true, now).health);
        assert!(!verdicts(&Role::Standby, fresh, false, now).health);
    }
}
