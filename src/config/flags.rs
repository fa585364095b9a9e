//! The command line: each flag documented where it is defined, and the value parsers that
//! flags, environment variables and defaults share.
//!
//! clap reads the flags only (no `env=`): every field is optional here, so that
//! [`crate::config`] can layer the flags over the environment, the configuration file and the
//! defaults. The help text gets each option's environment variable, configuration-file key and
//! default from [`crate::config::OPTIONS`].

use crate::config::file::ConfigFile;
use crate::config::{
    Env, Format, LogFormat, LogLevel, OnExit, Opt, Reader, Secret, Settings, Source, Sourced, User,
    CACERT, CERT, CONFIG, DEFAULT_PORT, ELECTION, ENDPOINTS, HEALTH_CMD, HEALTH_HOLDOFF,
    HEALTH_HTTP, HEALTH_INTERVAL, HEALTH_RETRIES, HEALTH_START_PERIOD, HEALTH_TIMEOUT, HOLDERS, ID,
    KEY, LOG_FORMAT, LOG_LEVEL, MAX_DURATION, MAX_ENDPOINTS, NO_WAIT, NO_WAIT_TIMEOUT, ON_EXIT,
    OPTIONS, PARENT_KEY_VAR, PASSWORD, PASSWORD_FILE, RESTART_LIMIT, RESTART_WINDOW, RUN_ID,
    RUN_ID_TTL, STATUS_ADDR, STOP_SIGNAL, STOP_TIMEOUT, TTL, USER, WAIT_TIMEOUT,
};
use crate::error::{
    Error, EXIT_ETCD, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, EXIT_NOT_LEADING, EXIT_NO_LEADER,
    EXIT_USAGE,
};
use crate::process::health::HttpTarget;
use clap::{Arg, CommandFactory, FromArgMatches, Parser, ValueEnum};
use nix::sys::signal::Signal;
use std::ffi::OsString;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Run COMMAND on exactly one host at a time, chosen by etcd leader election.
///
/// Every option can also be set in the environment as LEADERRUN_<OPTION> and in the
/// configuration file; a flag wins over the environment, which wins over the file. In the
/// environment of leaderrun's own command, LEADERRUN_ELECTION and
/// LEADERRUN_ID describe the parent: a leaderrun started there (LEADERRUN_KEY set) does not
/// read them.
#[derive(Debug, Parser)]
#[command(name = "leaderrun", version, about, long_about = None)]
pub struct Flags {
    #[command(flatten)]
    pub etcd: EtcdFlags,

    /// Election name: the key prefix shared with `etcdctl elect NAME`. Default: the command's
    /// file name (`./my-server` gives `my-server`); required when COMMAND is a shell,
    /// interpreter or wrapper (sh, bash, python3, env, nohup, ...).
    #[arg(long, value_name = "NAME", value_parser = text)]
    pub election: Option<String>,

    /// The value this candidate proclaims (what `etcdctl elect -l` shows). Default: hostname:pid.
    #[arg(long, value_parser = text)]
    pub id: Option<String>,

    /// At most N children across all hosts at once (1 to 1000), like `consul lock -n`: the N
    /// first candidates by create revision hold. Every candidate of one election must use the
    /// same N (a mismatch is refused). Not with --run-id.
    #[arg(long, value_name = "N", value_parser = holders)]
    pub holders: Option<u32>,

    /// Lease TTL in seconds (1 to 9000000000): how long a silent leader keeps leadership.
    /// Failover after a crash or a cut link takes about this long; a graceful stop hands over
    /// at once.
    #[arg(long, value_name = "SECONDS", value_parser = ttl)]
    pub ttl: Option<u64>,

    /// Signal sent to the child's process group to stop it (TERM, INT, HUP, QUIT, USR1, ...).
    #[arg(long, value_name = "SIGNAL", value_parser = signal)]
    pub stop_signal: Option<Signal>,

    /// Time between the stop signal and SIGKILL (500ms, 3s, ...). Default 3s, shrunk to fit a
    /// small --ttl; an explicit value that does not fit the TTL is refused.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub stop_timeout: Option<Duration>,

    /// What to do when the child exits on its own while leading.
    #[arg(long, value_name = "ACTION", value_enum, ignore_case = true)]
    pub on_exit: Option<OnExit>,

    /// With --on-exit restart: after this many exits within --restart-window, stop restarting,
    /// resign and campaign again, so that a standby gets its chance (at least 1).
    #[arg(long, value_name = "COUNT", value_parser = restart_limit)]
    pub restart_limit: Option<u32>,

    /// With --on-exit restart: the window in which --restart-limit exits count.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub restart_window: Option<Duration>,

    /// When another candidate leads, exit at once with status 75 instead of waiting. Also
    /// gives up with 75 when not leading after --wait-timeout (default below), for instance
    /// while etcd cannot be reached, so that a cron job always ends.
    #[arg(long)]
    pub no_wait: bool,

    /// Give up with status 75 when not leading after this long (counted from start-up).
    #[arg(long, value_name = "DURATION", value_parser = wait_timeout)]
    pub wait_timeout: Option<Duration>,

