//! Signals to leaderrun: TERM and INT ask it to stop; HUP, USR1 and USR2 are for the child.

use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, Signal as Stream, SignalKind};

/// What a signal asks of the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Stop the child, give up leadership, exit.
    Shutdown(Signal),
    /// Pass the signal on to the child's process group.
    Forward(Signal),
}

/// The handlers, installed once at start-up, before any child exists.
pub struct Signals {
    term: Stream,
    int: Stream,
    hup: Stream,
    usr1: Stream,
    usr2: Stream,
}

impl Signals {
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }

    /// The next signal. Cancel-safe, so it can sit in a `select!`.
    pub async fn recv(&mut self) -> Request {
        tokio::select! {
            _ = self.term.recv() => Request::Shutdown(Signal::SIGTERM),
            _ = self.int.recv() => Request::Shutdown(Signal::SIGINT),
            _ = self.hup.recv() => Request::Forward(Signal::SIGHUP),
            _ = self.usr1.recv() => Request::Forward(Signal::SIGUSR1),
            _ = self.usr2.recv() => Request::Forward(Signal::SIGUSR2),
        }
    }
}
