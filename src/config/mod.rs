//! The validated configuration and how it is layered.
//!
//! Every setting comes from the first layer that sets it, highest first:
//!
//! 1. a flag on the command line ([`crate::config::flags`]);
//! 2. the environment, `LEADERRUN_<OPTION>` ([`Env`]);
//! 3. the configuration file, `--config FILE` or LEADERRUN_CONFIG ([`ConfigFile`]);
//! 4. etcdctl's variables, for the connection settings ([`etcdctl`]);
//! 5. systemd's credential `etcd-password`, for the password ([`credentials`]);
//! 6. the default, written in [`OPTIONS`] as a user would write it and read by the same parser.
//!
//! Each value is checked by its parser as it is read, whatever its layer, so an error names the
//! flag, the variable or the file's line it came from. [`Config::load`] then checks how the values fit together.
//! Nothing has been started and etcd has not been contacted when it returns.

pub mod credentials;
pub mod etcdctl;
pub mod file;
pub mod flags;

use crate::config::file::ConfigFile;
pub use crate::election::run_records::RunId;
use crate::error::Error;
use crate::etcd::{Connection, Credentials, TlsFiles};
use crate::lease::timing::Timing;
pub use crate::log::LogFormat;
use crate::process::health::{HealthCheck, HttpTarget, Probe};
use crate::process::hook::Hooks;
use clap::ValueEnum;
use flags::Flags;
use nix::sys::signal::Signal;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The longest duration or TTL leaderrun accepts: etcd's maximum lease TTL (`MaxLeaseTTL`,
/// about 285 years). One bound for every duration, so that no deadline computed from one can
/// overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(9_000_000_000);

/// At most this many distinct endpoints: etcd-client's balanced channel buffers 64 endpoint
/// changes, and connecting with more blocks for ever.
pub const MAX_ENDPOINTS: usize = 64;

/// The port of an endpoint given without one: etcd's client port.
pub const DEFAULT_PORT: u16 = 2379;

/// `--no-wait` without `--wait-timeout` gives up after this long without leading (an etcd
/// that cannot be reached included), so that a cron job always ends.
pub const NO_WAIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Set by a leaderrun for its child (with LEADERRUN_ELECTION, LEADERRUN_ID, LEADERRUN_REVISION,
/// LEADERRUN_LEASE). When it is set, the election and id variables are the parent's: see
/// [`Env`].
pub const PARENT_KEY_VAR: &str = "LEADERRUN_KEY";

/// A command line that takes options: `leaderrun`, `leaderrun leader`, `leaderrun resign`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    Main,
    Leader,
    Resign,
    List,
    History,
}

/// How an option is given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `--flag VALUE`.
    Value,
    /// `--flag WORD`, one of an enum's words in any case (the help lists them).
    Words,
    /// `--flag VALUE`, repeatable: the values are read as one comma-separated list.
    List,
    /// `--flag FILE`, any path but an empty one (the configuration file's own name).
    Path,
    /// `--flag` alone: true when given.
    Switch,
    /// No flag: a variable only (LEADERRUN_PASSWORD: a secret is never an argument).
    EnvOnly,
}

/// One option, as the table in this module defines it: everything its flag, its variable,
/// its configuration-file key, its default, its help and the commands that take it are made
/// from.
#[derive(Debug)]
pub struct Opt {
    /// The name of its [`Settings`] field, and of its argument in the clap definitions.
    pub id: &'static str,
    /// The flag, without `--` (LEADERRUN_PASSWORD, which has no flag: the setting's name).
    pub long: &'static str,
    /// What the help calls its value (`--ttl <SECONDS>`); empty for a switch.
    pub value_name: &'static str,
    pub kind: Kind,
    /// Its environment variable: `LEADERRUN_` and the flag in upper case, `-` as `_`, but for
    /// `--key`: LEADERRUN_KEY is the leader key a leaderrun gives its child. None: a flag of
    /// a subcommand only (`leader --format`), which is neither a variable nor a key.
    pub env: Option<&'static str>,
    /// Its key in the configuration file: the flag with `_` for `-`. None: not in the file (the
    /// file's own name, and the password: secrets are given by file only).
    pub key: Option<&'static str>,
    /// The default, as a user would write it (and read by the flag's parser). None: no default,
    /// or one computed from other settings (the help says how).
    pub default: Option<&'static str>,
    /// The commands that take it, each with its help there when it differs from `doc`.
    pub takes: &'static [(Cmd, Option<&'static str>)],
    /// Its help, a line each, as written above its entry in the table.
    pub doc: &'static [&'static str],
}

/// Options are told apart by their name (an `Opt` is only ever one of the table's constants).
impl PartialEq for Opt {
    fn eq(&self, other: &Opt) -> bool {
        self.id == other.id
    }
}

impl Eq for Opt {}

impl Opt {
    /// Whether `cmd` takes this option (as a flag, or, for the password, a variable).
    pub fn taken_by(&self, cmd: Cmd) -> bool {
        self.takes.iter().any(|(c, _)| *c == cmd)
    }

    /// Its help on `cmd`'s command line, a line each.
    pub fn help(&self, cmd: Cmd) -> Vec<&'static str> {
        match self.takes.iter().find(|(c, _)| *c == cmd) {
            Some((_, Some(own))) => vec![own],
            _ => self.doc.to_vec(),
        }
    }

    /// Whether it is a flag (every option but the password).
    pub fn is_flag(&self) -> bool {
        self.kind != Kind::EnvOnly
    }

    /// Whether its flag takes a value.
    pub fn takes_value(&self) -> bool {
        !matches!(self.kind, Kind::Switch | Kind::EnvOnly)
    }
}

/// The options `cmd` reads through the layers (flag, variable, file, default): those it takes,
/// but the file's own name, which is read before them to find the file.
pub fn layered_options(cmd: Cmd) -> Vec<&'static Opt> {
    OPTIONS
        .iter()
        .copied()
        .filter(|o| o.taken_by(cmd) && **o != CONFIG)
        .collect()
}

macro_rules! some {
    () => {
        None
    };
    ($help:literal) => {
        Some($help)
    };
}

/// The clap value parser of a flag of this kind.
macro_rules! clap_parser {
    (Words, $ty:ty, $parse:expr) => {
        clap::builder::ValueParser::new(clap::builder::EnumValueParser::<$ty>::new())
    };
    (Path, $ty:ty, $parse:expr) => {
        clap::value_parser!(PathBuf).into()
    };
    (Switch, $ty:ty, $parse:expr) => {
        clap::builder::ValueParser::bool()
    };
    ($kind:ident, $ty:ty, $parse:expr) => {
        clap::builder::ValueParser::new($parse)
    };
}

/// The flags layer's value of one option, from clap's matches (None where this command has no
/// such flag).
macro_rules! flag_value {
    (EnvOnly, $ty:ty, $opt:expr, $parse:expr, $m:expr) => {
        None
    };
    (Switch, $ty:ty, $opt:expr, $parse:expr, $m:expr) => {
        // Absent is "not set here": the environment may still set it.
        $m.try_get_one::<bool>($opt.id)
            .ok()
            .flatten()
            .filter(|given| **given)
            .map(|_| flag(&$opt, true))
    };
    (List, $ty:ty, $opt:expr, $parse:expr, $m:expr) => {
        match $m.try_get_raw($opt.id).ok().flatten() {
            // Each value was checked by clap; together they are one list, checked again.
            Some(raw) => {
                let all: Vec<String> = raw.map(|v| v.to_string_lossy().into_owned()).collect();
                let parse: Parser<$ty> = $parse;
                let list = parse(&all.join(","))
                    .map_err(|e| Error::Usage(format!("--{}: {e}", $opt.long)))?;
                Some(flag(&$opt, list))
            }
            None => None,
        }
    };
    ($kind:ident, $ty:ty, $opt:expr, $parse:expr, $m:expr) => {
        $m.try_get_one::<$ty>($opt.id)
            .ok()
            .flatten()
            .map(|v| flag(&$opt, v.clone()))
    };
}

/// The options table: each option defined once, with its help above it. Everything else is
/// made from it: the [`Opt`] constant named first, the [`Settings`] field named second (its
/// type, and the parser that reads it from a flag, a variable, a file or the default), the
/// clap arguments of the commands it lists, the help's notes, and the checks of docs/usage.md
/// and of the example configuration file.
macro_rules! options {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident $field:ident: $ty:ty {
            kind: $kind:ident,
            flag: $long:literal $value:literal,
            env: $env:expr,
            key: $key:expr,
            default: $default:expr,
            parse: $parse:expr,
            takes: [$($cmd:ident $(($help:literal))?),*],
        }
    )*) => {
        $(
            $(#[doc = $doc])*
            pub const $name: Opt = Opt {
                id: stringify!($field),
                long: $long,
                value_name: $value,
                kind: Kind::$kind,
                env: $env,
                key: $key,
                default: $default,
                takes: &[$((Cmd::$cmd, some!($($help)?))),*],
                doc: &[$($doc),*],
            };
        )*

        /// Every option, in the order of the help.
        pub const OPTIONS: &[&Opt] = &[$(&$name),*];

        /// One layer of settings, each set or not.
        #[derive(Debug, Default, Clone, PartialEq)]
        pub struct Settings {
            $(pub $field: Option<Sourced<$ty>>,)*
        }

        impl Settings {
            /// `self` where it is set, `lower` elsewhere.
            pub fn over(self, lower: Settings) -> Settings {
                Settings {
                    $($field: self.$field.or(lower.$field),)*
                }
            }

            /// Where each setting this layer sets came from.
            pub fn sources(&self) -> Vec<&Source> {
                [$(self.$field.as_ref().map(|s| &s.from)),*].into_iter().flatten().collect()
            }

            /// Whether this layer sets `opt`.
            pub fn is_set(&self, opt: &Opt) -> bool {
                $(if *opt == $name {
                    return self.$field.is_some();
                })*
                false
            }

            /// The flags layer: the `wanted` settings given as flags.
            pub fn from_flags(m: &clap::ArgMatches, wanted: &[&Opt]) -> Result<Settings, Error> {
                Ok(Settings {
                    $($field: if wanted.contains(&&$name) {
                        flag_value!($kind, $ty, $name, $parse, m)
                    } else {
                        None
                    },)*
                })
            }

            /// The environment or the file layer: the `wanted` settings only.
            pub fn read(layer: &impl Reader, wanted: &[&Opt]) -> Result<Settings, Error> {
                Ok(Settings {
                    $($field: if wanted.contains(&&$name) {
                        layer.read(&$name, $parse)?
                    } else {
                        None
                    },)*
                })
            }

            /// The defaults layer, for `wanted` settings.
            pub fn defaults(wanted: &[&Opt]) -> Result<Settings, Error> {
                Ok(Settings {
                    $($field: match $name.default {
                        Some(d) if wanted.contains(&&$name) => Some(parse_default(&$name, d, $parse)?),
                        _ => None,
                    },)*
                })
            }
        }

        /// The clap value parser of `opt`'s flag.
        pub fn value_parser(opt: &Opt) -> clap::builder::ValueParser {
            $(if *opt == $name {
                return clap_parser!($kind, $ty, $parse);
            })*
            unreachable!("every option is in the table")
        }
    };
}

fn flag<T>(opt: &'static Opt, value: T) -> Sourced<T> {
    Sourced {
        value,
        from: Source::Flag(opt),
    }
}