    /// Run at most once per ID across all hosts: the winner records the ID in etcd before it
    /// starts the command; a host that finds it recorded exits 0 without running. Not with
    /// --on-exit restart or recampaign, which start the command again.
    #[arg(long, value_name = "ID", value_parser = text)]
    pub run_id: Option<String>,

    /// How long a --run-id record is kept in etcd (1s to 9000000000s).
    #[arg(long, value_name = "DURATION", value_parser = run_id_ttl)]
    pub run_id_ttl: Option<Duration>,

    /// Leadership follows the child's health: while leading, run this shell command (sh -c,
    /// with the child's environment) every --health-interval; exit status 0 is healthy. After
    /// --health-retries failures in a row, the child is stopped, leadership handed over, and
    /// this host stays out of the election for --health-holdoff.
    #[arg(long, value_name = "CMD", value_parser = text)]
    pub health_cmd: Option<String>,

    /// Like --health-cmd, with a GET of this http:// URL: 2xx and 3xx are healthy.
    #[arg(long, value_name = "URL", value_parser = HttpTarget::parse)]
    pub health_http: Option<HttpTarget>,

    /// Time between health checks (the first comes one interval after the child starts).
    #[arg(long, value_name = "DURATION", value_parser = positive_duration)]
    pub health_interval: Option<Duration>,

    /// A check that takes longer fails (a command is killed with its process group).
    #[arg(long, value_name = "DURATION", value_parser = positive_duration)]
    pub health_timeout: Option<Duration>,

    /// Failures in a row that make the leader unhealthy (at least 1).
    #[arg(long, value_name = "COUNT", value_parser = restart_limit)]
    pub health_retries: Option<u32>,

    /// Failures within this time after the child starts do not count; a success ends it.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub health_start_period: Option<Duration>,

    /// After handing over for ill health, stay out of the election this long, so a standby
    /// takes over; then campaign again.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub health_holdoff: Option<Duration>,

    /// Serve the HTTP status endpoint on this HOST:PORT (an IP address, IPv6 in brackets:
    /// 127.0.0.1:9110, [::1]:9110, 0.0.0.0:9110): /leader, /standby, /health, /status, /metrics.
    /// Off by default.
    #[arg(long, value_name = "HOST:PORT", value_parser = status_addr)]
    pub status_addr: Option<SocketAddr>,

    /// Log format on stderr (the final line of a failure too).
    #[arg(long, value_name = "FORMAT", value_enum, ignore_case = true)]
    pub log_format: Option<LogFormat>,

    /// Log level.
    #[arg(long, value_name = "LEVEL", value_enum, ignore_case = true)]
    pub log_level: Option<LogLevel>,

    /// The command to run while leading, and its arguments (after `--`). Required, unless the
    /// configuration file names one (`command = ["./my-server", "--port", "8080"]`); this one
    /// wins over the file's.
    #[arg(num_args = 1.., trailing_var_arg = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// Where settings are read from and how to reach etcd: shared by `leaderrun` and `leaderrun
/// leader`.
#[derive(Debug, clap::Args)]
pub struct EtcdFlags {
    /// Read settings from this TOML file: each option under its name with _ for - (shown as
    /// [config: ...]), and command = ["PROGRAM", "ARG", ...]. Flags and variables win over it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// etcd endpoints, comma-separated: host:port, http://host:port, https://host:port,
    /// [ipv6]:port; the port defaults to 2379. A bare host:port is https when a TLS option
    /// (--cacert, --cert, --key) is given, else http. Duplicates count once; at most 64.
    #[arg(long, value_name = "ENDPOINTS", value_parser = endpoint_list)]
    pub endpoints: Vec<EndpointList>,

    /// CA bundle (PEM) that signs etcd's server certificates. Default with https: the
    /// system's roots.
    #[arg(long, value_name = "FILE", value_parser = tls_file)]
    pub cacert: Option<PathBuf>,

    /// Client certificate (PEM), for etcd's --client-cert-auth; needs --key.
    #[arg(long, value_name = "FILE", value_parser = tls_file)]
    pub cert: Option<PathBuf>,

    /// The client certificate's private key (PEM); needs --cert. Its variable is
    /// LEADERRUN_KEY_FILE: LEADERRUN_KEY is the leader key leaderrun gives its command.
    #[arg(long, value_name = "FILE", value_parser = tls_file)]
    pub key: Option<PathBuf>,

    /// etcd user (etcd's --auth). Its password: --password-file or LEADERRUN_PASSWORD.
    /// NAME:PASSWORD (etcdctl's form) works too, but puts the password where every user of
    /// the host can read it (ps): a warning says so.
    #[arg(long, value_name = "NAME", value_parser = user)]
    pub user: Option<User>,

    /// File holding --user's password (one trailing newline is ignored); read at start-up.
    #[arg(long, value_name = "FILE", value_parser = readable_file)]
    pub password_file: Option<PathBuf>,
}

/// One `--endpoints` value, checked and normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointList(pub Vec<String>);

/// Print the current leader of an election (exit 0), or exit 3 when nobody leads.
#[derive(Debug, Parser)]
#[command(name = "leaderrun leader", version, long_about = None)]
pub struct LeaderFlags {
    #[command(flatten)]
    pub etcd: EtcdFlags,

