//! Leadership that follows the child's health: a check (`--health-cmd`, `--health-http`) run
//! every interval while leading, in Docker's HEALTHCHECK sense. After `retries` failures in a
//! row the leader is unhealthy: the supervisor hands over (stop, resign) and stays out of the
//! election for the holdoff.
//!
//! Failures during the start period (counted from each start of the child) do not count; a
//! success ends it. A check runs in its own process group with the child's environment and is
//! killed with its group when it outlives its timeout.
//!
//! A `--health-cmd`'s stdout and stderr are leaderrun's, not the child's: they go to a pipe
//! that leaderrun drains while the check runs, keeping only the last [`OUTPUT_KEPT`] bytes.
//! That tail is logged with the failure (WARN), or at DEBUG after a success: a chatty check
//! neither floods leaderrun's stdout nor blocks on a full pipe.

use crate::process::child::{Child, Command, ExitStatus, Reaper};
use nix::sys::signal::Signal;
use std::fmt;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{timeout, Instant};

/// What to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// `/bin/sh -c CMD`: healthy on exit status 0.
    Cmd(String),
    /// `GET` of an http:// URL: healthy on 2xx and 3xx.
    Http(HttpTarget),
}

/// An http:// URL, split for the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// As given, for messages.
    pub url: String,
    /// `host:port` to connect to (IPv6 in brackets).
    pub addr: String,
    /// The Host header.
    pub authority: String,
    /// Path and query, `/` at least.
    pub path: String,
}

impl HttpTarget {
    /// Parse `http://host[:port][/path]`. https is not spoken here: a `--health-cmd` with
    /// curl covers it.
    pub fn parse(url: &str) -> Result<HttpTarget, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            if url.starts_with("https://") {
                "https is not supported; use --health-cmd 'curl -fsS https://...'".to_string()
            } else {
                "must be an http:// URL".to_string()
            }
        })?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err("needs a host (and no user:password@)".into());
        }
        if path.chars().any(|c| c.is_control() || c == ' ') || authority.contains(' ') {
            return Err("must not contain spaces or control characters".into());
        }
        let has_port = match authority.rfind(']') {
            Some(close) => authority[close..].contains(':'),
            None => authority.contains(':'),
        };
        let (host, port) = match authority.rsplit_once(':').filter(|_| has_port) {
            Some((h, p)) => (h, p.parse::<u16>().ok().filter(|&p| p > 0)),
            None => (authority, Some(80)),
        };
        let port = port.ok_or("the port must be a number from 1 to 65535")?;
        if host.is_empty() || host == "[]" {
            return Err("needs a host".into());
        }
        Ok(HttpTarget {
            url: url.to_string(),
            addr: format!("{host}:{port}"),
            authority: authority.to_string(),
            path,
        })
    }
}

/// How and how often to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
    /// How long an unhealthy leader stays out of the election after handing over.
    pub holdoff: Duration,
}

/// Why a check failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Exit(ExitStatus),
    Status(u16),
    TimedOut(Duration),
    Error(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Exit(s) => write!(f, "the check ended with {s}"),
            Failure::Status(code) => write!(f, "HTTP status {code}"),
            Failure::TimedOut(d) => {
                write!(f, "no answer within {}", humantime::format_duration(*d))
            }
            Failure::Error(e) => write!(f, "{e}"),
        }
    }
}

/// The child's health, as the status shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// In the start period, no success yet.
    Starting,
    Healthy,
    /// Failing, `failures` in a row (fewer than `retries`, which makes it unhealthy).
    Failing {
        failures: u32,
        retries: u32,
    },
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Health::Starting => f.write_str("starting"),
            Health::Healthy => f.write_str("healthy"),
            Health::Failing { failures, retries } => {
                write!(f, "failing ({failures} of {retries})")
            }
        }
    }
}

