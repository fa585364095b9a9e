//! Signals to leaderrun: TERM and INT ask it to stop; the others a process is sent to control
//! it ([`FORWARDED`]) are for the child, as tini passes them on.
//!
//! Two rules of the host (DESIGN.md §5):
//! - Job control must not stop the supervisor: a stopped leaderrun cannot stop its child before
//!   the lease expires, and the child, in its own process group, would run on while a standby
//!   starts. TSTP, TTIN and TTOU are ignored by leaderrun (and its guardian); the child gets
//!   them back at their defaults. Only SIGSTOP can stop leaderrun (a documented limit).
//! - A signal that was ignored when leaderrun started (`nohup`, a shell's background job) stays
//!   ignored, for leaderrun and for the child, as a shell keeps it: no handler is installed for
//!   it, and the ignored disposition passes through exec.

use nix::libc;
use nix::sys::signal::{signal as set_disposition, SigHandler, Signal};
use tokio::signal::unix::{signal, Signal as Stream, SignalKind};

/// What a signal asks of the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Stop the child, give up leadership, exit.
    Shutdown(Signal),
    /// Pass the signal on to the child's process group.
    Forward(Signal),
}

/// Job-control signals: ignored by the supervisor, back at their defaults in the child.
pub const JOB_CONTROL: [Signal; 3] = [Signal::SIGTSTP, Signal::SIGTTIN, Signal::SIGTTOU];

/// Signals passed on to the child's process group while it runs, ignored by a standby: every
/// signal sent to a process to control it, but TERM and INT (leaderrun's own), job control
/// (above), SIGKILL and SIGSTOP, and those the kernel raises for a fault of leaderrun itself.
/// Most would end leaderrun at their default (QUIT with a core dump): `systemctl kill -s QUIT`
/// or `docker kill -s QUIT`, to get a thread dump from a JVM, would hand leadership over (or,
/// for PID 1, be dropped) instead of reaching it. WINCH: the child, in its own process group,
/// gets no terminal's resize otherwise.
pub const FORWARDED: [Signal; 9] = [
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
    Signal::SIGWINCH,
    Signal::SIGPWR,
    Signal::SIGVTALRM,
    Signal::SIGPROF,
];

/// The handlers, installed once at start-up, before any child exists.
pub struct Signals {
    term: Option<Stream>,
    int: Option<Stream>,
    /// [`FORWARDED`], but those ignored at start.
    forwarded: Vec<(Signal, Stream)>,
    /// Job-control signals the child gets at their default disposition.
    child_defaults: Vec<Signal>,
    /// Requests sent by a test instead of the kernel.
    #[cfg(test)]
    injected: Option<tokio::sync::mpsc::UnboundedReceiver<Request>>,
}

impl Signals {
    pub fn install() -> std::io::Result<Signals> {
        let handle = |sig: Signal| -> std::io::Result<Option<Stream>> {
            if ignored_at_start(sig) {
                // A shell's background job ignores INT and QUIT: normal, not news.
                tracing::debug!(signal = %sig, "ignored when leaderrun started: it stays ignored, for the child too");
                return Ok(None);
            }
            signal(SignalKind::from_raw(sig as libc::c_int)).map(Some)
        };
        let child_defaults = JOB_CONTROL
            .into_iter()
            .filter(|&s| !ignored_at_start(s))
            .collect();
        for sig in JOB_CONTROL {
            // SAFETY: SIG_IGN installs no handler code.
            unsafe { set_disposition(sig, SigHandler::SigIgn) }.map_err(std::io::Error::from)?;
        }
        let mut forwarded = Vec::new();
        for sig in FORWARDED {
            if let Some(stream) = handle(sig)? {
                forwarded.push((sig, stream));
            }
        }
        Ok(Signals {
            term: handle(Signal::SIGTERM)?,
            int: handle(Signal::SIGINT)?,
            forwarded,
            child_defaults,
            #[cfg(test)]
            injected: None,
        })
    }

    /// Signals that come only from the returned sender: the core's unit tests drive the
    /// supervisor's waits with it, no process-wide handler installed.
    #[cfg(test)]
    pub fn injected() -> (tokio::sync::mpsc::UnboundedSender<Request>, Signals) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let signals = Signals {
            term: None,
            int: None,
            forwarded: Vec::new(),
            child_defaults: Vec::new(),
            injected: Some(rx),
        };
        (tx, signals)
    }

    /// The signals the child must get back at their default disposition (see the module doc).
    pub fn child_defaults(&self) -> &[Signal] {
        &self.child_defaults
    }

    /// The next signal. Cancel-safe, so it can sit in a `select!`.
    pub async fn recv(&mut self) -> Request {
        #[cfg(test)]
        if let Some(rx) = &mut self.injected {
            return match rx.recv().await {
                Some(request) => request,
                None => std::future::pending().await,
            };
        }
        let forwarded = &mut self.forwarded;
        tokio::select! {
            _ = next(&mut self.term) => Request::Shutdown(Signal::SIGTERM),
            _ = next(&mut self.int) => Request::Shutdown(Signal::SIGINT),
            sig = std::future::poll_fn(|cx| {
                for (sig, stream) in forwarded.iter_mut() {
                    // None: the runtime is shutting down; nothing more comes.
                    if let std::task::Poll::Ready(Some(())) = stream.poll_recv(cx) {
                        return std::task::Poll::Ready(*sig);
                    }
                }
                std::task::Poll::Pending
            }) => Request::Forward(sig),
        }
    }
}

/// The next delivery of a handled signal; never, for one that is ignored.
async fn next(stream: &mut Option<Stream>) {
    match stream {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Whether `sig` is ignored now, that is, as leaderrun's parent left it (nothing before
/// [`Signals::install`] changes a disposition).
fn ignored_at_start(sig: Signal) -> bool {
    let mut old = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a null new action only reads the current one into `old`.
    let rc = unsafe { libc::sigaction(sig as libc::c_int, std::ptr::null(), old.as_mut_ptr()) };
    // SAFETY: sigaction filled it in (rc 0), or it stays zeroed (SIG_DFL).
    rc == 0 && unsafe { old.assume_init() }.sa_sigaction == libc::SIG_IGN
}