    /// The election to ask about.
    #[arg(long, value_name = "NAME", value_parser = text)]
    pub election: Option<String>,

    /// Output: `text` (id=... key=... revision=... lease=...) or `json` (one object per line).
    #[arg(long, value_enum, ignore_case = true, default_value_t = Format::Text)]
    pub format: Format,

    /// Print every change of leader until interrupted, like `etcdctl elect -l`.
    #[arg(long)]
    pub watch: bool,

    /// List the first N keys under NAME/, a line each: the holders of a --holders N election.
    #[arg(long, value_name = "N", value_parser = holders)]
    pub holders: Option<u32>,
}

/// Ask the leader of an election to hand over: it stops its command, resigns and campaigns
/// again behind the others, so that a standby takes over at once.
#[derive(Debug, Parser)]
#[command(name = "leaderrun resign", version, long_about = None)]
pub struct ResignFlags {
    #[command(flatten)]
    pub etcd: EtcdFlags,

    /// The election whose leader should step down.
    #[arg(long, value_name = "NAME", value_parser = text)]
    pub election: Option<String>,

    /// Give up (status 1) when no other candidate leads after this long: the leader's stop
    /// timeout and a handover must fit in it.
    #[arg(long, value_name = "DURATION", value_parser = resign_timeout, default_value = "30s")]
    pub timeout: Duration,

    /// Output: `text` (the old and the new leader, a line each) or `json` (one object).
    #[arg(long, value_enum, ignore_case = true, default_value_t = Format::Text)]
    pub format: Format,
}

fn flag<T>(opt: &'static Opt, value: Option<T>) -> Option<Sourced<T>> {
    value.map(|value| Sourced {
        value,
        from: Source::Flag(opt),
    })
}

impl EtcdFlags {
    /// The flags layer of the connection settings.
    fn settings(self) -> Result<Settings, Error> {
        Ok(Settings {
            endpoints: self.endpoints()?,
            cacert: flag(&CACERT, self.cacert),
            cert: flag(&CERT, self.cert),
            key: flag(&KEY, self.key),
            user: flag(&USER, self.user),
            password_file: flag(&PASSWORD_FILE, self.password_file),
            ..Settings::default()
        })
    }