/// Resolves when the child started at `started` is unhealthy: `retries` failures in a row
/// outside the start period. Returns the last failure. `env` is the child's environment;
/// `report` hears every change of health.
pub async fn unhealthy(
    check: &HealthCheck,
    reaper: &Reaper,
    env: &Command,
    started: Instant,
    mut report: impl FnMut(Health),
) -> Failure {
    let mut failures = 0;
    let mut starting = !check.start_period.is_zero();
    report(if starting {
        Health::Starting
    } else {
        Health::Healthy
    });
    let mut next = started + check.interval;
    loop {
        tokio::time::sleep_until(next).await;
        let (result, said) = probe(check, reaper, env).await;
        // Not a fixed rate: a slow check never queues the next one behind it.
        next = Instant::now() + check.interval;
        match result {
            Ok(()) => {
                crate::metrics::health_check(true);
                if let Some(output) = said.as_deref() {
                    tracing::debug!(output, "health check passed");
                }
                if failures > 0 {
                    tracing::info!(after = failures, "health check passing again");
                }
                failures = 0;
                starting = false;
                report(Health::Healthy);
            }
            Err(why) if starting && started.elapsed() < check.start_period => {
                crate::metrics::health_check(false);
                tracing::debug!(%why, output = said.as_deref(), "health check failed in the start period: not counted");
            }
            Err(why) => {
                crate::metrics::health_check(false);
                starting = false;
                failures += 1;
                match said.as_deref() {
                    Some(output) => tracing::warn!(
                        %why,
                        failures,
                        retries = check.retries,
                        output,
                        "health check failed"
                    ),
                    None => tracing::warn!(
                        %why,
                        failures,
                        retries = check.retries,
                        "health check failed"
                    ),
                }
                if failures >= check.retries {
                    return why;
                }
                report(Health::Failing {
                    failures,
                    retries: check.retries,
                });
            }
        }
    }
}

/// One check, bounded by its timeout; with what a `--health-cmd` said (the tail of its
/// output), if anything.
/// Resolves at the first check that passes, one every interval: a hot standby whose child was
/// unhealthy waits for this, out of the election.
pub async fn healthy_again(check: &HealthCheck, reaper: &Reaper, env: &Command) {
    loop {
        tokio::time::sleep(check.interval).await;
        let (result, said) = probe(check, reaper, env).await;
        crate::metrics::health_check(result.is_ok());
        match result {
            Ok(()) => return,
            Err(why) => {
                tracing::debug!(%why, output = said.as_deref(), "health check still failing")
            }
        }
    }
}

async fn probe(
    check: &HealthCheck,
    reaper: &Reaper,
    env: &Command,
) -> (Result<(), Failure>, Option<String>) {
    match &check.probe {
        Probe::Cmd(script) => run_cmd(script, check.timeout, reaper, env).await,
        Probe::Http(target) => {
            let result = match timeout(check.timeout, get(target)).await {
                Ok(Ok(code)) if (200..400).contains(&code) => Ok(()),
                Ok(Ok(code)) => Err(Failure::Status(code)),
                Ok(Err(e)) => Err(Failure::Error(format!("{}: {e}", target.url))),
                Err(_) => Err(Failure::TimedOut(check.timeout)),
            };
            (result, None)
        }
    }
}

/// The most of a check's output kept (its end): enough for a reason, never a flood.
pub const OUTPUT_KEPT: usize = 1024;

/// The tail of a check's output: the last [`OUTPUT_KEPT`] bytes, and how many there were.
#[derive(Debug, Default)]
struct Said {
    tail: Vec<u8>,
    total: u64,
}

impl Said {
    fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let bytes = &bytes[bytes.len().saturating_sub(OUTPUT_KEPT)..];
        let over = (self.tail.len() + bytes.len()).saturating_sub(OUTPUT_KEPT);
        self.tail.drain(..over);
        self.tail.extend_from_slice(bytes);
    }

    /// For the log, with how much came before the tail. A string field: the log quotes it and
    /// escapes its newlines and control characters, so it stays one line.
    fn line(&self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.tail);
        let text = text.trim_end();
        if text.is_empty() {
            return None;
        }
        match self.total - self.tail.len() as u64 {
            0 => Some(text.to_string()),
            before => Some(format!("[{before} bytes before] {text}")),
        }
    }
}

