//! Command line and environment: each flag is documented where it is defined, and
//! [`Config::from_cli`] validates everything before anything is started or contacted.

use crate::error::Error;
use crate::timing::Timing;
use clap::{Parser, ValueEnum};
use nix::sys::signal::Signal;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Run COMMAND on exactly one host at a time, chosen by etcd leader election.
///
/// Every option can also be set in the environment as LEADERRUN_<OPTION> (for example
/// LEADERRUN_ENDPOINTS, LEADERRUN_TTL); a flag on the command line wins.
#[derive(Debug, Parser)]
#[command(name = "leaderrun", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub etcd: EtcdArgs,

    /// Election name: the key prefix shared with `etcdctl elect NAME`.
    /// Default: the command's file name (`./my-server` gives `my-server`).
    #[arg(long, env = "LEADERRUN_ELECTION")]
    pub election: Option<String>,

    /// The value this candidate proclaims (what `etcdctl elect -l` shows). Default: hostname:pid.
    #[arg(long, env = "LEADERRUN_ID")]
    pub id: Option<String>,

    /// Lease TTL in seconds: how long a silent leader keeps leadership. Failover after a crash
    /// or a cut link takes about this long; a graceful stop hands over at once.
    #[arg(
        long,
        env = "LEADERRUN_TTL",
        default_value_t = 10,
        allow_negative_numbers = true
    )]
    pub ttl: i64,

    /// Signal sent to the child's process group to stop it (TERM, INT, HUP, QUIT, USR1, ...).
    #[arg(long, env = "LEADERRUN_STOP_SIGNAL", default_value = "TERM", value_parser = parse_signal)]
    pub stop_signal: Signal,

    /// Time between the stop signal and SIGKILL (500ms, 3s, ...). Default 3s, shrunk to fit a
    /// small --ttl; an explicit value that does not fit the TTL is refused.
    #[arg(long, env = "LEADERRUN_STOP_TIMEOUT", value_parser = parse_duration)]
    pub stop_timeout: Option<Duration>,

    /// What to do when the child exits on its own while leading.
    #[arg(long, env = "LEADERRUN_ON_EXIT", value_enum, default_value_t = OnExit::Exit)]
    pub on_exit: OnExit,

    /// With --on-exit restart: after this many exits within --restart-window, stop restarting,
    /// resign and campaign again, so that a standby gets its chance.
    #[arg(long, env = "LEADERRUN_RESTART_LIMIT", default_value_t = 5)]
    pub restart_limit: u32,

    /// With --on-exit restart: the window in which --restart-limit exits count.
    #[arg(long, env = "LEADERRUN_RESTART_WINDOW", value_parser = parse_duration, default_value = "60s")]
    pub restart_window: Duration,

    /// When another candidate leads, exit at once with status 75 instead of waiting.
    #[arg(long, env = "LEADERRUN_NO_WAIT", conflicts_with = "wait_timeout")]
    pub no_wait: bool,

    /// Give up with status 75 when not leading after this long (counted from start-up).
    #[arg(long, env = "LEADERRUN_WAIT_TIMEOUT", value_parser = parse_duration)]
    pub wait_timeout: Option<Duration>,

    /// Run at most once per ID across all hosts: the winner records the ID in etcd before it
    /// starts the command; a host that finds it recorded exits 0 without running.
    #[arg(long, env = "LEADERRUN_RUN_ID")]
    pub run_id: Option<String>,

    /// How long a --run-id record is kept in etcd.
    #[arg(long, env = "LEADERRUN_RUN_ID_TTL", value_parser = parse_duration, default_value = "24h")]
    pub run_id_ttl: Duration,

    /// Log format on stderr.
    #[arg(long, env = "LEADERRUN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log level: error, warn, info, debug or trace.
    #[arg(long, env = "LEADERRUN_LOG_LEVEL", default_value = "info")]
    pub log_level: tracing::Level,

    /// The command to run while leading, and its arguments (after `--`).
    #[arg(
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<OsString>,
}

/// How to reach etcd: shared by `leaderrun` and `leaderrun leader`.
#[derive(Debug, clap::Args)]
pub struct EtcdArgs {
    /// etcd endpoints, comma-separated host:port or http:// URLs.
    #[arg(
        long,
        env = "LEADERRUN_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,
}

impl EtcdArgs {
    /// The endpoints, trimmed; an empty entry is a usage error.
    pub fn endpoints(self) -> Result<Vec<String>, Error> {
        let endpoints: Vec<String> = self
            .endpoints
            .into_iter()
            .map(|e| e.trim().to_string())
            .collect();
        if endpoints.is_empty() || endpoints.iter().any(|e| e.is_empty()) {
            return Err(Error::Usage("--endpoints has an empty entry".into()));
        }
        Ok(endpoints)
    }
}