    /// Every `--endpoints` flag together, duplicates removed, the limit checked.
    fn endpoints(&self) -> Result<Option<Sourced<Vec<String>>>, Error> {
        if self.endpoints.is_empty() {
            return Ok(None);
        }
        let all: Vec<String> = self.endpoints.iter().flat_map(|l| l.0.clone()).collect();
        let list = distinct(all).map_err(|e| Error::Usage(format!("--endpoints: {e}")))?;
        Ok(flag(&ENDPOINTS, Some(list)))
    }
}

impl Flags {
    /// The flags layer.
    pub fn settings(self) -> Result<Settings, Error> {
        Ok(Settings {
            election: flag(&ELECTION, self.election),
            id: flag(&ID, self.id),
            holders: flag(&HOLDERS, self.holders),
            ttl: flag(&TTL, self.ttl),
            stop_signal: flag(&STOP_SIGNAL, self.stop_signal),
            stop_timeout: flag(&STOP_TIMEOUT, self.stop_timeout),
            on_exit: flag(&ON_EXIT, self.on_exit),
            restart_limit: flag(&RESTART_LIMIT, self.restart_limit),
            restart_window: flag(&RESTART_WINDOW, self.restart_window),
            // Absent is "not set here": the environment may still set it.
            no_wait: flag(&NO_WAIT, self.no_wait.then_some(true)),
            wait_timeout: flag(&WAIT_TIMEOUT, self.wait_timeout),
            run_id: flag(&RUN_ID, self.run_id),
            run_id_ttl: flag(&RUN_ID_TTL, self.run_id_ttl),
            health_cmd: flag(&HEALTH_CMD, self.health_cmd),
            health_http: flag(&HEALTH_HTTP, self.health_http),
            health_interval: flag(&HEALTH_INTERVAL, self.health_interval),
            health_timeout: flag(&HEALTH_TIMEOUT, self.health_timeout),
            health_retries: flag(&HEALTH_RETRIES, self.health_retries),
            health_start_period: flag(&HEALTH_START_PERIOD, self.health_start_period),
            health_holdoff: flag(&HEALTH_HOLDOFF, self.health_holdoff),
            status_addr: flag(&STATUS_ADDR, self.status_addr),
            log_format: flag(&LOG_FORMAT, self.log_format),
            log_level: flag(&LOG_LEVEL, self.log_level),
            ..self.etcd.settings()?
        })
    }
}

impl LeaderFlags {
    /// The flags layer (the settings `leaderrun leader` shares with `leaderrun`).
    pub fn settings(self) -> Result<Settings, Error> {
        Ok(Settings {
            election: flag(&ELECTION, self.election),
            holders: flag(&HOLDERS, self.holders),
            ..self.etcd.settings()?
        })
    }
}

impl ResignFlags {
    /// The flags layer (the settings `leaderrun resign` shares with `leaderrun`).
    pub fn settings(self) -> Result<Settings, Error> {
        Ok(Settings {
            election: flag(&ELECTION, self.election),
            ..self.etcd.settings()?
        })
    }
}

/// What the help says of the environment, the configuration file and the secrets, for both
/// subcommands.
fn settings_help() -> String {
    format!(
        "Environment: each option can also be set as its LEADERRUN_<OPTION> variable, shown \
         as [env: ...]; an empty variable counts as unset, and words are read in any case. \
         --key's is LEADERRUN_KEY_FILE ({PARENT_KEY_VAR} is the leader key leaderrun gives \
         its command). The password can also be given as {}, never as a flag.\n\n\
         Configuration file: --config FILE or {}, TOML; each option under the key shown as \
         [config: ...] (stop_timeout = \"3s\", endpoints = [\"https://etcd1:2379\"]). A \
         password is never read from it: password_file names the file that holds it. A flag \
         wins over a variable, which wins over the file, which wins over the default.",
        PASSWORD.env, CONFIG.env
    )
}

/// `leaderrun`'s command line definition, its help annotated from the options table.
pub fn command() -> clap::Command {
    let after = format!(
        "{}\n\n\
         The child of a leaderrun gets LEADERRUN_ELECTION, LEADERRUN_ID, {PARENT_KEY_VAR}, \
         LEADERRUN_REVISION and LEADERRUN_LEASE; a leaderrun started where {PARENT_KEY_VAR} is \
         set does not read LEADERRUN_ELECTION, LEADERRUN_ID and LEADERRUN_STATUS_ADDR (they are \
         its parent's), nor election, id, status_addr and command from a file named by an \
         inherited {}.\n\n\
         Exit status: the command's, or 128+N when signal N killed it; {EXIT_USAGE} bad usage \
         (nothing started); {EXIT_NOT_LEADING} not leading (--no-wait, --wait-timeout); \
         {EXIT_ETCD} etcd refused us; {EXIT_NOT_EXECUTABLE} and {EXIT_NOT_FOUND} COMMAND not \
         executable or not found.\n\n\
         Other commands: `leaderrun leader --election NAME` prints who leads; `leaderrun \
         resign --election NAME` asks the leader to hand over (each has its --help). A \
         command named `leader` or `resign` runs with `leaderrun -- leader`.",
        settings_help(),
        CONFIG.env
    );
    annotate(Flags::command())
        .after_long_help(after)
        .mut_arg("no_wait", |a| {
            append_help(
                a,
                &format!(
                    "[default --wait-timeout with --no-wait: {}]",
                    humantime::format_duration(NO_WAIT_TIMEOUT)
                ),
            )
        })
}

/// `leaderrun leader`'s command line definition.
pub fn leader_command() -> clap::Command {
    annotate(LeaderFlags::command()).after_long_help(format!(
        "{}\n\n\
         Exit status: 0 somebody leads; {EXIT_NO_LEADER} nobody leads, or the first key under \
         NAME/ is not a live candidate of NAME (a key without a lease, a candidate of a nested \
         election NAME/...): it blocks the election, and is printed as `blocked by key=...`; \
         {EXIT_USAGE} bad usage; {EXIT_ETCD} etcd cannot be read, or stdout was closed. With \
         --holders N: the first N keys under NAME/, a line each, and 0 when one of them is a \
         live candidate.",
        settings_help()
    ))
}

/// `leaderrun resign`'s command line definition.
pub fn resign_command() -> clap::Command {
    annotate(ResignFlags::command()).after_long_help(format!(
        "{}\n\n\
         The request is bound to the leader it was meant for (its key and create revision): it \
         cannot unseat a later leader. Only a leaderrun leader listens; an `etcdctl elect` \
         leader does not, and the request times out. The request is written to \
         leaderrun.resign/NAME, which the operator's role must be able to write.\n\n\
         Exit status: 0 another candidate leads now (the old and the new leader are printed); \
         {EXIT_NO_LEADER} nobody leads, or what leads is not a live candidate; 1 no other \
         candidate waits, or no handover within --timeout, or etcd refused us; {EXIT_USAGE} \
         bad usage.",
        settings_help()
    ))
}

/// Parse `leaderrun resign`'s flags (the first item is `resign`).
pub fn parse_resign<I, T>(args: I) -> Result<ResignFlags, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    ResignFlags::from_arg_matches(&resign_command().try_get_matches_from(args)?)
}

/// Every command, for the man pages and the shell completions: `leaderrun` with its
/// subcommands attached. For documentation only: `cli` dispatches a subcommand on the first
/// word and parses it with its own definition. A new subcommand is one line here.
pub fn commands() -> clap::Command {
    command()
        .subcommand(leader_command().name("leader"))
        .subcommand(resign_command().name("resign"))
        // As on the command line: a subcommand takes the place of COMMAND.
        .args_conflicts_with_subcommands(true)
        .subcommand_negates_reqs(true)
}

/// Parse `leaderrun`'s flags (the first item is the program name).
pub fn parse<I, T>(args: I) -> Result<Flags, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    Flags::from_arg_matches(&command().try_get_matches_from(args)?)
}

