//! A TCP fault-injection proxy on 127.0.0.1 in front of one upstream
//! address, with modes that take effect at once for existing and new
//! connections. It runs on its own OS thread with its own tokio runtime, so
//! sync and async tests alike can drive it.

use std::collections::VecDeque;
use std::future::pending;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::time::{sleep_until, timeout, Instant};

/// What the proxy does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward bytes unchanged.
    Pass,
    /// Keep connections open but read and drop all bytes in both directions;
    /// new connections are accepted but not forwarded. A connection that lost
    /// bytes is reset when the mode leaves Blackhole (its stream is corrupt),
    /// so clients reconnect; idle connections simply resume.
    Blackhole,
    /// Reset (RST via SO_LINGER 0) every connection, and every new one right
    /// after accepting it, until the mode changes.
    Reset,
    /// Forward each chunk after this delay, per direction, order preserved.
    Latency(Duration),
}

/// Stop reading from a side while this much is queued for the other side.
const MAX_QUEUED: usize = 1 << 20;
const CHUNK: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
struct Stats {
    accepted: AtomicUsize,
    active: AtomicUsize,
}

/// See the module docs. Stopped (thread joined, sockets closed) on Drop.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    mode: watch::Sender<Mode>,
    stats: Arc<Stats>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on 127.0.0.1:<free port> in `Mode::Pass`. The port is bound
    /// before returning, so there is no race for it.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy port");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("proxy addr");
        let (mode, mode_rx) = watch::channel(Mode::Pass);
        let (stop, stop_rx) = oneshot::channel();
        let stats = Arc::new(Stats::default());
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{}", addr.port()))
            .spawn(move || run(listener, upstream, mode_rx, stop_rx, thread_stats))
            .expect("spawn proxy thread");
        FaultProxy {
            addr,
            upstream,
            mode,
            stats,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:<port>`, usable as an etcd endpoint.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Switches mode; connection tasks react within a scheduler tick.
    pub fn set_mode(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// Connections accepted since start (in any mode).
    pub fn accepted(&self) -> usize {
        self.stats.accepted.load(Ordering::SeqCst)
    }

    /// Connections currently open through the proxy.
    pub fn active(&self) -> usize {
        self.stats.active.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Proxy thread body: accept loop until stopped; dropping the runtime then
/// cancels every connection task and closes its sockets.
fn run(
    listener: std::net::TcpListener,
    upstream: SocketAddr,
    mode: watch::Receiver<Mode>,
    mut stop: oneshot::Receiver<()>,
    stats: Arc<Stats>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("proxy runtime");
    rt.block_on(async move {
        let listener = TcpListener::from_std(listener).expect("tokio listener");
        loop {
            tokio::select! {
                _ = &mut stop => break,
                res = listener.accept() => match res {
                    Ok((sock, _)) => {
                        stats.accepted.fetch_add(1, Ordering::SeqCst);
                        tokio::spawn(handle(sock, upstream, mode.clone(), stats.clone()));
                    }
                    // e.g. EMFILE: back off instead of spinning.
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                },
            }
        }
    });
}

/// Decrements the active-connection count however the task ends.
struct ActiveGuard(Arc<Stats>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(
    client: TcpStream,
    upstream: SocketAddr,
    mode: watch::Receiver<Mode>,
    stats: Arc<Stats>,
) {
    stats.active.fetch_add(1, Ordering::SeqCst);
    let _active = ActiveGuard(stats);
    let _ = client.set_nodelay(true);
    let conn = Conn {
        client,
        upstream: None,
        upstream_addr: upstream,
        c2u: Pipe::default(),
        u2c: Pipe::default(),
        dropped_any: false,
    };
    conn.run(mode).await;
}

/// Closes with RST instead of FIN.
fn reset(sock: TcpStream) {
    let _ = sock.set_zero_linger();
    drop(sock);
}

/// One queued chunk: forwarded once `due` has passed.
struct Chunk {
    due: Instant,
    data: Vec<u8>,
    written: usize,
}

/// One direction of a connection.
#[derive(Default)]
struct Pipe {
    queue: VecDeque<Chunk>,
    queued: usize,
    /// The source sent FIN.
    eof: bool,
    /// We sent FIN to the destination.
    shut: bool,
}

impl Pipe {
    fn can_read(&self, mode: Mode) -> bool {
        !self.eof && (mode == Mode::Blackhole || self.queued < MAX_QUEUED)
    }

    /// Due time of the head chunk, if any.
    fn head_due(&self) -> Option<Instant> {
        self.queue.front().map(|c| c.due)
    }

    fn push(&mut self, data: Vec<u8>, due: Instant) {
        self.queued += data.len();
        self.queue.push_back(Chunk {
            due,
            data,
            written: 0,
        });
    }

    /// Drops everything queued; true if anything was dropped.
    fn clear(&mut self) -> bool {
        let had = !self.queue.is_empty();
        self.queue.clear();
        self.queued = 0;
        had
    }

    fn needs_shutdown(&self) -> bool {
        self.eof && self.queue.is_empty() && !self.shut
    }
}

/// What woke the connection loop.
enum Event {
    ModeChanged,
    ProxyStopped,
    ClientReadable,
    UpstreamReadable,
    Tick,
    ClientWritable,
    UpstreamWritable,
}

/// Outcome of one step: keep going or end the connection.
enum Flow {
    Continue,
    Done,
}

struct Conn {
    client: TcpStream,
    upstream: Option<TcpStream>,
    upstream_addr: SocketAddr,
    /// client -> upstream
    c2u: Pipe,
    /// upstream -> client
    u2c: Pipe,
    /// Bytes were discarded in Blackhole: the streams are now corrupt.
    dropped_any: bool,
}

impl Conn {
    /// Single-task event loop: owning both sockets here lets a mode change
    /// reset or reroute a connection at once, whatever it is doing.
    async fn run(mut self, mut mode_rx: watch::Receiver<Mode>) {
        loop {
            let mode = *mode_rx.borrow_and_update();
            if let Flow::Done = self.apply_mode(mode).await {
                return;
            }
            if let Flow::Done = self.propagate_eof(mode).await {
                return;
            }
            let event = self.next_event(&mut mode_rx, mode).await;
            // A mode set while we were waiting must govern the bytes read
            // now: re-apply it first (readiness is kept, nothing is lost).
            if *mode_rx.borrow() != mode {
                continue;
            }
            let flow = match event {
                Event::ModeChanged | Event::Tick => Flow::Continue,
                Event::ProxyStopped => Flow::Done,
                Event::ClientReadable => self.read_client(mode),
                Event::UpstreamReadable => self.read_upstream(mode),
                Event::ClientWritable => self.write_client(),
                Event::UpstreamWritable => self.write_upstream(),
            };
            if let Flow::Done = flow {
                return;
            }
        }
    }

    /// Enforces the current mode on this connection's state.
    async fn apply_mode(&mut self, mode: Mode) -> Flow {
        match mode {
            Mode::Reset => {
                self.reset_all();
                Flow::Done
            }
            Mode::Blackhole => {
                // Queued bytes vanish too: nothing crosses a blackhole.
                let a = self.c2u.clear();
                let b = self.u2c.clear();
                self.dropped_any |= a || b;
                Flow::Continue
            }
            Mode::Pass | Mode::Latency(_) if self.dropped_any => {
                self.reset_all();
                Flow::Done
            }
            Mode::Pass | Mode::Latency(_) if self.upstream.is_none() => self.connect().await,
            Mode::Pass | Mode::Latency(_) => Flow::Continue,
        }
    }

    async fn connect(&mut self) -> Flow {
        match timeout(CONNECT_TIMEOUT, TcpStream::connect(self.upstream_addr)).await {
            Ok(Ok(up)) => {
                let _ = up.set_nodelay(true);
                self.upstream = Some(up);
                Flow::Continue
            }
            _ => {
                self.reset_all();
                Flow::Done
            }
        }
    }

    /// Forwards a FIN once everything before it was delivered; ends the
    /// connection when both directions are finished.
    async fn propagate_eof(&mut self, mode: Mode) -> Flow {
        if mode == Mode::Blackhole {
            return Flow::Continue;
        }
        let Some(up) = self.upstream.as_mut() else {
            return Flow::Continue;
        };
        if self.c2u.needs_shutdown() {
            let _ = up.shutdown().await;
            self.c2u.shut = true;
        }
        if self.u2c.needs_shutdown() {
            let _ = self.client.shutdown().await;
            self.u2c.shut = true;
        }
        if self.c2u.shut && self.u2c.shut {
            Flow::Done
        } else {
            Flow::Continue
        }
    }

    async fn next_event(&self, mode_rx: &mut watch::Receiver<Mode>, mode: Mode) -> Event {
        let now = Instant::now();
        let up = self.upstream.as_ref();
        // Writes wait for the head chunk's due time, then for writability.
        let c2u_due = self.c2u.head_due().filter(|_| up.is_some());
        let u2c_due = self.u2c.head_due();
        let c2u_ready = c2u_due.is_some_and(|d| d <= now);
        let u2c_ready = u2c_due.is_some_and(|d| d <= now);
        let next_tick = [c2u_due, u2c_due]
            .into_iter()
            .flatten()
            .filter(|d| *d > now)
            .min();
        tokio::select! {
            r = mode_rx.changed() => if r.is_ok() { Event::ModeChanged } else { Event::ProxyStopped },
            _ = self.client.readable(), if self.c2u.can_read(mode) => Event::ClientReadable,
            _ = readable(up), if self.u2c.can_read(mode) => Event::UpstreamReadable,
            _ = sleep_opt(next_tick) => Event::Tick,
            _ = self.client.writable(), if u2c_ready => Event::ClientWritable,
            _ = writable(up), if c2u_ready => Event::UpstreamWritable,
        }
    }

    fn read_client(&mut self, mode: Mode) -> Flow {
        match read_chunk(&self.client) {
            Read::Data(data) => self.take(data, mode, Dir::C2U),
            Read::Eof => self.c2u.eof = true,
            Read::WouldBlock => {}
            Read::Failed => return self.reset_all_done(),
        }
        Flow::Continue
    }

    fn read_upstream(&mut self, mode: Mode) -> Flow {
        let Some(up) = self.upstream.as_ref() else {
            return Flow::Continue;
        };
        match read_chunk(up) {
            Read::Data(data) => self.take(data, mode, Dir::U2C),
            Read::Eof => self.u2c.eof = true,
            Read::WouldBlock => {}
            Read::Failed => return self.reset_all_done(),
        }
        Flow::Continue
    }

    /// Queues (Pass/Latency) or discards (Blackhole) a chunk just read.
    fn take(&mut self, data: Vec<u8>, mode: Mode, dir: Dir) {
        let delay = match mode {
            Mode::Blackhole | Mode::Reset => {
                self.dropped_any = true;
                return;
            }
            Mode::Latency(d) => d,
            Mode::Pass => Duration::ZERO,
        };
        let pipe = match dir {
            Dir::C2U => &mut self.c2u,
            Dir::U2C => &mut self.u2c,
        };
        pipe.push(data, Instant::now() + delay);
    }

    fn write_client(&mut self) -> Flow {
        match write_head(&self.client, &mut self.u2c) {
            Ok(()) => Flow::Continue,
            Err(()) => self.reset_all_done(),
        }
    }

    fn write_upstream(&mut self) -> Flow {
        let Some(up) = self.upstream.as_ref() else {
            return Flow::Continue;
        };
        match write_head(up, &mut self.c2u) {
            Ok(()) => Flow::Continue,
            Err(()) => self.reset_all_done(),
        }
    }

    /// RST both sides. Sockets are swapped out so the struct stays valid.
    fn reset_all(&mut self) {
        if let Some(up) = self.upstream.take() {
            reset(up);
        }
        let _ = self.client.set_zero_linger();
    }

    fn reset_all_done(&mut self) -> Flow {
        self.reset_all();
        Flow::Done
    }
}

#[derive(Clone, Copy)]
enum Dir {
    C2U,
    U2C,
}

enum Read {
    Data(Vec<u8>),
    Eof,
    WouldBlock,
    Failed,
}

fn read_chunk(sock: &TcpStream) -> Read {
    let mut buf = vec![0u8; CHUNK];
    match sock.try_read(&mut buf) {
        Ok(0) => Read::Eof,
        Ok(n) => {
            buf.truncate(n);
            Read::Data(buf)
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Read::WouldBlock,
        Err(_) => Read::Failed,
    }
}

/// Writes as much of the head chunk as the socket takes right now.
fn write_head(sock: &TcpStream, pipe: &mut Pipe) -> Result<(), ()> {
    let Some(head) = pipe.queue.front_mut() else {
        return Ok(());
    };
    match sock.try_write(&head.data[head.written..]) {
        Ok(n) => {
            head.written += n;
            if head.written == head.data.len() {
                pipe.queued -= head.data.len();
                pipe.queue.pop_front();
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
        Err(_) => Err(()),
    }
}

async fn readable(sock: Option<&TcpStream>) {
    match sock {
        Some(s) => {
            let _ = s.readable().await;
        }
        None => pending().await,
    }
}

async fn writable(sock: Option<&TcpStream>) {
    match sock {
        Some(s) => {
            let _ = s.writable().await;
        }
        None => pending().await,
    }
}

async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => pending().await,
    }
}