/// What happens when the child exits on its own while leading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnExit {
    /// Resign and exit with the child's status.
    Exit,
    /// Resign, then campaign again (another candidate gets the first turn).
    Recampaign,
    /// Restart the child in place, keeping leadership, with exponential backoff.
    Restart,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// How long a candidate waits for leadership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// As long as it takes (the default).
    Forever,
    /// Not at all: exit 75 when another candidate leads.
    No,
    /// Until this long after start-up, then exit 75.
    Until(Duration),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunId {
    pub id: String,
    pub ttl: Duration,
}

/// --on-exit restart: how many exits within which window end the restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    pub limit: u32,
    pub window: Duration,
}

/// Validated settings: everything the supervisor needs, nothing it must check again.
#[derive(Debug, Clone)]
pub struct Config {
    pub endpoints: Vec<String>,
    pub election: String,
    pub id: String,
    /// The TTL asked for; etcd may grant more (it raises values below its minimum).
    pub ttl: Duration,
    /// The stop timeout the user set, if any (the default is derived per granted TTL).
    pub stop_timeout: Option<Duration>,
    pub stop_signal: Signal,
    pub on_exit: OnExit,
    pub restart: RestartPolicy,
    /// --no-wait: exit 75 at once when another candidate leads.
    pub no_wait: bool,
    /// Give up with status 75 when not leading this long after start-up (--wait-timeout; with
    /// --no-wait alone, a default bound so a cron job always ends). None: wait forever.
    pub wait_timeout: Option<Duration>,
    /// Run at most once per this ID, recorded for `ttl`.
    pub run_id: Option<RunId>,
    /// The command, resolved to a path that exists and is executable.
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub log_format: LogFormat,
    pub log_level: tracing::Level,
}

impl Config {
    /// Validate the command line. Nothing has been started and etcd not contacted yet.
    pub fn from_cli(cli: Cli) -> Result<Config, Error> {
        let mut command = cli.command.into_iter();
        let name = command
            .next()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| Error::Usage("missing COMMAND (give it after --)".into()))?;
        let args: Vec<OsString> = command.collect();
        let program = resolve_command(Path::new(&name), std::env::var_os("PATH"))?;

        if cli.ttl < 1 {
            return Err(Error::Usage(format!(
                "--ttl must be at least 1 second, got {}",
                cli.ttl
            )));
        }
        let ttl = Duration::from_secs(cli.ttl as u64);
        Timing::new(ttl, cli.stop_timeout).map_err(|e| Error::Usage(e.to_string()))?;

        let endpoints = cli.etcd.endpoints()?;

        let election = match cli.election {
            Some(e) => e,
            None => default_election(Path::new(&name)),
        };
        if election.trim().is_empty() {
            return Err(Error::Usage("--election must not be empty".into()));
        }
        let id = cli.id.unwrap_or_else(default_id);
        if id.is_empty() {
            return Err(Error::Usage("--id must not be empty".into()));
        }

        if cli.restart_limit == 0 {
            return Err(Error::Usage("--restart-limit must be at least 1".into()));
        }
        let wait = match (cli.no_wait, cli.wait_timeout) {
            (true, _) => Wait::No,
            (false, Some(d)) => Wait::Until(d),
            (false, None) => Wait::Forever,
        };
        let run_id = match cli.run_id {
            Some(id) if id.is_empty() => {
                return Err(Error::Usage("--run-id must not be empty".into()))
            }
            Some(id) if cli.run_id_ttl < Duration::from_secs(1) => {
                return Err(Error::Usage(format!(
                    "--run-id-ttl must be at least 1s (for run id {id})"
                )))
            }
            Some(id) => Some(RunId {
                id,
                ttl: cli.run_id_ttl,
            }),
            None => None,
        };

        Ok(Config {
            endpoints,
            election,
            id,
            ttl,
            stop_timeout: cli.stop_timeout,
            stop_signal: cli.stop_signal,
            on_exit: cli.on_exit,
            restart: RestartPolicy {
                limit: cli.restart_limit,
                window: cli.restart_window,
            },
            no_wait: cli.no_wait,
            wait_timeout: match wait {
                Wait::Until(d) => Some(d),
                _ => None,
            },
            run_id,
            program,
            args,
            log_format: cli.log_format,
            log_level: cli.log_level,
        })
    }
}