/// Parse `leaderrun leader`'s flags (the first item is `leader`).
pub fn parse_leader<I, T>(args: I) -> Result<LeaderFlags, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    LeaderFlags::from_arg_matches(&leader_command().try_get_matches_from(args)?)
}

/// Each option's help ends with its environment variable, its configuration-file key and its
/// default. A value that looks like a negative number is taken as the option's value (and
/// refused by its parser with a message that names the option).
fn annotate(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|a| {
        let a = match a.get_action().takes_values() && a.get_long().is_some() {
            true => a.allow_negative_numbers(true),
            false => a,
        };
        let Some(opt) = OPTIONS.iter().find(|o| a.get_long() == Some(o.long)) else {
            return a;
        };
        let mut note = format!("[env: {}]", opt.env);
        if let Some(key) = opt.key {
            note.push_str(&format!(" [config: {key}]"));
        }
        if let Some(d) = opt.default.filter(|_| a.get_action().takes_values()) {
            note.push_str(&format!(" [default: {d}]"));
        }
        append_help(a, &note)
    })
}

fn append_help(a: Arg, note: &str) -> Arg {
    let help = a.get_help().map(|h| format!("{h} {note}"));
    let long = a.get_long_help().map(|h| format!("{h}\n\n{note}"));
    let a = match help {
        Some(h) => a.help(h),
        None => a.help(note.to_string()),
    };
    match long {
        Some(l) => a.long_help(l),
        None => a,
    }
}

/// The log format to report a failure in, found before the command line is validated: the
/// `--log-format` flag if given (before COMMAND), else LEADERRUN_LOG_FORMAT, else the
/// configuration file's `log_format`, else text. A value that does not parse, or a file that
/// cannot be read, gives text (its error is then reported as text).
pub fn log_format_hint(args: &[OsString], env: &Env) -> LogFormat {
    let parse = value_enum::<LogFormat>;
    if let Some(v) = given(args, &LOG_FORMAT) {
        return parse(&v).unwrap_or(LogFormat::Text);
    }
    let from_env = env.read(&LOG_FORMAT, parse);
    let from_file = || {
        let file = ConfigFile::find(given(args, &CONFIG).map(PathBuf::from), env).ok()??;
        file.read(&LOG_FORMAT, parse).ok()?
    };
    match from_env {
        Ok(Some(f)) => f.value,
        Ok(None) => from_file().map_or(LogFormat::Text, |f| f.value),
        Err(_) => LogFormat::Text,
    }
}

/// The last value of `opt`'s flag among leaderrun's own arguments (those before COMMAND).
fn given(args: &[OsString], opt: &Opt) -> Option<String> {
    let cmd = command();
    let mut args = args.iter().skip(1).map(|a| a.to_string_lossy());
    let flag = format!("--{}", opt.long);
    let mut given = None;
    while let Some(arg) = args.next() {
        if arg == "--" || !arg.starts_with('-') || arg == "-" {
            break; // COMMAND starts here: its arguments are not ours.
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (arg.to_string(), None),
        };
        let takes_value = name.strip_prefix("--").is_some_and(|long| {
            cmd.get_arguments()
                .any(|a| a.get_long() == Some(long) && a.get_action().takes_values())
        });
        let value = match inline {
            Some(v) => Some(v),
            None if takes_value => args.next().map(|v| v.to_string()),
            None => None,
        };
        if name == flag {
            given = value;
        }
    }
    given
}

// The value parsers: one per kind of value, for flags, variables and defaults alike.

/// The longest name, id or command line a flag takes: an election's name and an id go into
/// etcd keys and values, and into every log line; etcd refuses a request over 1.5 MiB for good.
const MAX_TEXT: usize = 4096;

/// A name or id: not blank, not over [`MAX_TEXT`] bytes, no control characters (they could
/// forge log lines or split `leaderrun leader`'s output).
pub fn text(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("must not be empty or blank".into());
    }
    if s.len() > MAX_TEXT {
        return Err(format!(
            "must be at most {MAX_TEXT} bytes long (it has {})",
            s.len()
        ));
    }
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(format!(
            "must not contain control characters (found U+{:04X})",
            c as u32
        ));
    }
    Ok(s.to_string())
}

/// A lease TTL: whole seconds, 1 to etcd's maximum.
pub fn ttl(s: &str) -> Result<u64, String> {
    let max = MAX_DURATION.as_secs();
    match s.trim().parse::<u64>() {
        Ok(secs @ 1..) if secs <= max => Ok(secs),
        _ => Err(format!(
            "must be a whole number of seconds from 1 to {max} (etcd's maximum lease TTL)"
        )),
    }
}

/// A duration as humantime reads it (`500ms`, `3s`, `1m 30s`); a bare number means seconds.
/// At most [`MAX_DURATION`].
pub fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = match s.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(s).map_err(|e| format!("not a duration: {e}"))?,
    };
    if d > MAX_DURATION {
        return Err(format!(
            "too long: at most {}s (about 285 years, etcd's maximum lease TTL)",
            MAX_DURATION.as_secs()
        ));
    }
    Ok(d)
}