options! {
    /// Read settings from this TOML file: each option under its name with _ for - (shown as
    /// [config: ...]), and command = ["PROGRAM", "ARG", ...]. Flags and variables win over it.
    CONFIG config: PathBuf {
        kind: Path,
        flag: "config" "FILE",
        env: Some("LEADERRUN_CONFIG"),
        key: None,
        default: None,
        parse: flags::path,
        takes: [Main, Leader, Resign, List, History],
    }

    /// etcd endpoints, comma-separated: host:port, http://host:port, https://host:port,
    /// [ipv6]:port; the port defaults to 2379. A bare host:port is https when a TLS option
    /// (--cacert, --cert, --key) is given, else http. Duplicates count once; at most 64.
    ENDPOINTS endpoints: Vec<String> {
        kind: List,
        flag: "endpoints" "ENDPOINTS",
        env: Some("LEADERRUN_ENDPOINTS"),
        key: Some("endpoints"),
        default: Some("127.0.0.1:2379"),
        parse: flags::endpoints,
        takes: [Main, Leader, Resign, List, History],
    }

    /// CA bundle (PEM) that signs etcd's server certificates. Default with https: the
    /// system's roots.
    CACERT cacert: PathBuf {
        kind: Value,
        flag: "cacert" "FILE",
        env: Some("LEADERRUN_CACERT"),
        key: Some("cacert"),
        default: None,
        parse: flags::tls_file,
        takes: [Main, Leader, Resign, List, History],
    }

    /// Client certificate (PEM), for etcd's --client-cert-auth; needs --key.
    CERT cert: PathBuf {
        kind: Value,
        flag: "cert" "FILE",
        env: Some("LEADERRUN_CERT"),
        key: Some("cert"),
        default: None,
        parse: flags::tls_file,
        takes: [Main, Leader, Resign, List, History],
    }

    /// The client certificate's private key (PEM); needs --cert. Its variable is
    /// LEADERRUN_KEY_FILE: LEADERRUN_KEY is the leader key leaderrun gives its command.
    KEY key: PathBuf {
        kind: Value,
        flag: "key" "FILE",
        env: Some("LEADERRUN_KEY_FILE"),
        key: Some("key"),
        default: None,
        parse: flags::tls_file,
        takes: [Main, Leader, Resign, List, History],
    }

    /// etcd user (etcd's --auth). Its password: --password-file or LEADERRUN_PASSWORD.
    /// NAME:PASSWORD (etcdctl's form) works too, but puts the password where every user of
    /// the host can read it (ps): a warning says so.
    USER user: User {
        kind: Value,
        flag: "user" "NAME",
        env: Some("LEADERRUN_USER"),
        key: Some("user"),
        default: None,
        parse: flags::user,
        takes: [Main, Leader, Resign, List, History],
    }

    /// File holding --user's password (one trailing newline is ignored); read at start-up.
    PASSWORD_FILE password_file: PathBuf {
        kind: Value,
        flag: "password-file" "FILE",
        env: Some("LEADERRUN_PASSWORD_FILE"),
        key: Some("password_file"),
        default: None,
        parse: flags::readable_file,
        takes: [Main, Leader, Resign, List, History],
    }

    /// --user's password: a variable only, never a flag (argv is public) nor a key.
    PASSWORD password: Secret {
        kind: EnvOnly,
        flag: "password" "",
        env: Some("LEADERRUN_PASSWORD"),
        key: None,
        default: None,
        parse: flags::secret,
        takes: [Main, Leader, Resign, List, History],
    }

    /// Election name: the key prefix shared with `etcdctl elect NAME`. Default: the command's
    /// file name (`./my-server` gives `my-server`); required when COMMAND is a shell,
    /// interpreter or wrapper (sh, bash, python3, env, nohup, ...).
    ELECTION election: String {
        kind: Value,
        flag: "election" "NAME",
        env: Some("LEADERRUN_ELECTION"),
        key: Some("election"),
        default: None,
        parse: flags::election,
        takes: [
            Main,
            Leader("The election to ask about."),
            Resign("The election whose leader should step down."),
            List("The election whose candidates to list."),
            History("The election whose terms to list.")
        ],
    }

    /// The value this candidate proclaims (what `etcdctl elect -l` shows). Default: hostname:pid.
    ID id: String {
        kind: Value,
        flag: "id" "ID",
        env: Some("LEADERRUN_ID"),
        key: Some("id"),
        default: None,
        parse: flags::text,
        takes: [Main],
    }

    /// Give up (status 1) when no other candidate leads after this long: the leader's stop
    /// timeout and a handover must fit in it.
    TIMEOUT timeout: Duration {
        kind: Value,
        flag: "timeout" "DURATION",
        env: None,
        key: None,
        default: Some("30s"),
        parse: flags::resign_timeout,
        takes: [Resign],
    }

    /// Output: `text` (id=... key=... revision=... lease=...) or `json` (one object per line).
    FORMAT format: Format {
        kind: Words,
        flag: "format" "FORMAT",
        env: None,
        key: None,
        default: Some("text"),
        parse: flags::value_enum::<Format>,
        takes: [
            Leader,
            Resign("Output: `text` (the old and the new leader, a line each) or `json` (one object)."),
            List("Output: `text` (a table, a candidate per line) or `json` (one array)."),
            History("Output: `text` (a table, a term per line, newest first) or `json` (one array).")
        ],
    }

    /// Print every change of leader until interrupted, like `etcdctl elect -l`.
    WATCH watch: bool {
        kind: Switch,
        flag: "watch" "",
        env: None,
        key: None,
        default: Some("false"),
        parse: flags::boolean,
        takes: [Leader],
    }

    /// At most N children across all hosts at once (1 to 1000), like `consul lock -n`: the N
    /// first candidates by create revision hold. Every candidate of one election must use the
    /// same N (a mismatch is refused). Not with --run-id.
    HOLDERS holders: u32 {
        kind: Value,
        flag: "holders" "N",
        env: Some("LEADERRUN_HOLDERS"),
        key: Some("holders"),
        default: Some("1"),
        parse: flags::holders,
        takes: [
            Main,
            Leader("List the first N keys under NAME/, a line each: the holders of a --holders N election.")
        ],
    }

    /// This candidate's priority, 0 to 1000 (higher is preferred): when leadership falls free
    /// the best live candidate leads, oldest first among equals (a candidate without it, or an
    /// `etcdctl elect`, counts as 0). A waiting candidate moves behind a better one as soon as
    /// it joins. Published under leaderrun.candidates/NAME/ when given.
    PRIORITY priority: u32 {
        kind: Value,
        flag: "priority" "N",
        env: Some("LEADERRUN_PRIORITY"),
        key: Some("priority"),
        default: Some("0"),
        parse: flags::priority,
        takes: [Main],
    }

    /// Fail-back: `never`, or a DURATION after which the leader steps down (stops its child,
    /// resigns) for a candidate of higher priority that has waited, live and healthy, that long.
    /// Never while etcd cannot confirm that candidate; leadership cannot bounce faster than
    /// once per DURATION.
    PREEMPT preempt: Option<Duration> {
        kind: Value,
        flag: "preempt" "never|DURATION",
        env: Some("LEADERRUN_PREEMPT"),
        key: Some("preempt"),
        default: Some("never"),
        parse: flags::preempt,
        takes: [Main],
    }

    /// Switchover: hand leadership to this candidate (its --id, its key NAME/<lease hex>, or its
    /// lease in hex), not to the next in line. It must be waiting in the election.
    TO to: String {
        kind: Value,
        flag: "to" "ID",
        env: None,
        key: None,
        default: None,
        parse: flags::text,
        takes: [Resign],
    }

    /// The newest terms to list (1 to 100).
    LIMIT limit: u32 {
        kind: Value,
        flag: "limit" "N",
        env: None,
        key: None,
        default: Some("20"),
        parse: flags::history_limit,
        takes: [History],
    }

    /// Lease TTL in whole seconds (10 or 10s; 1 to 9000000000): how long a silent leader keeps
    /// leadership.
    /// Failover after a crash or a cut link takes about this long; a graceful stop hands over
    /// at once.
    TTL ttl: u64 {
        kind: Value,
        flag: "ttl" "SECONDS",
        env: Some("LEADERRUN_TTL"),
        key: Some("ttl"),
        default: Some("10"),
        parse: flags::ttl,
        takes: [Main],
    }

    /// Signal sent to the child's process group to stop it (TERM, INT, HUP, QUIT, USR1, ...).
    STOP_SIGNAL stop_signal: Signal {
        kind: Value,
        flag: "stop-signal" "SIGNAL",
        env: Some("LEADERRUN_STOP_SIGNAL"),
        key: Some("stop_signal"),
        default: Some("TERM"),
        parse: flags::signal,
        takes: [Main],
    }

    /// Time between the stop signal and SIGKILL (500ms, 3s, ...). Default 3s, shrunk to fit a
    /// small --ttl; an explicit value that does not fit the TTL is refused.
    STOP_TIMEOUT stop_timeout: Duration {
        kind: Value,
        flag: "stop-timeout" "DURATION",
        env: Some("LEADERRUN_STOP_TIMEOUT"),
        key: Some("stop_timeout"),
        default: None,
        parse: flags::duration,
        takes: [Main],
    }

    /// What to do when the child exits on its own while leading.
    ON_EXIT on_exit: OnExit {
        kind: Words,
        flag: "on-exit" "ACTION",
        env: Some("LEADERRUN_ON_EXIT"),
        key: Some("on_exit"),
        default: Some("exit"),
        parse: flags::value_enum::<OnExit>,
        takes: [Main],
    }

    /// With --on-exit restart: after this many exits within --restart-window, stop restarting,
    /// resign and campaign again, so that a standby gets its chance (at least 1).
    RESTART_LIMIT restart_limit: u32 {
        kind: Value,
        flag: "restart-limit" "COUNT",
        env: Some("LEADERRUN_RESTART_LIMIT"),
        key: Some("restart_limit"),
        default: Some("5"),
        parse: flags::restart_limit,
        takes: [Main],
    }

    /// With --on-exit restart: the window in which --restart-limit exits count.
    RESTART_WINDOW restart_window: Duration {
        kind: Value,
        flag: "restart-window" "DURATION",
        env: Some("LEADERRUN_RESTART_WINDOW"),
        key: Some("restart_window"),
        default: Some("60s"),
        parse: flags::duration,
        takes: [Main],
    }

    /// When another candidate leads, exit at once with status 75 instead of waiting. Also
    /// gives up with 75 when not leading after --wait-timeout (default below), for instance
    /// while etcd cannot be reached, so that a cron job always ends.
    NO_WAIT no_wait: bool {
        kind: Switch,
        flag: "no-wait" "",
        env: Some("LEADERRUN_NO_WAIT"),
        key: Some("no_wait"),
        default: Some("false"),
        parse: flags::boolean,
        takes: [Main],
    }

    /// Give up with status 75 when not leading after this long (counted from start-up).
    WAIT_TIMEOUT wait_timeout: Duration {
        kind: Value,
        flag: "wait-timeout" "DURATION",
        env: Some("LEADERRUN_WAIT_TIMEOUT"),
        key: Some("wait_timeout"),
        default: None,
        parse: flags::wait_timeout,
        takes: [Main],
    }

    /// Run at most once per ID across all hosts: the winner records the ID in etcd before it
    /// starts the command; a host that finds it recorded exits 0 without running. Not with
    /// --on-exit restart or recampaign, which start the command again.
    RUN_ID run_id: String {
        kind: Value,
        flag: "run-id" "ID",
        env: Some("LEADERRUN_RUN_ID"),
        key: Some("run_id"),
        default: None,
        parse: flags::text,
        takes: [Main],
    }

    /// How long a --run-id record is kept in etcd (1s to 9000000000s).
    RUN_ID_TTL run_id_ttl: Duration {
        kind: Value,
        flag: "run-id-ttl" "DURATION",
        env: Some("LEADERRUN_RUN_ID_TTL"),
        key: Some("run_id_ttl"),
        default: Some("24h"),
        parse: flags::run_id_ttl,
        takes: [Main],
    }

    /// Leadership follows the child's health: while leading, run this shell command (sh -c,
    /// with the child's environment) every --health-interval; exit status 0 is healthy. After
    /// --health-retries failures in a row, the child is stopped, leadership handed over, and
    /// this host stays out of the election for --health-holdoff.
    HEALTH_CMD health_cmd: String {
        kind: Value,
        flag: "health-cmd" "CMD",
        env: Some("LEADERRUN_HEALTH_CMD"),
        key: Some("health_cmd"),
        default: None,
        parse: flags::text,
        takes: [Main],
    }

    /// Like --health-cmd, with a GET of this http:// URL: 2xx and 3xx are healthy.
    HEALTH_HTTP health_http: HttpTarget {
        kind: Value,
        flag: "health-http" "URL",
        env: Some("LEADERRUN_HEALTH_HTTP"),
        key: Some("health_http"),
        default: None,
        parse: HttpTarget::parse,
        takes: [Main],
    }

    /// Time between health checks (the first comes one interval after the child starts).
    HEALTH_INTERVAL health_interval: Duration {
        kind: Value,
        flag: "health-interval" "DURATION",
        env: Some("LEADERRUN_HEALTH_INTERVAL"),
        key: Some("health_interval"),
        default: Some("10s"),
        parse: flags::positive_duration,
        takes: [Main],
    }

    /// A check that takes longer fails (a command is killed with its process group).
    HEALTH_TIMEOUT health_timeout: Duration {
        kind: Value,
        flag: "health-timeout" "DURATION",
        env: Some("LEADERRUN_HEALTH_TIMEOUT"),
        key: Some("health_timeout"),
        default: Some("5s"),
        parse: flags::positive_duration,
        takes: [Main],
    }

    /// Failures in a row that make the leader unhealthy (at least 1).
    HEALTH_RETRIES health_retries: u32 {
        kind: Value,
        flag: "health-retries" "COUNT",
        env: Some("LEADERRUN_HEALTH_RETRIES"),
        key: Some("health_retries"),
        default: Some("3"),
        parse: flags::restart_limit,
        takes: [Main],
    }

    /// Failures within this time after the child starts do not count; a success ends it.
    HEALTH_START_PERIOD health_start_period: Duration {
        kind: Value,
        flag: "health-start-period" "DURATION",
        env: Some("LEADERRUN_HEALTH_START_PERIOD"),
        key: Some("health_start_period"),
        default: Some("0s"),
        parse: flags::duration,
        takes: [Main],
    }

    /// After handing over for ill health, stay out of the election this long, so a standby
    /// takes over; then campaign again.
    HEALTH_HOLDOFF health_holdoff: Duration {
        kind: Value,
        flag: "health-holdoff" "DURATION",
        env: Some("LEADERRUN_HEALTH_HOLDOFF"),
        key: Some("health_holdoff"),
        default: Some("10s"),
        parse: flags::duration,
        takes: [Main],
    }

    /// Run this shell command (sh -c, with the child's environment and LEADERRUN_ROLE=leader)
    /// after leadership is verified and before the child starts (with --hot-standby, before it
    /// is told it leads). The child starts only if it exits 0; a failure or a timeout vetoes
    /// the term: leadership is handed over as for ill health (--health-holdoff).
    ON_PROMOTE on_promote: String {
        kind: Value,
        flag: "on-promote" "CMD",
        env: Some("LEADERRUN_ON_PROMOTE"),
        key: Some("on_promote"),
        default: None,
        parse: flags::text,
        takes: [Main],
    }

    /// Run this shell command (sh -c, with the child's environment, LEADERRUN_ROLE=standby and
    /// LEADERRUN_REASON: exit, lost, shutdown, step-down, unhealthy, vetoed) after the child's
    /// group is gone (with --hot-standby, after it confirmed its demotion) and before
    /// leadership is released, at every end of a term, a lost lease included. It ends before
    /// the lease can expire: it counts in the stop budget.
    ON_DEMOTE on_demote: String {
        kind: Value,
        flag: "on-demote" "CMD",
        env: Some("LEADERRUN_ON_DEMOTE"),
        key: Some("on_demote"),
        default: None,
        parse: flags::text,
        takes: [Main],
    }

    /// How long each hook may run before its process group is killed. Default 2s, shrunk to
    /// half the stop budget of a small --ttl; with --on-demote it must fit the TTL together
    /// with --stop-timeout.
    HOOK_TIMEOUT hook_timeout: Duration {
        kind: Value,
        flag: "hook-timeout" "DURATION",
        env: Some("LEADERRUN_HOOK_TIMEOUT"),
        key: Some("hook_timeout"),
        default: None,
        parse: flags::duration,
        takes: [Main],
    }

    /// Start the child at once in every role and keep it running: it learns its role from
    /// LEADERRUN_ROLE, then from the file LEADERRUN_ROLE_FILE with --role-signal at each change,
    /// and confirms a demotion with the datagram ROLE=standby on LEADERRUN_NOTIFY_SOCKET; one
    /// that does not confirm within --stop-timeout is stopped and started again as a standby.
    HOT_STANDBY hot_standby: bool {
        kind: Switch,
        flag: "hot-standby" "",
        env: Some("LEADERRUN_HOT_STANDBY"),
        key: Some("hot_standby"),
        default: Some("false"),
        parse: flags::boolean,
        takes: [Main],
    }

    /// With --hot-standby: the signal that tells the child its role file changed (URG is
    /// ignored by default, so a child that has not set its handler yet is not killed).
    ROLE_SIGNAL role_signal: Signal {
        kind: Value,
        flag: "role-signal" "SIGNAL",
        env: Some("LEADERRUN_ROLE_SIGNAL"),
        key: Some("role_signal"),
        default: Some("URG"),
        parse: flags::signal,
        takes: [Main],
    }

    /// Serve the HTTP status endpoint on this HOST:PORT (an IP address, IPv6 in brackets:
    /// 127.0.0.1:9110, [::1]:9110, 0.0.0.0:9110; :9110 is every address, IPv6's and IPv4's):
    /// /leader, /standby, /health, /status, /metrics. Off by default.
    STATUS_ADDR status_addr: SocketAddr {
        kind: Value,
        flag: "status-addr" "HOST:PORT",
        env: Some("LEADERRUN_STATUS_ADDR"),
        key: Some("status_addr"),
        default: None,
        parse: flags::status_addr,
        takes: [Main],
    }

    /// Log format on stderr (the final line of a failure too).
    LOG_FORMAT log_format: LogFormat {
        kind: Words,
        flag: "log-format" "FORMAT",
        env: Some("LEADERRUN_LOG_FORMAT"),
        key: Some("log_format"),
        default: Some("text"),
        parse: flags::value_enum::<LogFormat>,
        takes: [Main],
    }

    /// Log level.
    LOG_LEVEL log_level: LogLevel {
        kind: Words,
        flag: "log-level" "LEVEL",
        env: Some("LEADERRUN_LOG_LEVEL"),
        key: Some("log_level"),
        default: Some("info"),
        parse: flags::value_enum::<LogLevel>,
        takes: [Main],
    }
}