/// The command's file name: `./my-server` and `/usr/bin/my-server` both give `my-server`.
fn default_election(command: &Path) -> String {
    command
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn default_id() -> String {
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// Find the command as the shell does: a name with a slash is a path, anything else is
/// looked up on PATH. Missing → 127; present but not runnable → 126.
pub fn resolve_command(name: &Path, path_var: Option<OsString>) -> Result<PathBuf, Error> {
    if name.as_os_str().as_encoded_bytes().contains(&b'/') {
        return check_executable(name).map(|()| name.to_path_buf());
    }
    let mut not_executable = None;
    for dir in std::env::split_paths(&path_var.unwrap_or_default()) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let candidate = dir.join(name);
        match check_executable(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(e @ Error::CommandNotExecutable { .. }) => {
                not_executable.get_or_insert(e);
            }
            Err(_) => {}
        }
    }
    Err(not_executable.unwrap_or_else(|| Error::CommandNotFound(name.to_path_buf())))
}

fn check_executable(path: &Path) -> Result<(), Error> {
    let meta = std::fs::metadata(path).map_err(|_| Error::CommandNotFound(path.to_path_buf()))?;
    let reason = if meta.is_dir() {
        "is a directory"
    } else if meta.permissions().mode() & 0o111 == 0 {
        "permission denied"
    } else {
        return Ok(());
    };
    Err(Error::CommandNotExecutable {
        path: path.to_path_buf(),
        reason: reason.into(),
    })
}

/// Signal names with or without SIG, any case, or numbers: TERM, sigint, 15.
pub fn parse_signal(s: &str) -> Result<Signal, String> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| format!("unknown signal number {n}"));
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>()
        .map_err(|_| format!("unknown signal '{s}'"))
}

/// Durations as humantime reads them (`500ms`, `3s`, `1m 30s`); a bare number means seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("invalid duration '{s}': {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, Error> {
        let cli = Cli::try_parse_from(std::iter::once("leaderrun").chain(args.iter().copied()))
            .map_err(|e| Error::Usage(e.to_string()))?;
        Config::from_cli(cli)
    }

    #[test]
    fn election_defaults_to_the_command_file_name() {
        let c = parse(&["--", "/bin/sh", "-c", "true"]).unwrap();
        assert_eq!(c.election, "sh");
        assert_eq!(c.args, vec![OsString::from("-c"), OsString::from("true")]);
        let c = parse(&["--election", "web", "--", "sh"]).unwrap();
        assert_eq!(c.election, "web");
        assert!(c.program.ends_with("sh"));
    }

    #[test]
    fn a_mistyped_flag_is_not_taken_for_the_command() {
        let err = parse(&["--tll", "3", "--", "sh"]).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
        // After the command, everything is the command's, hyphens included.
        let c = parse(&["sh", "-c", "--ttl"]).unwrap();
        assert_eq!(c.args, vec![OsString::from("-c"), OsString::from("--ttl")]);
        assert_eq!(c.ttl, Duration::from_secs(10));
    }

    #[test]
    fn id_defaults_to_hostname_and_pid() {
        let c = parse(&["--", "sh"]).unwrap();
        assert!(
            c.id.ends_with(&format!(":{}", std::process::id())),
            "{}",
            c.id
        );
    }

    #[test]
    fn command_resolution_follows_the_shell() {
        let err = resolve_command(Path::new("no-such-cmd-xyz"), Some("/bin".into())).unwrap_err();
        assert_eq!(err.exit_code(), 127);
        let plain = std::env::temp_dir().join(format!("leaderrun-plain-{}", std::process::id()));
        std::fs::write(&plain, "not a program").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = resolve_command(&plain, None).unwrap_err();
        std::fs::remove_file(&plain).unwrap();
        assert_eq!(err.exit_code(), 126);
        let err = resolve_command(Path::new("/tmp"), None).unwrap_err();
        assert_eq!(err.exit_code(), 126);
        assert!(resolve_command(Path::new("sh"), Some("/nonexistent:/bin".into())).is_ok());
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["--ttl", "0", "--", "sh"][..],
            &["--ttl", "-3", "--", "sh"],
            &["--stop-timeout", "soon", "--", "sh"],
            &["--stop-signal", "NOPE", "--", "sh"],
            &["--election", "", "--", "sh"],
            &["--id", "", "--", "sh"],
            &["--endpoints", "", "--", "sh"],
            &["--ttl", "3", "--stop-timeout", "5s", "--", "sh"],
            &["--on-exit", "sometimes", "--", "sh"],
            &["--no-wait", "--wait-timeout", "5s", "--", "sh"],
            &["--wait-timeout", "never", "--", "sh"],
            &["--run-id", "", "--", "sh"],
            &["--run-id", "x", "--run-id-ttl", "0s", "--", "sh"],
            &["--restart-limit", "0", "--", "sh"],
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
    }

    #[test]
    fn waiting_and_run_ids_are_read() {
        let c = parse(&["--no-wait", "--run-id", "2026-11-21", "--", "sh"]).unwrap();
        assert!(c.no_wait);
        let run = c.run_id.unwrap();
        assert_eq!(
            (run.id.as_str(), run.ttl),
            ("2026-11-21", Duration::from_secs(86400))
        );
        let c = parse(&["--wait-timeout", "90s", "--", "sh"]).unwrap();
        assert_eq!(c.wait_timeout, Some(Duration::from_secs(90)));
        assert_eq!(parse(&["--", "sh"]).unwrap().wait_timeout, None);
    }

    #[test]
    fn signals_and_durations_parse_in_the_usual_spellings() {
        assert_eq!(parse_signal("TERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("sigint").unwrap(), Signal::SIGINT);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
    }
}