/// A duration above zero (an interval, a timeout).
pub fn positive_duration(s: &str) -> Result<Duration, String> {
    match duration(s)? {
        d if d.is_zero() => Err("must be more than 0".into()),
        d => Ok(d),
    }
}

/// --wait-timeout: more than nothing (not waiting at all is --no-wait).
pub fn wait_timeout(s: &str) -> Result<Duration, String> {
    match duration(s)? {
        Duration::ZERO => {
            Err("must be more than 0 (to not wait for another leader: --no-wait)".into())
        }
        d => Ok(d),
    }
}

/// --status-addr: `IP:PORT`, an IPv6 address in brackets, the port 1-65535 (no name to
/// resolve: the address is bound before anything starts, and must mean one thing).
pub fn status_addr(s: &str) -> Result<SocketAddr, String> {
    let t = s.trim();
    let shown = crate::log::escape_controls(t);
    let (host, port) = t
        .rsplit_once(':')
        .ok_or_else(|| format!("'{shown}' is not HOST:PORT (127.0.0.1:9110, [::1]:9110)"))?;
    let port: u16 = match port.parse() {
        Ok(p) if p > 0 => p,
        _ => {
            return Err(format!(
                "'{shown}': the port must be a number from 1 to 65535"
            ))
        }
    };
    if host.contains(':') && !host.starts_with('[') {
        return Err(format!(
            "'{shown}': an IPv6 address must be in brackets: [::1]:9110"
        ));
    }
    let ip: std::net::IpAddr = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().map(Into::into),
        None => host.parse::<Ipv4Addr>().map(Into::into),
    }
    .map_err(|_| {
        format!("'{shown}': the host must be an IP address (0.0.0.0 for every interface)")
    })?;
    Ok(SocketAddr::new(ip, port))
}

/// --run-id-ttl: a lease TTL, at least one second.
/// `leaderrun resign --timeout`: 1s to 1h; an operator waits on it.
pub fn resign_timeout(s: &str) -> Result<Duration, String> {
    let d = duration(s)?;
    if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&d) {
        return Err("must be between 1s and 1h".into());
    }
    Ok(d)
}

pub fn run_id_ttl(s: &str) -> Result<Duration, String> {
    match duration(s)? {
        d if d < Duration::from_secs(1) => Err("must be at least 1s".into()),
        d => Ok(d),
    }
}

/// --holders: 1 to [`crate::election::holders::MAX_HOLDERS`].
pub fn holders(s: &str) -> Result<u32, String> {
    let max = crate::election::holders::MAX_HOLDERS;
    match s.trim().parse::<u32>() {
        Ok(n @ 1..) if n <= max => Ok(n),
        _ => Err(format!("must be a whole number from 1 to {max}")),
    }
}

pub fn restart_limit(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(n @ 1..) => Ok(n),
        _ => Err(format!("must be a whole number from 1 to {}", u32::MAX)),
    }
}

/// Signal names with or without SIG, any case, or numbers: TERM, sigint, 15.
pub fn signal(s: &str) -> Result<Signal, String> {
    let s = s.trim();
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
        .map_err(|_| "unknown signal".to_string())
}

/// A yes/no variable: true/false, yes/no, on/off, 1/0, any case.
pub fn boolean(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// One of an enum's words, any case (as the flags take them).
pub fn value_enum<T: ValueEnum>(s: &str) -> Result<T, String> {
    T::from_str(s.trim(), true).map_err(|_| {
        let words: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value())
            .map(|v| v.get_name().to_string())
            .collect();
        format!("expected one of {}", words.join(", "))
    })
}

/// A file that exists and can be read now (its contents are checked where it is used).
pub fn readable_file(s: &str) -> Result<PathBuf, String> {
    readable(s).map(|(path, _)| path)
}

/// A TLS file: readable, and a regular file (a link to one included), because it is read
/// again at every new connection, which a pipe or a FIFO cannot give twice and a device
/// (`/dev/zero`) cannot give at all.
pub fn tls_file(s: &str) -> Result<PathBuf, String> {
    match readable(s)? {
        (path, m) if m.is_file() => Ok(path),
        _ => Err(format!(
            "{} is not a regular file: TLS files are read again at every new connection",
            crate::log::escape_controls(s)
        )),
    }
}

/// The path of a readable file that is no directory, with what it is.
fn readable(s: &str) -> Result<(PathBuf, std::fs::Metadata), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    let path = PathBuf::from(s);
    let shown = crate::log::escape_controls(s);
    let file = crate::input_file::open(&path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    match file.metadata() {
        Ok(m) if m.is_dir() => Err(format!("cannot read {shown}: it is a directory")),
        Ok(m) => Ok((path, m)),
        Err(e) => Err(format!("cannot read {shown}: {e}")),
    }
}

/// `NAME` or `NAME:PASSWORD`, split at the first colon. Never refused here, where the value
/// would be quoted: the name is checked with the other connection settings.
pub fn user(s: &str) -> Result<User, String> {
    Ok(match s.split_once(':') {
        Some((name, password)) => User {
            name: name.to_string(),
            password: Some(Secret(password.to_string())),
        },
        None => User {
            name: s.to_string(),
            password: None,
        },
    })
}