/// A pipe for a check's output: leaderrun reads one end; the other becomes the check's stdout
/// and stderr at its spawn (nothing else of leaderrun's is passed on), so it never writes to
/// leaderrun's stdout. None if no pipe can be made: the check's output then goes where
/// leaderrun's does, as a child's.
fn output_pipe() -> Option<(tokio::net::unix::pipe::Receiver, std::io::PipeWriter)> {
    use std::os::fd::OwnedFd;
    let (reader, writer) = std::io::pipe().ok()?;
    let reader = tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(reader)).ok()?;
    Some((reader, writer))
}

/// `/bin/sh -c script` in its own group with the child's environment; its group is killed if
/// it outlives `limit`. Its output is drained while it runs; what it said comes back with the
/// result.
pub(crate) async fn run_cmd(
    script: &str,
    limit: Duration,
    reaper: &Reaper,
    env: &Command,
) -> (Result<(), Failure>, Option<String>) {
    use std::os::fd::AsFd;
    let pipe = output_pipe();
    let cmd = Command {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        ..env.clone()
    };
    let output = pipe.as_ref().map(|(_, writer)| writer.as_fd());
    let check = match reaper.spawn_unguarded(&cmd, output) {
        Ok(check) => check,
        Err(e) => {
            let failure = Failure::Error(format!("cannot run the check: {e}"));
            return (Err(failure), None);
        }
    };
    let mut check = KillOnDrop(Some(check));
    let Some(child) = check.0.as_mut() else {
        return (Err(Failure::Error("the check vanished".into())), None);
    };
    let mut said = Said::default();
    let ended = match pipe {
        Some((mut output, writer)) => {
            let ended = timeout(limit, drain_while(child, &mut output, &mut said)).await;
            // What is left in the pipe, without waiting (the check's group may live on).
            drop(writer);
            let mut chunk = [0u8; 8192];
            while let Ok(n @ 1..) = output.try_read(&mut chunk) {
                said.push(&chunk[..n]);
            }
            ended
        }
        None => timeout(limit, child.wait()).await,
    };
    let result = match ended {
        Ok(ExitStatus::Code(0)) => Ok(()),
        Ok(status) => Err(Failure::Exit(status)),
        Err(_) => Err(Failure::TimedOut(limit)),
    };
    // Whatever the check left in its group goes too; the reaper collects them.
    drop(check);
    (result, said.line())
}

/// Wait for `child`, reading its output meanwhile (keeping the tail): a check that writes
/// much never blocks on a full pipe. Reads yield to the runtime like any I/O, so the
/// supervisor's timers run between them.
async fn drain_while(
    child: &mut Child,
    output: &mut tokio::net::unix::pipe::Receiver,
    said: &mut Said,
) -> ExitStatus {
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            status = child.wait() => return status,
            read = output.read(&mut chunk) => match read {
                Ok(n @ 1..) => said.push(&chunk[..n]),
                // Closed or failed: no more to read, the exit still to wait for.
                _ => return child.wait().await,
            },
        }
    }
}

/// A check's process group is killed when the check is dropped: after it ended, when it timed
/// out, and when the term ends while it runs.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.take() {
            child.signal_group(Signal::SIGKILL);
        }
    }
}

/// The largest status line and headers read before the status code is taken.
const MAX_HEAD: usize = 4096;