/// The key of the command in the configuration file (on the command line: after `--`).
pub const COMMAND_KEY: &str = "command";

/// A parent leaderrun sets these for its child: in the child's environment they describe the
/// parent's election, not a setting for a nested leaderrun. The same holds for these keys (and
/// the command) in a configuration file the child finds through an inherited LEADERRUN_CONFIG.
/// The status address too: the parent listens there, so a nested leaderrun inheriting it could
/// only fail to bind.
pub const FROM_PARENT: &[&Opt] = &[&ELECTION, &ID, &STATUS_ADDR];

/// Values never shown in a message: a password, or a user given as `NAME:PASSWORD`.
const SECRETS: &[&Opt] = &[&USER, &PASSWORD];

/// Where a value came from, as error messages name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag(&'static Opt),
    Env(&'static Opt),
    /// A key of the configuration file, at this line.
    File {
        opt: &'static Opt,
        path: Arc<Path>,
        line: usize,
    },
    /// etcdctl's variable ([`etcdctl`]).
    Etcdctl(&'static Opt),
    /// systemd's credential ([`credentials`]).
    Credential(&'static Opt),
    Default(&'static Opt),
}

impl Source {
    /// The layer: 0 for a flag, then the environment, the file, etcdctl's variables, systemd's
    /// credential and the default.
    fn layer(&self) -> u8 {
        match self {
            Source::Flag(_) => 0,
            Source::Env(_) => 1,
            Source::File { .. } => 2,
            Source::Etcdctl(_) => 3,
            Source::Credential(_) => 4,
            Source::Default(_) => 5,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(o) => write!(f, "--{}", o.long),
            Source::Env(o) => f.write_str(o.env.unwrap_or(o.long)),
            Source::File { opt, path, line } => write!(
                f,
                "{} ({}:{line})",
                opt.key.unwrap_or(opt.long),
                path.display()
            ),
            Source::Etcdctl(o) => f.write_str(etcdctl::var(o).unwrap_or(o.long)),
            Source::Credential(_) => write!(
                f,
                "the credential {} (${})",
                credentials::PASSWORD_CREDENTIAL,
                credentials::DIRECTORY_VAR
            ),
            Source::Default(o) => write!(f, "--{} (default)", o.long),
        }
    }
}

/// A layer that reads settings by their options: the environment, the configuration file.
pub trait Reader {
    /// `opt`'s value in this layer, parsed; an error names where it came from.
    fn read<T>(&self, opt: &'static Opt, parse: Parser<T>) -> Result<Option<Sourced<T>>, Error>;
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced<T> {
    pub value: T,
    pub from: Source,
}

/// A value parser: the same one for a flag, its variable and its default.
pub type Parser<T> = fn(&str) -> Result<T, String>;

/// One layer: given the settings no higher layer has set, it reads those (only those, so that a
/// bad value a flag overrides is never looked at).
pub type Layer<'a> = Box<dyn FnOnce(&[&'static Opt]) -> Result<Settings, Error> + 'a>;

/// The `wanted` settings from `layers`, highest first: each from the first layer that sets it.
pub fn layered(wanted: &[&'static Opt], layers: Vec<Layer<'_>>) -> Result<Settings, Error> {
    let mut merged = Settings::default();
    for layer in layers {
        let missing: Vec<&'static Opt> = wanted
            .iter()
            .copied()
            .filter(|o| !merged.is_set(o))
            .collect();
        merged = merged.over(layer(&missing)?);
    }
    Ok(merged)
}

fn parse_default<T>(opt: &'static Opt, text: &str, parse: Parser<T>) -> Result<Sourced<T>, Error> {
    parse(text)
        .map(|value| Sourced {
            value,
            from: Source::Default(opt),
        })
        .map_err(|e| Error::Usage(format!("default of --{} ({text}): {e}", opt.long)))
}

/// The environment, as read for settings.
///
/// An empty variable counts as unset (`Environment=LEADERRUN_ID=` in a unit clears it). When
/// LEADERRUN_KEY is set, this process is the child of a leaderrun: LEADERRUN_ELECTION and
/// LEADERRUN_ID describe the parent's election and are not read, so a nested leaderrun does not
/// join its parent's election. Every other variable is inherited on purpose.
///
/// The configuration file it names (or `--config` names) is read once, when first asked for
/// ([`ConfigFile::find`]): the log format is looked up in it before the flags are parsed, the
/// settings after.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<OsString, OsString>,
    /// The configuration file read, by its path and what named it.
    pub(crate) file: std::cell::RefCell<Option<file::Read>>,
}

impl Env {
    /// The process's environment.
    pub fn from_process() -> Env {
        Env::from_pairs(std::env::vars_os())
    }

    pub fn from_pairs(pairs: impl IntoIterator<Item = (OsString, OsString)>) -> Env {
        Env {
            vars: pairs.into_iter().collect(),
            file: Default::default(),
        }
    }

    /// This process was started by a leaderrun for its command.
    pub fn under_a_parent(&self) -> bool {
        self.var(PARENT_KEY_VAR).is_some()
    }

    /// A variable, when set and not empty.
    pub(crate) fn var(&self, name: &str) -> Option<&OsStr> {
        self.vars
            .get(OsStr::new(name))
            .map(OsString::as_os_str)
            .filter(|v| !v.is_empty())
    }

    /// The raw value of `opt`'s variable, when it is a setting here.
    pub fn raw(&self, opt: &Opt) -> Option<&OsStr> {
        if FROM_PARENT.contains(&opt) && self.under_a_parent() {
            return None;
        }
        self.var(opt.env?)
    }
}

impl Reader for Env {
    /// `opt`'s variable, parsed; an error names the variable and its value (a secret's value is
    /// not shown).
    fn read<T>(&self, opt: &'static Opt, parse: Parser<T>) -> Result<Option<Sourced<T>>, Error> {
        let (Some(raw), Some(name)) = (self.raw(opt), opt.env) else {
            return Ok(None);
        };
        let shown = if SECRETS.contains(&opt) {
            "(not shown)".to_string()
        } else {
            crate::log::shown_value(&raw.to_string_lossy())
        };
        let text = raw
            .to_str()
            .ok_or_else(|| Error::Usage(format!("{name}={shown}: not valid UTF-8")))?;
        parse(text)
            .map(|value| {
                Some(Sourced {
                    value,
                    from: Source::Env(opt),
                })
            })
            .map_err(|e| Error::Usage(format!("{name}={shown}: {e}")))
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

/// How `leaderrun leader` and `resign` print what they found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    /// leaderrun's own detail
    Debug,
    /// the libraries' detail too (the etcd client, gRPC, HTTP/2)
    Trace,
}

impl From<LogLevel> for tracing::Level {
    fn from(l: LogLevel) -> tracing::Level {
        match l {
            LogLevel::Error => tracing::Level::ERROR,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Trace => tracing::Level::TRACE,
        }
    }
}

/// `--user NAME`, or etcdctl's `NAME:PASSWORD` (split at the first colon).
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub password: Option<Secret>,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("password", &self.password)
            .finish()
    }
}

/// A password: never shown, not even by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
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
    /// The endpoints (normalized, one scheme, without duplicates, at most [`MAX_ENDPOINTS`]),
    /// the TLS files (checked readable) and the credentials (the password read).
    pub connection: Connection,
    pub election: String,
    pub id: String,
    /// `--holders N`: at most N children across all hosts (1: the server's own election).
    pub holders: u32,
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
    /// `--health-cmd` or `--health-http`, and how often: leadership follows the child's health.
    pub health: Option<HealthCheck>,
    /// --status-addr: where the HTTP status endpoint listens; None: off.
    pub status_addr: Option<SocketAddr>,
    /// --on-promote, --on-demote, --hook-timeout.
    pub hooks: Hooks,
    /// --hot-standby, with its --role-signal.
    pub hot_standby: Option<Signal>,
    /// `--priority`: higher leads first when leadership falls free.
    pub priority: u32,
    /// `--preempt`: step down for a better candidate that waited this long (None: never).
    pub preempt: Option<Duration>,
    /// How long to stay out after a handover for ill health or a vetoed term.
    pub holdoff: Duration,
    /// The command, resolved to a path that exists and is executable.
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub log_format: LogFormat,
    pub log_level: tracing::Level,
    /// Said once logging is set up (a password on the command line, ...).
    pub warnings: Vec<String>,
    /// Said at INFO once logging is set up (etcdctl's variables used, ...).
    pub notes: Vec<String>,
}

/// A setting every layer stack provides (it has a default): a missing one is a bug in
/// [`OPTIONS`], reported rather than panicking.
fn required<T>(v: Option<Sourced<T>>, opt: &Opt) -> Result<Sourced<T>, Error> {
    v.ok_or_else(|| Error::Usage(format!("--{} has no value and no default", opt.long)))
}

/// The settings `flags`' command takes, each from the first layer that sets it: the flags, the
/// environment, the configuration file (if any), the defaults; and that file.
fn layers(flags: &Flags, env: &Env) -> Result<(Settings, Option<ConfigFile>), Error> {
    let file = ConfigFile::find(flags.config(), env)?;
    let settings = layered(
        &layered_options(flags.cmd()),
        vec![
            Box::new(|wanted| flags.settings(wanted)),
            Box::new(|wanted| Settings::read(env, wanted)),
            Box::new(|wanted| match &file {
                Some(file) => Settings::read(file, wanted),
                None => Ok(Settings::default()),
            }),
            Box::new(|wanted| etcdctl::Etcdctl(env).settings(wanted)),
            Box::new(|wanted| credentials::settings(env, wanted)),
            Box::new(Settings::defaults),
        ],
    )?;
    Ok((settings, file))
}

/// What the configuration file warns of (it may be changed by others), before `warnings`.
fn with_file_warnings(file: Option<&ConfigFile>, warnings: Vec<String>) -> Vec<String> {
    let mut all: Vec<String> = file.iter().flat_map(|f| f.warnings()).collect();
    all.extend(warnings);
    all
}

impl Config {
    /// Layer the flags over the environment over the configuration file over the defaults, and
    /// validate the result. A command on the command line wins over the file's.
    pub fn load(flags: Flags, env: &Env) -> Result<Config, Error> {
        let (settings, file) = layers(&flags, env)?;
        let notes = etcdctl::note(&settings).into_iter().collect();
        let command = match flags.command() {
            c if c.is_empty() => file.as_ref().and_then(|f| f.command()).unwrap_or_default(),
            c => c,
        };
        let mut config = Config::from_settings(settings, command)?;
        config.warnings = with_file_warnings(file.as_ref(), config.warnings);
        config.notes = notes;
        Ok(config)
    }

    /// Check how the settings fit together. Each value was checked when it was read.
    pub fn from_settings(mut s: Settings, command: Vec<OsString>) -> Result<Config, Error> {
        let mut command = command.into_iter();
        let name = command.next().filter(|c| !c.is_empty()).ok_or_else(|| {
            Error::Usage(
                "missing COMMAND (give it after --, or as command in the configuration file)"
                    .into(),
            )
        })?;
        let args: Vec<OsString> = command.collect();
        let program = resolve_command(Path::new(&name), std::env::var_os("PATH"))?;
        let mut warnings = Vec::new();
        let connection = connection(&mut s, &mut warnings)?;

        let holdoff = s.health_holdoff.as_ref().map(|h| h.value);
        let health = health_check(&mut s)?;
        let ttl = Duration::from_secs(required(s.ttl.take(), &TTL)?.value);
        let stop_timeout = s.stop_timeout.take().map(|g| g.value);
        let hooks = hooks(&mut s, ttl)?;
        let demote_budget = match hooks.demote {
            Some(_) => hooks.timeout,
            None => Duration::ZERO,
        };
        Timing::with_hook(ttl, stop_timeout, demote_budget)
            .map_err(|e| Error::Usage(e.to_string()))?;

        let on_exit = required(s.on_exit.take(), &ON_EXIT)?;
        let hot_standby = hot_standby(&mut s, &on_exit)?;
        let run_id_ttl = required(s.run_id_ttl, &RUN_ID_TTL)?.value;
        let holders = required(s.holders, &HOLDERS)?;
        if let (Some(run), n @ 2..) = (&s.run_id, holders.value) {
            return Err(Error::Usage(format!(
                "{} cannot be combined with {} {n}: a run ID starts the command at most once, \
                 and {n} holders would start it {n} times",
                run.from, holders.from
            )));
        }
        let run_id = match s.run_id {
            Some(run) if on_exit.value != OnExit::Exit => {
                return Err(Error::Usage(format!(
                    "{} cannot be combined with {} {}: a run ID starts the command at most \
                     once, and that mode starts it again",
                    run.from,
                    on_exit.from,
                    on_exit_name(on_exit.value)
                )))
            }
            Some(run) => Some(RunId {
                id: run.value,
                ttl: run_id_ttl,
            }),
            None => None,
        };

        let no_wait = s.no_wait.is_some_and(|n| n.value);
        let wait_timeout = match s.wait_timeout {
            Some(d) => Some(d.value),
            None if no_wait => Some(NO_WAIT_TIMEOUT),
            None => None,
        };

        let election = match s.election {
            Some(e) => e.value,
            None => default_election(Path::new(&name))?,
        };
        let id = match s.id {
            Some(id) => id.value,
            None => default_id(),
        };

        Ok(Config {
            connection,
            election,
            id,
            holders: holders.value,
            ttl,
            stop_timeout,
            stop_signal: required(s.stop_signal, &STOP_SIGNAL)?.value,
            on_exit: on_exit.value,
            restart: RestartPolicy {
                limit: required(s.restart_limit, &RESTART_LIMIT)?.value,
                window: required(s.restart_window, &RESTART_WINDOW)?.value,
            },
            no_wait,
            wait_timeout,
            run_id,
            health,
            status_addr: s.status_addr.map(|a| a.value),
            hooks,
            hot_standby,
            priority: required(s.priority, &PRIORITY)?.value,
            preempt: s.preempt.and_then(|p| p.value),
            holdoff: holdoff.unwrap_or(DEFAULT_HOLDOFF),
            program,
            args,
            log_format: required(s.log_format, &LOG_FORMAT)?.value,
            log_level: required(s.log_level, &LOG_LEVEL)?.value.into(),
            warnings,
            notes: Vec::new(),
        })
    }
}

/// After a vetoed term (or ill health), stay out this long unless --health-holdoff says.
const DEFAULT_HOLDOFF: Duration = Duration::from_secs(10);

/// The hook timeout when none is given: 2 s, at most half the stop budget of the TTL.
const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(2);

/// The role hooks; the timeout without a hook is a mistake.
fn hooks(s: &mut Settings, ttl: Duration) -> Result<Hooks, Error> {
    let promote = s.on_promote.take().map(|c| c.value);
    let demote = s.on_demote.take().map(|c| c.value);
    let timeout = match s.hook_timeout.take() {
        Some(t) if promote.is_none() && demote.is_none() => {
            return Err(Error::Usage(format!(
                "{} needs --on-promote or --on-demote",
                t.from
            )))
        }
        Some(t) if t.value.is_zero() => {
            return Err(Error::Usage(format!("{} must be more than 0s", t.from)))
        }
        Some(t) => t.value,
        None => {
            let budget = crate::lease::timing::stop_budget(ttl).unwrap_or_default();
            DEFAULT_HOOK_TIMEOUT.min(budget / 2)
        }
    };
    Ok(Hooks {
        promote,
        demote,
        timeout,
    })
}

/// `--hot-standby` with its signal: the signal without it, or a child restarted by an
/// `--on-exit` of its own, is a mistake.
fn hot_standby(s: &mut Settings, on_exit: &Sourced<OnExit>) -> Result<Option<Signal>, Error> {
    let hot = s.hot_standby.take().filter(|h| h.value);
    let signal = s.role_signal.take();
    let Some(hot) = hot else {
        if let Some(sig) = signal.filter(|s| !matches!(s.from, Source::Default(_))) {
            return Err(Error::Usage(format!("{} needs --hot-standby", sig.from)));
        }
        return Ok(None);
    };
    if !matches!(on_exit.from, Source::Default(_)) {
        return Err(Error::Usage(format!(
            "{} cannot be combined with {}: a hot standby's child is started again by \
             leaderrun whenever it exits",
            on_exit.from, hot.from
        )));
    }
    if s.run_id.is_some() {
        return Err(Error::Usage(format!(
            "--run-id cannot be combined with {}: a run ID starts the command at most once",
            hot.from
        )));
    }
    let signal = signal.map_or(crate::process::role::DEFAULT_SIGNAL, |s| s.value);
    if matches!(signal, Signal::SIGKILL | Signal::SIGSTOP) {
        return Err(Error::Usage(format!(
            "--role-signal {signal}: a signal the child cannot handle"
        )));
    }
    Ok(Some(signal))
}

/// The health check, if a probe is given: one probe, and the tuning only with one.
fn health_check(s: &mut Settings) -> Result<Option<HealthCheck>, Error> {
    let probe = match (s.health_cmd.take(), s.health_http.take()) {
        (Some(c), Some(h)) => {
            return Err(Error::Usage(format!(
                "{} and {} are both given: one health check at a time",
                c.from, h.from
            )))
        }
        (Some(c), None) => Probe::Cmd(c.value),
        (None, Some(h)) => Probe::Http(h.value),
        (None, None) => {
            // A tuning value set by the user (not a default) without a probe is a mistake.
            let tuning = [
                s.health_interval.as_ref().map(|v| &v.from),
                s.health_timeout.as_ref().map(|v| &v.from),
                s.health_retries.as_ref().map(|v| &v.from),
                s.health_start_period.as_ref().map(|v| &v.from),
                s.health_holdoff.as_ref().map(|v| &v.from),
            ];
            if let Some(from) = tuning
                .into_iter()
                .flatten()
                .find(|f| !matches!(f, Source::Default(_)))
            {
                return Err(Error::Usage(format!(
                    "{from} needs --health-cmd or --health-http"
                )));
            }
            return Ok(None);
        }
    };
    Ok(Some(HealthCheck {
        probe,
        interval: required(s.health_interval.take(), &HEALTH_INTERVAL)?.value,
        timeout: required(s.health_timeout.take(), &HEALTH_TIMEOUT)?.value,
        retries: required(s.health_retries.take(), &HEALTH_RETRIES)?.value,
        start_period: required(s.health_start_period.take(), &HEALTH_START_PERIOD)?.value,
        holdoff: required(s.health_holdoff.take(), &HEALTH_HOLDOFF)?.value,
    }))
}

fn on_exit_name(o: OnExit) -> String {
    o.to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

/// How to reach etcd, from the connection settings of `s` (taken out of it), checked together:
/// one scheme for every endpoint, TLS options only with https, a certificate with its key, a
/// user with one password.
fn connection(s: &mut Settings, warnings: &mut Vec<String>) -> Result<Connection, Error> {
    let (cacert, cert, key) = (s.cacert.take(), s.cert.take(), s.key.take());
    let tls_option = [&cacert, &cert, &key]
        .into_iter()
        .flatten()
        .map(|o| o.from.clone())
        .next();
    let endpoints = with_scheme(required(s.endpoints.take(), &ENDPOINTS)?, tls_option)?;
    match (&cert, &key) {
        (Some(c), None) => {
            return Err(Error::Usage(format!(
                "{} is given without --key (LEADERRUN_KEY_FILE, key in the configuration \
                 file): a client certificate needs its private key",
                c.from
            )))
        }
        (None, Some(k)) => {
            return Err(Error::Usage(format!(
                "{} is given without --cert (LEADERRUN_CERT, cert in the configuration file): \
                 a private key needs its client certificate",
                k.from
            )))
        }
        _ => {}
    }
    let tls = endpoints[0].starts_with("https://").then(|| TlsFiles {
        cacert: cacert.map(|c| c.value),
        cert: cert.map(|c| c.value),
        key: key.map(|k| k.value),
    });
    Ok(Connection {
        endpoints,
        tls,
        user: credentials(s, warnings)?,
    })
}

/// The endpoints with their scheme: a bare `host:port` is https when a TLS option is given
/// (`tls_option`, where it came from), else http. A plain http endpoint with TLS options, or
/// http and https mixed, is refused.
fn with_scheme(
    list: Sourced<Vec<String>>,
    tls_option: Option<Source>,
) -> Result<Vec<String>, Error> {
    let bare = if tls_option.is_some() {
        "https"
    } else {
        "http"
    };
    let resolved: Vec<String> = list
        .value
        .iter()
        .map(|e| match e.contains("://") {
            true => e.clone(),
            false => format!("{bare}://{e}"),
        })
        .collect();
    let find = |scheme: &str| resolved.iter().find(|e| e.starts_with(scheme));
    match (find("http://"), find("https://"), tls_option) {
        (Some(http), _, Some(tls)) => Err(Error::Usage(format!(
            "{}: {http} is plain http, but a TLS option is given ({tls}): write https:// or \
             a bare host:port",
            list.from
        ))),
        (Some(http), Some(https), None) => Err(Error::Usage(format!(
            "{}: {http} and {https} mix http and https: give every endpoint the same scheme",
            list.from
        ))),
        _ => flags::distinct(resolved).map_err(|e| Error::Usage(format!("{}: {e}", list.from))),
    }
}

/// Where a password comes from.
enum Password {
    Given(Secret),
    File(PathBuf),
}

/// The user and its password, from the highest layer that gives a password: `--user
/// NAME:PASSWORD` or `--password-file` (flags), LEADERRUN_PASSWORD_FILE or LEADERRUN_PASSWORD
/// (environment), `password_file` (configuration file). Two in one layer are refused.
fn credentials(s: &mut Settings, warnings: &mut Vec<String>) -> Result<Option<Credentials>, Error> {
    let (user, file, env) = (s.user.take(), s.password_file.take(), s.password.take());
    let Some(user) = user else {
        return match file.map(|f| f.from).or(env.map(|p| p.from)) {
            Some(from) => Err(Error::Usage(format!(
                "{from} is given without a user: name it with --user NAME (LEADERRUN_USER, \
                 user in the configuration file)"
            ))),
            None => Ok(None),
        };
    };
    flags::text(&user.value.name)
        .map_err(|e| Error::Usage(format!("{}: the user name {e}", user.from)))?;
    let mut sources = Vec::new();
    if let Some(password) = user.value.password {
        if matches!(user.from, Source::Flag(_)) {
            warnings.push(format!(
                "{} NAME:PASSWORD puts the password on the command line (argv), which every \
                 user of this host can read (ps, /proc/PID/cmdline): use --password-file or \
                 LEADERRUN_PASSWORD",
                user.from
            ));
        }
        sources.push((user.from.clone(), Password::Given(password)));
    }
    if let Some(f) = file {
        sources.push((f.from, Password::File(f.value)));
    }
    if let Some(p) = env {
        sources.push((p.from, Password::Given(p.value)));
    }
    let Some(top) = sources.iter().map(|(from, _)| from.layer()).min() else {
        let etcdctl = match user.from {
            Source::Etcdctl(_) => ", ETCDCTL_PASSWORD",
            _ => "",
        };
        return Err(Error::Usage(format!(
            "{} is given without a password: give --password-file FILE (LEADERRUN_PASSWORD_FILE, \
             password_file in the configuration file), LEADERRUN_PASSWORD{etcdctl}, or --user \
             NAME:PASSWORD",
            user.from
        )));
    };
    let mut top = sources.into_iter().filter(|(from, _)| from.layer() == top);
    let (from, password) = top.next().expect("the minimum is one of them");
    if let Some((other, _)) = top.next() {
        return Err(Error::Usage(format!(
            "{from} and {other} both give a password: give one"
        )));
    }
    let password = match password {
        Password::Given(p) => p.0,
        Password::File(path) => {
            // Readable by others gives the password away; writable lets them choose it.
            warnings.extend(open_to_others(
                &path,
                &from,
                "password file",
                0o066,
                "go-rw",
            ));
            read_password(&path, &from)?
        }
    };
    if password.is_empty() {
        return Err(Error::Usage(format!("{from}: the password is empty")));
    }
    Ok(Some(Credentials {
        name: user.value.name,
        password,
    }))
}

/// A warning when `path` (a regular file, named by `from`) grants group or others the access in
/// `mask` (read 0o044, write 0o022), as ssh warns of a private key anyone may read: said, not
/// refused, since only the file's owner can change it. `chmod` is the remedy offered.
pub(crate) fn open_to_others(
    path: &Path,
    from: &dyn fmt::Display,
    what: &str,
    mask: u32,
    chmod: &str,
) -> Option<String> {
    let mode = std::fs::metadata(path)
        .ok()
        .filter(|m| m.is_file())?
        .permissions()
        .mode()
        & 0o7777;
    let open: Vec<&str> = [(0o044, "readable"), (0o022, "writable")]
        .into_iter()
        .filter(|(bits, _)| mode & mask & bits != 0)
        .map(|(_, word)| word)
        .collect();
    if open.is_empty() {
        return None;
    }
    let shown = crate::log::escape_controls(&path.to_string_lossy()).into_owned();
    Some(format!(
        "{from}: the {what} {shown} is {} by group or others (mode {mode:04o}): chmod {chmod} {shown}",
        open.join(" and ")
    ))
}

/// The password in `path`, without one trailing newline.
fn read_password(path: &Path, from: &Source) -> Result<String, Error> {
    let shown = path.display();
    let bytes = crate::input_file::read(path).map_err(|e| {
        Error::Usage(format!(
            "{from}: cannot read the password file {shown}: {e}"
        ))
    })?;
    let mut password = String::from_utf8(bytes)
        .map_err(|_| Error::Usage(format!("{from}: the password file {shown} is not UTF-8")))?;
    if password.ends_with('\n') {
        password.pop();
        if password.ends_with('\r') {
            password.pop();
        }
    }
    Ok(password)
}

/// The settings of the subcommands that ask about an election (`leader`, `resign`, `list`,
/// `history`): how to reach etcd and the election, layered as `leaderrun` reads them (from the
/// same configuration file too, whose other keys they do not read), and each its own flags.
#[derive(Debug, Clone)]
pub struct AskConfig {
    pub connection: Connection,
    pub election: String,
    /// `leader --holders N`: list the first N live candidates (the holders), not only the
    /// first; read from the same file as `leaderrun`'s, which lists as many as it runs.
    pub holders: u32,
    pub format: Format,
    /// `leader --watch`.
    pub watch: bool,
    /// `resign --timeout`.
    pub timeout: Duration,
    /// `resign --to`: the candidate to hand over to.
    pub to: Option<String>,
    /// `history --limit`.
    pub limit: u32,
    /// Said once logging is set up.
    pub warnings: Vec<String>,
}

/// `leaderrun leader`'s settings.
pub type LeaderConfig = AskConfig;
/// `leaderrun resign`'s settings.
pub type ResignConfig = AskConfig;

impl AskConfig {
    pub fn load(flags: Flags, env: &Env) -> Result<AskConfig, Error> {
        let (mut s, file) = layers(&flags, env)?;
        let (connection, election, warnings) = target(&mut s)?;
        let value = |v: Option<Sourced<u32>>, d| v.map_or(d, |v| v.value);
        Ok(AskConfig {
            connection,
            election,
            holders: value(s.holders, 1),
            format: s.format.map_or(Format::Text, |f| f.value),
            watch: s.watch.is_some_and(|w| w.value),
            timeout: s.timeout.map_or(Duration::from_secs(30), |t| t.value),
            to: s.to.map(|t| t.value),
            limit: value(s.limit, 20),
            warnings: with_file_warnings(file.as_ref(), warnings),
        })
    }
}

/// What a subcommand asks about: how to reach etcd, the election (required), and the warnings
/// the connection settings gave.
fn target(s: &mut Settings) -> Result<(Connection, String, Vec<String>), Error> {
    let election = s
        .election
        .take()
        .ok_or_else(|| Error::Usage("--election is required (or LEADERRUN_ELECTION)".into()))?
        .value;
    let mut warnings = Vec::new();
    let connection = connection(s, &mut warnings)?;
    Ok((connection, election, warnings))
}

/// Commands whose file name says nothing about the job: shells, interpreters, and wrappers
/// that run another command. With one of these, `--election` is required: otherwise
/// `leaderrun -- sh -c A` and `leaderrun -- sh -c B` would share the election `sh`.
/// A version suffix counts as the same name (`python3.11`, `perl5.36`, `bash5`).
pub const GENERIC_COMMANDS: &[&str] = &[
    // Shells.
    "sh", "ash", "bash", "dash", "zsh", "ksh", "mksh", "yash", "csh", "tcsh", "fish", "busybox",
    "toybox", // Interpreters and language runners.
    "python", "pypy", "perl", "ruby", "node", "nodejs", "deno", "bun", "npm", "npx", "php", "java",
    "dotnet", "lua", "luajit", "tclsh", "Rscript", "awk", "gawk", "mawk",
    // Wrappers that run another command.
    "env", "exec", "nice", "nohup", "timeout", "sudo", "doas", "su", "runuser", "setpriv", "stdbuf",
    "setsid", "chrt", "ionice", "taskset", "flock", "chroot", "unshare", "nsenter", "xargs",
    "time", "strace", "valgrind",
];

/// The shell or interpreter `file_name` is, if it is one (`python3.11` is `python`).
pub fn generic_command(file_name: &str) -> Option<&'static str> {
    let base = file_name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    GENERIC_COMMANDS
        .iter()
        .copied()
        .find(|g| *g == file_name || *g == base)
}

/// The command's file name: `./my-server` and `/usr/bin/my-server` both give `my-server`.
/// Refused for a shell, interpreter or wrapper ([`GENERIC_COMMANDS`]).
fn default_election(command: &Path) -> Result<String, Error> {
    let name = command
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if generic_command(&name).is_some() {
        let name = crate::log::escape_controls(&name);
        return Err(Error::Usage(format!(
            "--election is required when COMMAND is a shell or interpreter ({name}): every \
             {name} command would otherwise share the election '{name}'; name it with \
             --election NAME (or LEADERRUN_ELECTION)"
        )));
    }
    flags::election(&name).map_err(|e| {
        Error::Usage(format!(
            "the default election, COMMAND's file name '{}': {e}; give --election NAME",
            crate::log::escape_controls(&name)
        ))
    })
}

fn default_id() -> String {
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into());
    let host = if flags::text(&host).is_ok() {
        host
    } else {
        "localhost".into()
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().map(|(k, v)| (k.into(), v.into())))
    }

    fn load(args: &[&str], vars: &[(&str, &str)]) -> Result<Config, Error> {
        let flags = flags::parse(std::iter::once("leaderrun").chain(args.iter().copied()))
            .map_err(|e| Error::Usage(e.to_string()))?;
        Config::load(flags, &env(vars))
    }

    fn parse(args: &[&str]) -> Result<Config, Error> {
        load(args, &[])
    }

    fn usage(args: &[&str], vars: &[(&str, &str)]) -> String {
        match load(args, vars) {
            Ok(c) => panic!("{args:?} {vars:?} accepted: {c:?}"),
            Err(e) => {
                assert_eq!(e.exit_code(), 2, "{args:?} {vars:?}: {e}");
                e.to_string()
            }
        }
    }

    #[test]
    fn every_option_is_named_by_one_rule_and_its_default_parses() {
        for o in OPTIONS {
            // --key's variable would be LEADERRUN_KEY, the leader key given to the child.
            let want = match **o == KEY {
                true => "LEADERRUN_KEY_FILE".to_string(),
                false => format!("LEADERRUN_{}", o.long.to_uppercase().replace('-', "_")),
            };
            // A subcommand's own flag is neither a variable nor a key.
            match o.taken_by(Cmd::Main) {
                true => assert_eq!(o.env, Some(want.as_str())),
                false => assert_eq!((o.env, o.key), (None, None), "{}", o.long),
            }
            assert_ne!(o.env, Some(PARENT_KEY_VAR));
            assert_eq!(o.value_name.is_empty(), !o.takes_value(), "{}", o.long);
            if let Some(key) = o.key {
                assert_eq!(key, o.long.replace('-', "_"));
            }
        }
        let d = Settings::defaults(OPTIONS).unwrap();
        for o in OPTIONS {
            assert_eq!(d.is_set(o), o.default.is_some(), "{}", o.long);
        }
        assert_eq!(d.ttl.unwrap().value, 10);
        assert_eq!(d.endpoints.unwrap().value, ["127.0.0.1:2379"]);
        // leaderrun leader's: the connection and the election, nothing of the supervisor's.
        let leader = layered_options(Cmd::Leader);
        assert_eq!(leader.first(), Some(&&ENDPOINTS));
        for o in [
            &CACERT,
            &CERT,
            &KEY,
            &USER,
            &PASSWORD_FILE,
            &PASSWORD,
            &ELECTION,
        ] {
            assert!(leader.contains(&o), "{}", o.long);
        }
        // With its own flags, and --holders (the same file lists as many as it runs).
        for o in [&FORMAT, &WATCH, &HOLDERS] {
            assert!(leader.contains(&o), "{}", o.long);
        }
        assert_eq!(leader.len(), 11);
        let resign = layered_options(Cmd::Resign);
        assert_eq!(&resign[..8], &leader[..8]);
        assert_eq!(&resign[8..], [&TIMEOUT, &FORMAT, &TO]);
        assert_eq!(&layered_options(Cmd::List)[..8], &leader[..8]);
        assert_eq!(&layered_options(Cmd::History)[8..], [&FORMAT, &LIMIT]);
        // The file's own name is read before the layers.
        assert!(!layered_options(Cmd::Main).contains(&&CONFIG));
        assert_eq!(d.run_id_ttl.unwrap().value, Duration::from_secs(86400));
    }

    #[test]
    fn layers_are_taken_highest_first() {
        let c = load(
            &["--ttl", "7", "--election", "flag", "--", "true"],
            &[
                ("LEADERRUN_TTL", "9"),
                ("LEADERRUN_ELECTION", "env"),
                ("LEADERRUN_ID", "env-id"),
                ("LEADERRUN_RESTART_LIMIT", "3"),
            ],
        )
        .unwrap();
        assert_eq!(c.ttl, Duration::from_secs(7));
        assert_eq!(c.election, "flag");
        assert_eq!(c.id, "env-id");
        assert_eq!(c.restart.limit, 3);
        assert_eq!(c.restart.window, Duration::from_secs(60));
        // A variable whose flag is given is not read at all.
        let c = load(&["--ttl", "3", "--", "true"], &[("LEADERRUN_TTL", "0")]).unwrap();
        assert_eq!(c.ttl, Duration::from_secs(3));
        // An empty variable is unset.
        let c = load(&["--", "true"], &[("LEADERRUN_ELECTION", "")]).unwrap();
        assert_eq!(c.election, "true");
    }

    #[test]
    fn a_nested_leaderrun_ignores_its_parents_election_and_id() {
        let parent = [
            ("LEADERRUN_ELECTION", "parent"),
            ("LEADERRUN_ID", "parent-id"),
            ("LEADERRUN_KEY", "parent/694d"),
            ("LEADERRUN_REVISION", "12"),
            ("LEADERRUN_LEASE", "694d"),
            ("LEADERRUN_TTL", "4"),
        ];
        let c = load(&["--", "true"], &parent).unwrap();
        assert_eq!(c.election, "true");
        assert!(
            c.id.ends_with(&format!(":{}", std::process::id())),
            "{}",
            c.id
        );
        // Other settings are inherited on purpose; flags still work.
        assert_eq!(c.ttl, Duration::from_secs(4));
        let c = load(
            &["--election", "inner", "--id", "me", "--", "true"],
            &parent,
        )
        .unwrap();
        assert_eq!((c.election.as_str(), c.id.as_str()), ("inner", "me"));
        // Without LEADERRUN_KEY the variables are settings.
        let c = load(&["--", "true"], &parent[..2]).unwrap();
        assert_eq!(
            (c.election.as_str(), c.id.as_str()),
            ("parent", "parent-id")
        );
    }

    #[test]
    fn the_election_defaults_to_the_command_file_name_unless_generic() {
        let c = parse(&["--", "/bin/true"]).unwrap();
        assert_eq!(c.election, "true");
        let c = parse(&["--election", "web", "--", "sh", "-c", "true"]).unwrap();
        assert_eq!(c.election, "web");
        assert_eq!(c.args, vec![OsString::from("-c"), OsString::from("true")]);
        assert!(c.program.ends_with("sh"));
        let e = usage(&["--", "/bin/sh", "-c", "true"], &[]);
        assert!(
            e.contains("--election is required") && e.contains("(sh)"),
            "{e}"
        );
        for (name, generic) in [
            ("python3.11", Some("python")),
            ("python3", Some("python")),
            ("perl5.36", Some("perl")),
            ("bash", Some("bash")),
            ("node18", Some("node")),
            ("my-server", None),
            ("shark", None),
            ("sh2ftp", None),
        ] {
            assert_eq!(generic_command(name), generic, "{name}");
        }
    }

    #[test]
    fn a_mistyped_flag_is_not_taken_for_the_command() {
        let err = parse(&["--tll", "3", "--", "true"]).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
        // After the command, everything is the command's, hyphens included.
        let c = parse(&["true", "-c", "--ttl"]).unwrap();
        assert_eq!(c.args, vec![OsString::from("-c"), OsString::from("--ttl")]);
        assert_eq!(c.ttl, Duration::from_secs(10));
    }

    #[test]
    fn id_defaults_to_hostname_and_pid() {
        let c = parse(&["--", "true"]).unwrap();
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
            &["--ttl", "0", "--", "true"][..],
            &["--ttl", "-3", "--", "true"],
            &["--ttl", "9000000001", "--", "true"],
            &["--ttl", "18446744073709551616", "--", "true"],
            &["--stop-timeout", "soon", "--", "true"],
            &["--stop-signal", "NOPE", "--", "true"],
            &["--election", "", "--", "true"],
            &["--election", "  ", "--", "true"],
            &["--election", "a\nb", "--", "true"],
            &["--id", "", "--", "true"],
            &["--id", "x\u{1b}[2J", "--", "true"],
            &["--endpoints", "", "--", "true"],
            &["--ttl", "3", "--stop-timeout", "5s", "--", "true"],
            &["--on-exit", "sometimes", "--", "true"],
            &["--wait-timeout", "never", "--", "true"],
            &["--wait-timeout", "18446744073709551615", "--", "true"],
            &["--wait-timeout", "500000000000years", "--", "true"],
            &["--restart-window", "9000000001s", "--", "true"],
            &["--run-id", "", "--", "true"],
            &["--run-id", "a\rb", "--", "true"],
            &["--run-id", "x", "--run-id-ttl", "0s", "--", "true"],
            &[
                "--run-id",
                "x",
                "--run-id-ttl",
                "9223372036854775808",
                "--",
                "true",
            ],
            &["--run-id", "x", "--on-exit", "restart", "--", "true"],
            &["--run-id", "x", "--on-exit", "recampaign", "--", "true"],
            &["--restart-limit", "0", "--", "true"],
            &["--restart-limit", "4294967296", "--", "true"],
        ] {
            usage(args, &[]);
        }
    }

    #[test]
    fn an_environment_error_names_the_variable() {
        let e = usage(&["--", "true"], &[("LEADERRUN_TTL", "abc")]);
        assert!(e.starts_with("LEADERRUN_TTL=abc: "), "{e}");
        let e = usage(&["--", "true"], &[("LEADERRUN_ID", "a\nb")]);
        assert!(e.starts_with("LEADERRUN_ID=a\\nb: "), "{e}");
        let e = usage(
            &["--", "true"],
            &[("LEADERRUN_RUN_ID", "x"), ("LEADERRUN_ON_EXIT", "restart")],
        );
        assert!(
            e.contains("LEADERRUN_RUN_ID") && e.contains("LEADERRUN_ON_EXIT"),
            "{e}"
        );
    }

    #[test]
    fn words_are_case_insensitive() {
        let c = load(
            &["--on-exit", "RESTART", "--log-level", "DEBUG", "--", "true"],
            &[
                ("LEADERRUN_LOG_FORMAT", "JSON"),
                ("LEADERRUN_NO_WAIT", "True"),
            ],
        )
        .unwrap();
        assert_eq!(c.on_exit, OnExit::Restart);
        assert_eq!(c.log_level, tracing::Level::DEBUG);
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(c.no_wait);
        let c = load(&["--", "true"], &[("LEADERRUN_ON_EXIT", "Recampaign")]).unwrap();
        assert_eq!(c.on_exit, OnExit::Recampaign);
    }

    #[test]
    fn holders_are_read_bounded_and_not_combined_with_a_run_id() {
        assert_eq!(parse(&["--", "true"]).unwrap().holders, 1);
        assert_eq!(parse(&["--holders", "3", "--", "true"]).unwrap().holders, 3);
        let c = load(&["--", "true"], &[("LEADERRUN_HOLDERS", "1000")]).unwrap();
        assert_eq!(c.holders, 1000);
        for bad in ["0", "1001", "-1", "x"] {
            let e = usage(&["--holders", bad, "--", "true"], &[]);
            assert!(e.contains("from 1 to 1000"), "{bad}: {e}");
        }
        let e = usage(&["--holders", "2", "--run-id", "r", "--", "true"], &[]);
        assert!(e.contains("--run-id") && e.contains("--holders 2"), "{e}");
        let e = usage(
            &["--run-id", "r", "--", "true"],
            &[("LEADERRUN_HOLDERS", "3")],
        );
        assert!(e.contains("LEADERRUN_HOLDERS 3"), "{e}");
        // One holder is the default, and a run ID goes with it.
        assert!(parse(&["--holders", "1", "--run-id", "r", "--", "true"]).is_ok());
    }

    #[test]
    fn waiting_and_run_ids_are_read() {
        let c = parse(&["--no-wait", "--run-id", "2026-11-21", "--", "true"]).unwrap();
        assert!(c.no_wait);
        assert_eq!(c.wait_timeout, Some(NO_WAIT_TIMEOUT));
        let run = c.run_id.unwrap();
        assert_eq!(
            (run.id.as_str(), run.ttl),
            ("2026-11-21", Duration::from_secs(86400))
        );
        let c = parse(&["--no-wait", "--wait-timeout", "30s", "--", "true"]).unwrap();
        assert!(c.no_wait);
        assert_eq!(c.wait_timeout, Some(Duration::from_secs(30)));
        let c = parse(&["--wait-timeout", "90s", "--", "true"]).unwrap();
        assert!(!c.no_wait);
        assert_eq!(c.wait_timeout, Some(Duration::from_secs(90)));
        let c = parse(&["--", "true"]).unwrap();
        assert_eq!((c.no_wait, c.wait_timeout), (false, None));
    }

    #[test]
    fn endpoints_are_normalized_deduplicated_and_bounded() {
        let c = parse(&[
            "--endpoints",
            "127.0.0.1:2379, http://127.0.0.1:2379,localhost",
            "--endpoints",
            "[::1]:2380",
            "--",
            "true",
        ])
        .unwrap();
        assert_eq!(
            c.connection.endpoints,
            [
                "http://127.0.0.1:2379",
                "http://localhost:2379",
                "http://[::1]:2380"
            ]
        );
        let many: Vec<String> = (1..=65).map(|p| format!("127.0.0.1:{p}")).collect();
        let e = usage(&["--endpoints", &many.join(","), "--", "true"], &[]);
        assert!(e.contains("64"), "{e}");
        let e = usage(&["--", "true"], &[("LEADERRUN_ENDPOINTS", &many.join(","))]);
        assert!(
            e.starts_with("LEADERRUN_ENDPOINTS=") && e.contains("64"),
            "{e}"
        );
        // 65 entries, 64 distinct: fine.
        let mut dup: Vec<String> = (1..=64).map(|p| format!("127.0.0.1:{p}")).collect();
        dup.push("127.0.0.1:1".into());
        assert_eq!(
            parse(&["--endpoints", &dup.join(","), "--", "true"])
                .unwrap()
                .connection
                .endpoints
                .len(),
            64
        );
        // Split over two flags: counted together.
        let e = usage(
            &[
                "--endpoints",
                &many[..40].join(","),
                "--endpoints",
                &many[40..].join(","),
                "--",
                "true",
            ],
            &[],
        );
        assert!(e.contains("64"), "{e}");
    }

    #[test]
    fn leader_settings_are_layered_and_checked_alike() {
        let lf = |args: &[&str]| {
            flags::parse_leader(std::iter::once("leader").chain(args.iter().copied())).unwrap()
        };
        let c = LeaderConfig::load(lf(&[]), &env(&[("LEADERRUN_ELECTION", "web")])).unwrap();
        assert_eq!(c.election, "web");
        assert_eq!(c.connection.endpoints, ["http://127.0.0.1:2379"]);
        // Settings it has no use for are not read.
        LeaderConfig::load(lf(&["--election", "x"]), &env(&[("LEADERRUN_TTL", "abc")])).unwrap();
        let e = LeaderConfig::load(lf(&[]), &env(&[])).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(flags::parse_leader(["leader", "--election", "  "]).is_err());
        let e = LeaderConfig::load(
            lf(&[]),
            &env(&[("LEADERRUN_ELECTION", "web"), ("LEADERRUN_KEY", "web/1")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("--election"), "{e}");
    }

    /// A file in a fresh temporary directory, removed with it.
    struct Temp(PathBuf);

    impl Temp {
        fn new() -> Temp {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("leaderrun-cfg-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Temp(dir)
        }

        fn file(&self, name: &str, text: &str) -> String {
            let path = self.0.join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        }

        fn chmod(&self, name: &str, mode: u32) {
            let mode = std::fs::Permissions::from_mode(mode);
            std::fs::set_permissions(self.0.join(name), mode).unwrap();
        }
    }

    impl Drop for Temp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn the_file_is_layered_below_flags_and_environment() {
        let t = Temp::new();
        let file = t.file(
            "l.toml",
            "election = \"file\"\nid = \"file-id\"\nttl = 7\nrestart_limit = \"4\"\n\
             stop_timeout = \"1s\"\n",
        );
        let c = load(
            &["--config", &file, "--election", "flag", "--", "true"],
            &[("LEADERRUN_ID", "env-id"), ("LEADERRUN_TTL", "9")],
        )
        .unwrap();
        assert_eq!(c.election, "flag");
        assert_eq!(c.id, "env-id");
        assert_eq!(c.ttl, Duration::from_secs(9));
        assert_eq!(c.restart.limit, 4);
        assert_eq!(c.stop_timeout, Some(Duration::from_secs(1)));
        // Below the file: the defaults.
        assert_eq!(c.restart.window, Duration::from_secs(60));
        assert_eq!(c.on_exit, OnExit::Exit);
        // LEADERRUN_CONFIG names the file when --config does not.
        let c = load(&["--", "true"], &[("LEADERRUN_CONFIG", &file)]).unwrap();
        assert_eq!(
            (c.election.as_str(), c.ttl),
            ("file", Duration::from_secs(7))
        );
        // A bad value the flag overrides is not looked at; one that is read names file and line.
        let bad = t.file("bad.toml", "\n\nttl = 0\n");
        let c = load(&["--config", &bad, "--ttl", "3", "--", "true"], &[]).unwrap();
        assert_eq!(c.ttl, Duration::from_secs(3));
        let e = usage(&["--config", &bad, "--", "true"], &[]);
        assert!(e.starts_with(&format!("{bad}:3: ttl: ")), "{e}");
        let e = usage(
            &[
                "--config",
                &t.0.join("none.toml").display().to_string(),
                "--",
                "true",
            ],
            &[],
        );
        assert!(e.contains("none.toml") && e.contains("--config"), "{e}");
    }

    #[test]
    fn the_command_comes_from_the_file_unless_given() {
        let t = Temp::new();
        let file = t.file(
            "l.toml",
            "command = [\"/bin/sh\", \"-c\", \"exit 0\"]\nelection = \"e\"",
        );
        let c = load(&["--config", &file], &[]).unwrap();
        assert!(c.program.ends_with("sh"));
        assert_eq!(c.args, [OsString::from("-c"), OsString::from("exit 0")]);
        let c = load(&["--config", &file, "--", "true"], &[]).unwrap();
        assert!(c.program.ends_with("true") && c.args.is_empty());
        let e = usage(&["--ttl", "3"], &[]);
        assert!(
            e.contains("COMMAND") && e.contains("configuration file"),
            "{e}"
        );
        // A file inherited from a parent leaderrun: its election, id and command are the parent's.
        let parent = [
            ("LEADERRUN_CONFIG", file.as_str()),
            ("LEADERRUN_KEY", "e/1"),
        ];
        let e = usage(&[], &parent);
        assert!(e.contains("COMMAND"), "{e}");
        let c = load(&["--", "true"], &parent).unwrap();
        assert_eq!(c.election, "true");
        let c = load(&["--config", &file], &parent[1..]).unwrap();
        assert_eq!(c.election, "e");
    }

    /// A regular file that exists, where a TLS file is only named (never read here).
    const PEM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");

    #[test]
    fn endpoints_in_the_file_are_an_array_or_a_string() {
        let t = Temp::new();
        for text in [
            &"endpoints = [\"https://etcd1:2379\", \"https://etcd2\"]".to_string(),
            &"endpoints = \"https://etcd1:2379,https://etcd2\"".to_string(),
            &format!("endpoints = [\"etcd1\", \"etcd2:2379\"]\ncacert = \"{PEM}\""),
        ] {
            let file = t.file("l.toml", text);
            let c = load(&["--config", &file, "--", "true"], &[]).unwrap();
            assert_eq!(
                c.connection.endpoints,
                ["https://etcd1:2379", "https://etcd2:2379"],
                "{text}"
            );
            assert!(c.connection.tls.is_some(), "{text}");
        }
        let file = t.file("l.toml", "endpoints = [\"a:1\", 2]");
        let e = usage(&["--config", &file, "--", "true"], &[]);
        assert!(
            e.contains(":1: endpoints: expected an array of strings"),
            "{e}"
        );
    }

    #[test]
    fn schemes_follow_the_tls_options() {
        let c = parse(&["--cacert", PEM, "--endpoints", "a,b:1", "--", "true"]).unwrap();
        assert_eq!(c.connection.endpoints, ["https://a:2379", "https://b:1"]);
        let tls = c.connection.tls.unwrap();
        assert_eq!(tls.cacert.as_deref(), Some(Path::new(PEM)));
        assert_eq!((tls.cert, tls.key), (None, None));
        // https without TLS options: the system's roots.
        let c = parse(&["--endpoints", "https://a,a", "--", "true"]).unwrap();
        assert_eq!(c.connection.endpoints, ["https://a:2379"]);
        assert_eq!(c.connection.tls, Some(TlsFiles::default()));
        let c = parse(&["--", "true"]).unwrap();
        assert_eq!(c.connection.tls, None);
        let e = usage(
            &["--cacert", PEM, "--endpoints", "a,http://b", "--", "true"],
            &[],
        );
        assert!(e.contains("http://b:2379") && e.contains("--cacert"), "{e}");
        let e = usage(&["--endpoints", "https://a,b", "--", "true"], &[]);
        assert!(
            e.contains("http://b:2379") && e.contains("https://a:2379"),
            "{e}"
        );
        let e = usage(&["--cert", PEM, "--", "true"], &[]);
        assert!(e.contains("--cert") && e.contains("--key"), "{e}");
        let e = usage(&["--", "true"], &[("LEADERRUN_KEY_FILE", PEM)]);
        assert!(
            e.starts_with("LEADERRUN_KEY_FILE") && e.contains("--cert"),
            "{e}"
        );
        let e = usage(
            &["--", "true"],
            &[("LEADERRUN_CACERT", "/nonexistent/ca.pem")],
        );
        assert!(
            e.contains("LEADERRUN_CACERT") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
        // LEADERRUN_KEY is the parent's leader key, not --key.
        let c = load(&["--", "true"], &[("LEADERRUN_KEY", "web/1")]).unwrap();
        assert_eq!(c.connection.tls, None);
    }

    #[test]
    fn credentials_come_from_one_source_and_are_never_shown() {
        let t = Temp::new();
        let pw = t.file("pw", "s3cr3t-file\n");
        t.chmod("pw", 0o600);
        let c = parse(&["--user", "me", "--password-file", &pw, "--", "true"]).unwrap();
        let user = c.connection.user.clone().unwrap();
        assert_eq!(
            (user.name.as_str(), user.password.as_str()),
            ("me", "s3cr3t-file")
        );
        assert!(c.warnings.is_empty());
        assert!(!format!("{c:?}").contains("s3cr3t"), "{c:?}");
        // The environment's password, under the flag's password file.
        let env_pw = [("LEADERRUN_PASSWORD", "s3cr3t-env")];
        let c = load(&["--user", "me", "--", "true"], &env_pw).unwrap();
        assert_eq!(c.connection.user.unwrap().password, "s3cr3t-env");
        let c = load(
            &["--user", "me", "--password-file", &pw, "--", "true"],
            &env_pw,
        )
        .unwrap();
        assert_eq!(c.connection.user.unwrap().password, "s3cr3t-file");
        // A password file in the configuration file is under LEADERRUN_PASSWORD.
        let file = t.file(
            "l.toml",
            &format!("user = \"me\"\npassword_file = \"{pw}\""),
        );
        let c = load(&["--config", &file, "--", "true"], &env_pw).unwrap();
        assert_eq!(c.connection.user.unwrap().password, "s3cr3t-env");
        let c = load(&["--config", &file, "--", "true"], &[]).unwrap();
        assert_eq!(c.connection.user.unwrap().password, "s3cr3t-file");
        // etcdctl's NAME:PASSWORD: accepted, with a warning.
        let c = parse(&["--user", "me:s3cr3t-argv", "--", "true"]).unwrap();
        assert_eq!(c.connection.user.clone().unwrap().password, "s3cr3t-argv");
        assert!(c.warnings[0].contains("argv"), "{:?}", c.warnings);
        assert!(!format!("{c:?}").contains("s3cr3t"));
        // Refused: a password without a user, a user without a password, two in one layer.
        for (args, vars, want) in [
            (
                &["--password-file", &pw][..],
                &[][..],
                "--password-file is given without a user",
            ),
            (
                &[],
                &env_pw[..],
                "LEADERRUN_PASSWORD is given without a user",
            ),
            (&["--user", "me"], &[], "LEADERRUN_PASSWORD"),
            (
                &["--user", "me:s3cr3t", "--password-file", &pw],
                &[],
                "give one",
            ),
            (
                &["--user", "me"],
                &[
                    ("LEADERRUN_PASSWORD", "s3cr3t"),
                    ("LEADERRUN_PASSWORD_FILE", &pw),
                ],
                "give one",
            ),
            (&["--user", ":s3cr3t"], &[], "--user: the user name"),
            (&["--user", "me:"], &[], "empty"),
        ] {
            let mut all = args.to_vec();
            all.extend(["--", "true"]);
            let e = usage(&all, vars);
            assert!(e.contains(want), "{args:?}: {e}");
            assert!(!e.contains("s3cr3t"), "{e}");
        }
        let e = usage(&["--user", "me", "--", "true"], &[]);
        assert!(
            e.contains("--password-file")
                && e.contains("LEADERRUN_PASSWORD")
                && e.contains("--user NAME:PASSWORD"),
            "{e}"
        );
        let e = usage(&["--", "true"], &[("LEADERRUN_USER", "a\u{1}:s3cr3t")]);
        assert!(!e.contains("s3cr3t"), "{e}");
        let empty = t.file("empty", "\n");
        let e = usage(
            &["--user", "me", "--password-file", &empty, "--", "true"],
            &[],
        );
        assert!(e.contains("empty"), "{e}");
    }

    #[test]
    fn files_open_to_others_are_warned_of_once() {
        let t = Temp::new();
        let pw = t.file("pw", "s3cr3t\n");
        let file = t.file(
            "l.toml",
            &format!("user = \"me\"\npassword_file = \"{pw}\""),
        );
        let warned = |c: &Config| c.warnings.join("\n");
        // A password file: neither readable nor writable by group or others.
        for (mode, bad, what) in [
            (0o600, false, ""),
            (0o400, false, ""),
            (0o640, true, "readable by group or others (mode 0640)"),
            (0o604, true, "readable by group or others (mode 0604)"),
            (0o620, true, "writable by group or others (mode 0620)"),
            (
                0o666,
                true,
                "readable and writable by group or others (mode 0666)",
            ),
        ] {
            t.chmod("pw", mode);
            let c = parse(&["--user", "me", "--password-file", &pw, "--", "true"]).unwrap();
            assert_eq!(
                c.warnings.len(),
                usize::from(bad),
                "{mode:o}: {}",
                warned(&c)
            );
            if bad {
                let w = &c.warnings[0];
                assert!(w.starts_with("--password-file: the password file "), "{w}");
                assert!(
                    w.contains(&pw) && w.contains(what) && w.contains("chmod"),
                    "{w}"
                );
                assert!(!w.contains("s3cr3t"), "{w}");
            }
        }
        // A configuration file: not writable by group or others (readable is fine).
        t.chmod("pw", 0o600);
        for (mode, bad) in [(0o644, false), (0o600, false), (0o664, true), (0o646, true)] {
            t.chmod("l.toml", mode);
            let c = load(&["--config", &file, "--", "true"], &[]).unwrap();
            assert_eq!(
                c.warnings.len(),
                usize::from(bad),
                "{mode:o}: {}",
                warned(&c)
            );
            if bad {
                let w = &c.warnings[0];
                let want = format!("--config: the configuration file {file} is writable");
                assert!(w.starts_with(&want), "{w}");
                assert!(w.contains(&format!("(mode 0{mode:o})")), "{w}");
            }
        }
        // Named by the variable, read by a subcommand: the same one warning.
        let c = load(&["--", "true"], &[("LEADERRUN_CONFIG", &file)]).unwrap();
        assert_eq!(c.warnings.len(), 1, "{}", warned(&c));
        assert!(
            c.warnings[0].starts_with("LEADERRUN_CONFIG: "),
            "{}",
            warned(&c)
        );
        let lf = flags::parse_leader(["leader", "--config", &file, "--election", "x"]).unwrap();
        let c = LeaderConfig::load(lf, &env(&[])).unwrap();
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        // Both at once: the file first, as it is read first.
        t.chmod("pw", 0o644);
        let c = load(&["--config", &file, "--", "true"], &[]).unwrap();
        assert_eq!(c.warnings.len(), 2, "{}", warned(&c));
        assert!(
            c.warnings[0].contains("configuration file"),
            "{}",
            warned(&c)
        );
        assert!(c.warnings[1].contains("password file"), "{}", warned(&c));
    }

    #[test]
    fn the_configuration_file_is_read_once() {
        let t = Temp::new();
        let file = t.file("l.toml", "log_format = \"json\"\nelection = \"first\"\n");
        let env = env(&[]);
        let args: Vec<OsString> = ["leaderrun", "--config", &file, "--", "true"]
            .iter()
            .map(OsString::from)
            .collect();
        // The log format is looked up in it before the flags are parsed...
        assert_eq!(flags::log_format_hint(&args, &env, true), LogFormat::Json);
        // ...and what was read then is what the settings come from.
        std::fs::write(&file, "election = \"second\"\n").unwrap();
        let c = Config::load(flags::parse(&args).unwrap(), &env).unwrap();
        assert_eq!(
            (c.election.as_str(), c.log_format),
            ("first", LogFormat::Json)
        );
        // Another process (another Env) reads it anew.
        let c = Config::load(flags::parse(&args).unwrap(), &self::env(&[])).unwrap();
        assert_eq!(c.election, "second");
    }

    #[test]
    fn election_names_that_hold_leaderruns_own_keys_are_refused() {
        let t = Temp::new();
        for name in ["leaderrun.runs", "leaderrun.resign/web", "web/"] {
            let e = usage(&["--election", name, "--", "true"], &[]);
            assert!(e.contains("--election"), "{e}");
            let e = usage(&["--", "true"], &[("LEADERRUN_ELECTION", name)]);
            assert!(
                e.starts_with(&format!("LEADERRUN_ELECTION={name}: ")),
                "{e}"
            );
            let file = t.file("e.toml", &format!("election = \"{name}\""));
            let e = usage(&["--config", &file, "--", "true"], &[]);
            assert!(e.starts_with(&format!("{file}:1: election: ")), "{e}");
            let lf = flags::parse_leader(["leader"]).unwrap();
            let e = LeaderConfig::load(lf, &env(&[("LEADERRUN_ELECTION", name)])).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{e}");
            assert!(flags::parse_resign(["resign", "--election", name]).is_err());
        }
        // The default, the command's file name, too.
        let runs = t.0.join("leaderrun.runs");
        std::fs::write(&runs, "#!/bin/sh\n").unwrap();
        t.chmod("leaderrun.runs", 0o755);
        let e = usage(&["--", &runs.display().to_string()], &[]);
        assert!(
            e.contains("default election") && e.contains("keys of its own"),
            "{e}"
        );
    }
}