/// A password, as it is.
pub fn secret(s: &str) -> Result<Secret, String> {
    Ok(Secret(s.to_string()))
}

fn endpoint_list(s: &str) -> Result<EndpointList, String> {
    endpoints(s).map(EndpointList)
}

/// A comma-separated list of endpoints, normalized, duplicates removed, at most
/// [`MAX_ENDPOINTS`].
pub fn endpoints(s: &str) -> Result<Vec<String>, String> {
    let list = s.split(',').map(endpoint).collect::<Result<Vec<_>, _>>()?;
    distinct(list)
}

/// `list` without duplicates, at most [`MAX_ENDPOINTS`]. A bare `host:port` is the same
/// endpoint as `http://host:port` or `https://host:port`, whichever it turns out to be (or the
/// mix is refused): the one with a scheme is kept.
pub fn distinct(list: Vec<String>) -> Result<Vec<String>, String> {
    let address = |e: &str| e.split_once("://").map_or(e, |(_, a)| a).to_string();
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for e in list {
        let same = out.iter().position(|o| {
            address(o) == address(&e) && (!o.contains("://") || !e.contains("://") || *o == e)
        });
        match same {
            None => out.push(e),
            Some(i) if !out[i].contains("://") => out[i] = e,
            Some(_) => {}
        }
    }
    if out.len() > MAX_ENDPOINTS {
        return Err(format!(
            "{} distinct endpoints: at most {MAX_ENDPOINTS} are supported",
            out.len()
        ));
    }
    Ok(out)
}