/// `GET target`, HTTP/1.0 (no chunking, the server closes): the status code.
async fn get(target: &HttpTarget) -> std::io::Result<u16> {
    let mut stream = tokio::net::TcpStream::connect(&target.addr).await?;
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: leaderrun-health\r\nConnection: close\r\n\r\n",
        target.path, target.authority
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    while !head.contains(&b'\n') && head.len() < MAX_HEAD {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    status_code(&head).ok_or_else(|| std::io::Error::other("not an HTTP answer"))
}

/// The code of an `HTTP/1.x NNN ...` status line.
fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_whitespace();
    if !words.next()?.starts_with("HTTP/") {
        return None;
    }
    words
        .next()?
        .parse()
        .ok()
        .filter(|c| (100..600).contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls_are_split_and_checked() {
        let t = HttpTarget::parse("http://127.0.0.1:8080/healthz?x=1").unwrap();
        assert_eq!(
            (t.addr.as_str(), t.authority.as_str(), t.path.as_str()),
            ("127.0.0.1:8080", "127.0.0.1:8080", "/healthz?x=1")
        );
        let t = HttpTarget::parse("http://localhost").unwrap();
        assert_eq!((t.addr.as_str(), t.path.as_str()), ("localhost:80", "/"));
        let t = HttpTarget::parse("http://[::1]:9/").unwrap();
        assert_eq!(t.addr, "[::1]:9");
        let t = HttpTarget::parse("http://[::1]").unwrap();
        assert_eq!(t.addr, "[::1]:80");
        for bad in [
            "https://x/",
            "x:80",
            "http://",
            "http://h:0/",
            "http://h:99999/",
            "http://u:p@h/",
            "http://h/a b",
            "http://h/\n",
        ] {
            assert!(HttpTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_the_tail_of_a_checks_output_is_kept() {
        let mut said = Said::default();
        assert_eq!(said.line(), None);
        said.push(b"starting\n");
        assert_eq!(said.line().as_deref(), Some("starting"));
        said.push(&vec![b'x'; 3 * OUTPUT_KEPT]);
        said.push(b"\nthe reason\n");
        let line = said.line().unwrap();
        assert_eq!(said.tail.len(), OUTPUT_KEPT);
        assert!(line.ends_with("x\nthe reason"), "{line}");
        assert!(
            line.starts_with(&format!("[{} bytes before] ", 2 * OUTPUT_KEPT + 21)),
            "{line}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    #[allow(clippy::await_holding_lock)]
    async fn a_check_that_floods_its_output_is_drained_and_its_tail_kept() {
        let _serial = crate::process::child::tests::serial();
        let reaper = Reaper::start(None).unwrap();
        let env = Command {
            program: "/bin/true".into(),
            args: vec![],
            env: vec![],
            env_remove: vec![],
            signal_defaults: vec![],
        };
        let script = "head -c 5000000 /dev/zero; echo; echo why it failed >&2; exit 3";
        let (result, said) = run_cmd(script, Duration::from_secs(20), &reaper, &env).await;
        assert_eq!(result, Err(Failure::Exit(ExitStatus::Code(3))));
        let said = said.unwrap();
        assert!(said.ends_with("why it failed"), "{said}");
        assert!(said.len() < 3 * OUTPUT_KEPT, "{}", said.len());
        let (result, said) = run_cmd("exit 0", Duration::from_secs(20), &reaper, &env).await;
        assert_eq!((result, said), (Ok(()), None));
        // Its stdout and stderr are one pipe, in order.
        let script = "echo out; echo err >&2; readlink /proc/$$/fd/1 /proc/$$/fd/2";
        let (result, said) = run_cmd(script, Duration::from_secs(20), &reaper, &env).await;
        assert_eq!(result, Ok(()));
        let said = said.unwrap();
        let lines: Vec<&str> = said.lines().collect();
        assert_eq!(lines[..2], ["out", "err"], "{said}");
        assert!(
            lines[2].starts_with("pipe:") && lines[2] == lines[3],
            "{said}"
        );
    }

    #[test]
    fn the_status_code_is_read_from_the_status_line_only() {
        assert_eq!(status_code(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(status_code(b"HTTP/1.0 503\r\n\r\n"), Some(503));
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_code(b"HTTP/1.1 99999 x\r\n"), None);
        assert_eq!(status_code(b""), None);
    }
}