/// One endpoint: `[http://|https://]host[:port]`, host a name, an IPv4 address or an IPv6
/// address in brackets, port 1 to 65535 (default [`DEFAULT_PORT`]). Normalized to
/// `scheme://host:port`, or `host:port` without a scheme: that one is chosen with the TLS
/// options ([`crate::config`]).
pub fn endpoint(s: &str) -> Result<String, String> {
    let e = s.trim();
    let bad = |why: &str| format!("bad endpoint '{}': {why}", crate::log::escape_controls(e));
    if e.is_empty() {
        return Err("empty entry in the endpoint list".into());
    }
    let (scheme, rest) = match e.split_once("://") {
        None => ("", e),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => ("http://", rest),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => ("https://", rest),
        Some(_) => return Err(bad("the scheme must be http:// or https:// (or none)")),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#', '@']) {
        return Err(bad("give host:port only, without a path, query or user"));
    }
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (addr, tail) = inner
            .split_once(']')
            .ok_or_else(|| bad("unclosed '[' around an IPv6 address"))?;
        let addr: Ipv6Addr = addr
            .parse()
            .map_err(|_| bad("not an IPv6 address between [ and ]"))?;
        let port = match tail {
            "" => None,
            t => Some(
                t.strip_prefix(':')
                    .ok_or_else(|| bad("expected :PORT after ]"))?,
            ),
        };
        (format!("[{addr}]"), port)
    } else {
        let (host, port) = match rest.split_once(':') {
            Some((_, p)) if p.contains(':') => {
                return Err(bad("an IPv6 address must be in brackets: [::1]:2379"))
            }
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return Err(bad(
                "the host may hold letters, digits, '.', '-' and '_' only",
            ));
        }
        if host.chars().all(|c| c.is_ascii_digit() || c == '.') && host.parse::<Ipv4Addr>().is_err()
        {
            return Err(bad("not an IPv4 address"));
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(p @ 1..) => p,
            _ => return Err(bad("the port must be a number from 1 to 65535")),
        },
    };
    Ok(format!("{scheme}{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LEADER_OPTIONS;

    #[test]
    fn status_addr_is_an_ip_and_a_port() {
        for (given, want) in [
            ("127.0.0.1:9110", "127.0.0.1:9110"),
            (" 0.0.0.0:1 ", "0.0.0.0:1"),
            ("[::1]:9110", "[::1]:9110"),
            ("[0:0::1]:65535", "[::1]:65535"),
        ] {
            assert_eq!(status_addr(given).unwrap().to_string(), want, "{given}");
        }
        for bad in [
            "",
            "9110",
            ":9110",
            "localhost:9110",
            "127.0.0.1",
            "127.0.0.1:0",
            "127.0.0.1:65536",
            "127.0.0.1:x",
            "::1:9110",
            "[::1]",
            "[nope]:1",
            "1.2.3:80",
            "127.0.0.1:9110\n1",
        ] {
            assert!(status_addr(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn endpoints_are_checked_and_normalized() {
        for (given, want) in [
            ("127.0.0.1:2379", "127.0.0.1:2379"),
            ("HTTP://Etcd-1.example:1/", "http://etcd-1.example:1"),
            ("etcd", "etcd:2379"),
            (" [::1]:2380 ", "[::1]:2380"),
            ("http://[0:0::1]", "http://[::1]:2379"),
            ("https://Etcd-1:1", "https://etcd-1:1"),
        ] {
            assert_eq!(endpoint(given).as_deref(), Ok(want), "{given}");
        }
        for bad in [
            "",
            "127.0.0.1:99999",
            "127.0.0.1:0",
            "127.0.0.1:",
            ":2379",
            "ftp://host:2379",
            "::1",
            "[::1",
            "[nope]:1",
            "host:2379/path",
            "user@host:2379",
            "999.1.1.1:2379",
            "ho st:1",
        ] {
            let e = endpoint(bad).unwrap_err();
            assert!(bad.is_empty() || e.contains(bad.trim()), "{bad}: {e}");
        }
        assert_eq!(endpoints("a:1,http://a:1, a:1").unwrap(), ["http://a:1"]);
        assert_eq!(endpoints("https://a:1,a:1").unwrap(), ["https://a:1"]);
        // Both kept, to be refused as a mix of schemes.
        assert_eq!(
            endpoints("http://a:1,https://a:1").unwrap(),
            ["http://a:1", "https://a:1"]
        );
        assert!(endpoints("a:1,,b:1").is_err());
    }

    #[test]
    fn values_are_bounded() {
        assert_eq!(ttl("9000000000"), Ok(9_000_000_000));
        for bad in [
            "0",
            "-1",
            "9000000001",
            "18446744073709551616",
            "ten",
            "1.5",
        ] {
            assert!(ttl(bad).is_err(), "{bad}");
        }
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(duration("9000000000"), Ok(MAX_DURATION));
        for bad in [
            "9000000001",
            "18446744073709551615",
            "500000000000years",
            "soon",
        ] {
            assert!(duration(bad).is_err(), "{bad}");
        }
        assert!(wait_timeout("0s").is_err());
        assert!(run_id_ttl("999ms").is_err());
        assert!(restart_limit("0").is_err());
        assert_eq!(restart_limit("1"), Ok(1));
    }

    #[test]
    fn signals_and_words_parse_in_the_usual_spellings() {
        assert_eq!(signal("TERM").unwrap(), Signal::SIGTERM);
        assert_eq!(signal("sigint").unwrap(), Signal::SIGINT);
        assert_eq!(signal("9").unwrap(), Signal::SIGKILL);
        assert_eq!(value_enum::<OnExit>("RESTART"), Ok(OnExit::Restart));
        assert!(value_enum::<LogFormat>("xml")
            .unwrap_err()
            .contains("text, json"));
        assert_eq!(boolean("Yes"), Ok(true));
        assert!(boolean("maybe").is_err());
    }

    #[test]
    fn text_refuses_blanks_and_control_characters() {
        assert_eq!(text("web-1:42").as_deref(), Ok("web-1:42"));
        for bad in ["", "  ", "a\nb", "a\u{1b}[31m", "a\u{85}"] {
            assert!(text(bad).is_err(), "{bad:?}");
        }
        assert!(text(&"a".repeat(MAX_TEXT)).is_ok());
        let e = text(&"a".repeat(MAX_TEXT + 1)).unwrap_err();
        assert!(e.contains("at most 4096 bytes"), "{e}");
    }

    #[test]
    fn help_names_each_variable_and_default() {
        let help = command().render_long_help().to_string();
        for o in OPTIONS.iter().filter(|o| ***o != PASSWORD) {
            assert!(help.contains(&format!("[env: {}]", o.env)), "{}", o.env);
            if let Some(key) = o.key {
                assert!(help.contains(&format!("[config: {key}]")), "{key}");
            }
        }
        // The password has a variable and no flag.
        assert!(help.contains(PASSWORD.env), "{help}");
        assert!(!help.contains("[config: password]"), "{help}");
        assert!(help.contains("[default: 10]"), "{help}");
        assert!(help.contains("1m"), "{help}");
        let help = leader_command().render_long_help().to_string();
        let flags = LEADER_OPTIONS.iter().filter(|o| ***o != PASSWORD);
        for o in flags.chain([&&CONFIG]) {
            assert!(help.contains(&format!("[env: {}]", o.env)), "{help}");
        }
    }

    #[test]
    fn the_log_format_is_found_before_validation() {
        let hint = |args: &[&str], vars: &[(&str, &str)]| {
            let args: Vec<OsString> = args.iter().map(OsString::from).collect();
            let env = Env::from_pairs(vars.iter().map(|(k, v)| (k.into(), v.into())));
            log_format_hint(&args, &env)
        };
        let json = LogFormat::Json;
        let text = LogFormat::Text;
        assert_eq!(
            hint(&["l", "--ttl", "0", "--log-format", "json", "--", "x"], &[]),
            json
        );
        assert_eq!(hint(&["l", "--log-format=JSON", "x"], &[]), json);
        assert_eq!(hint(&["l", "--log-format", "xml", "x"], &[]), text);
        assert_eq!(hint(&["l", "x", "--log-format", "json"], &[]), text);
        assert_eq!(hint(&["l", "--", "x", "--log-format", "json"], &[]), text);
        // A value that looks like the flag is the value of the flag before it.
        assert_eq!(hint(&["l", "--id", "--log-format", "x"], &[]), text);
        let env = [("LEADERRUN_LOG_FORMAT", "Json")];
        assert_eq!(hint(&["l", "x"], &env), json);
        assert_eq!(hint(&["l", "--log-format", "text", "x"], &env), text);
    }
}
