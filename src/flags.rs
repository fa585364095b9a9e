//! The command line: each flag documented where it is defined, and the value parsers that
//! flags, environment variables and defaults share.
//!
//! clap reads the flags only (no `env=`): every field is optional here, so that
//! [`crate::config`] can layer the flags over the environment and the defaults. The help text
//! gets each option's environment variable and default from [`crate::config::OPTIONS`].

use crate::config::{
    Env, LogFormat, LogLevel, OnExit, Opt, Settings, Source, Sourced, DEFAULT_PORT, ELECTION,
    ENDPOINTS, ID, LOG_FORMAT, LOG_LEVEL, MAX_DURATION, MAX_ENDPOINTS, NO_WAIT, NO_WAIT_TIMEOUT,
    ON_EXIT, OPTIONS, PARENT_KEY_VAR, RESTART_LIMIT, RESTART_WINDOW, RUN_ID, RUN_ID_TTL,
    STOP_SIGNAL, STOP_TIMEOUT, TTL, WAIT_TIMEOUT,
};
use crate::error::{
    Error, EXIT_ETCD, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, EXIT_NOT_LEADING, EXIT_NO_LEADER,
    EXIT_USAGE,
};
use crate::leader::Format;
use clap::{Arg, CommandFactory, FromArgMatches, Parser, ValueEnum};
use nix::sys::signal::Signal;
use std::ffi::OsString;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// Run COMMAND on exactly one host at a time, chosen by etcd leader election.
///
/// Every option can also be set in the environment as LEADERRUN_<OPTION>; a flag wins over the
/// environment. In the environment of leaderrun's own command, LEADERRUN_ELECTION and
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

    /// Lease TTL in seconds (1 to 9000000000): how long a silent leader keeps leadership.
    /// Failover after a crash or a cut link takes about this long; a graceful stop hands over
    /// at once.
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true, value_parser = ttl)]
    pub ttl: Option<u64>,

    /// Signal sent to the child's process group to stop it (TERM, INT, HUP, QUIT, USR1, ...).
    #[arg(long, value_name = "SIGNAL", value_parser = signal)]
    pub stop_signal: Option<Signal>,

    /// Time between the stop signal and SIGKILL (500ms, 3s, ...). Default 3s, shrunk to fit a
    /// small --ttl; an explicit value that does not fit the TTL is refused.
    #[arg(
        long,
        value_name = "DURATION",
        allow_negative_numbers = true,
        value_parser = duration
    )]
    pub stop_timeout: Option<Duration>,

    /// What to do when the child exits on its own while leading.
    #[arg(long, value_name = "ACTION", value_enum, ignore_case = true)]
    pub on_exit: Option<OnExit>,

    /// With --on-exit restart: after this many exits within --restart-window, stop restarting,
    /// resign and campaign again, so that a standby gets its chance (at least 1).
    #[arg(long, value_name = "COUNT", allow_negative_numbers = true, value_parser = restart_limit)]
    pub restart_limit: Option<u32>,

    /// With --on-exit restart: the window in which --restart-limit exits count.
    #[arg(
        long,
        value_name = "DURATION",
        allow_negative_numbers = true,
        value_parser = duration
    )]
    pub restart_window: Option<Duration>,

    /// When another candidate leads, exit at once with status 75 instead of waiting. Also
    /// gives up with 75 when not leading after --wait-timeout (default below), for instance
    /// while etcd cannot be reached, so that a cron job always ends.
    #[arg(long)]
    pub no_wait: bool,

    /// Give up with status 75 when not leading after this long (counted from start-up).
    #[arg(
        long,
        value_name = "DURATION",
        allow_negative_numbers = true,
        value_parser = wait_timeout
    )]
    pub wait_timeout: Option<Duration>,

    /// Run at most once per ID across all hosts: the winner records the ID in etcd before it
    /// starts the command; a host that finds it recorded exits 0 without running. Not with
    /// --on-exit restart or recampaign, which start the command again.
    #[arg(long, value_name = "ID", value_parser = text)]
    pub run_id: Option<String>,

    /// How long a --run-id record is kept in etcd (1s to 9000000000s).
    #[arg(
        long,
        value_name = "DURATION",
        allow_negative_numbers = true,
        value_parser = run_id_ttl
    )]
    pub run_id_ttl: Option<Duration>,

    /// Log format on stderr (the final line of a failure too).
    #[arg(long, value_name = "FORMAT", value_enum, ignore_case = true)]
    pub log_format: Option<LogFormat>,

    /// Log level.
    #[arg(long, value_name = "LEVEL", value_enum, ignore_case = true)]
    pub log_level: Option<LogLevel>,

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
pub struct EtcdFlags {
    /// etcd endpoints, comma-separated: host:port, http://host:port, [ipv6]:port; the port
    /// defaults to 2379. Duplicates count once; at most 64.
    #[arg(long, value_name = "ENDPOINTS", value_parser = endpoint_list)]
    pub endpoints: Vec<EndpointList>,
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
}

fn flag<T>(opt: &'static Opt, value: Option<T>) -> Option<Sourced<T>> {
    value.map(|value| Sourced {
        value,
        from: Source::Flag(opt),
    })
}

impl EtcdFlags {
    /// Every `--endpoints` flag together, duplicates removed, the limit checked.
    fn endpoints(self) -> Result<Option<Sourced<Vec<String>>>, Error> {
        if self.endpoints.is_empty() {
            return Ok(None);
        }
        let all: Vec<String> = self.endpoints.into_iter().flat_map(|l| l.0).collect();
        let list = distinct(all).map_err(|e| Error::Usage(format!("--endpoints: {e}")))?;
        Ok(flag(&ENDPOINTS, Some(list)))
    }
}

impl Flags {
    /// The flags layer.
    pub fn settings(self) -> Result<Settings, Error> {
        Ok(Settings {
            endpoints: self.etcd.endpoints()?,
            election: flag(&ELECTION, self.election),
            id: flag(&ID, self.id),
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
            log_format: flag(&LOG_FORMAT, self.log_format),
            log_level: flag(&LOG_LEVEL, self.log_level),
        })
    }
}

impl LeaderFlags {
    /// The flags layer (the settings `leaderrun leader` shares with `leaderrun`).
    pub fn settings(self) -> Result<Settings, Error> {
        Ok(Settings {
            endpoints: self.etcd.endpoints()?,
            election: flag(&ELECTION, self.election),
            ..Settings::default()
        })
    }
}

/// `leaderrun`'s command line definition, its help annotated from the options table.
pub fn command() -> clap::Command {
    let after = format!(
        "Environment: each option can also be set as its LEADERRUN_<OPTION> variable, shown \
         as [env: ...]; a flag wins over a variable, an empty variable counts as unset, and \
         words are read in any case. The child of a leaderrun gets LEADERRUN_ELECTION, \
         LEADERRUN_ID, {PARENT_KEY_VAR}, LEADERRUN_REVISION and LEADERRUN_LEASE; a leaderrun \
         started where {PARENT_KEY_VAR} is set does not read LEADERRUN_ELECTION and \
         LEADERRUN_ID (they are its parent's).\n\n\
         Exit status: the command's, or 128+N when signal N killed it; {EXIT_USAGE} bad usage \
         (nothing started); {EXIT_NOT_LEADING} not leading (--no-wait, --wait-timeout); \
         {EXIT_ETCD} etcd refused us; {EXIT_NOT_EXECUTABLE} and {EXIT_NOT_FOUND} COMMAND not \
         executable or not found."
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
        "Exit status: 0 somebody leads; {EXIT_NO_LEADER} nobody leads, or the first key under \
         NAME/ is not a live candidate of NAME (a key without a lease, a candidate of a nested \
         election NAME/...): it blocks the election, and is printed as `blocked by key=...`; \
         {EXIT_USAGE} bad usage; {EXIT_ETCD} etcd cannot be read, or stdout was closed."
    ))
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

/// Each option's help ends with its environment variable and its default.
fn annotate(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|a| {
        let Some(opt) = OPTIONS.iter().find(|o| a.get_long() == Some(o.long)) else {
            return a;
        };
        let mut note = format!("[env: {}]", opt.env);
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
/// `--log-format` flag if given (before COMMAND), else LEADERRUN_LOG_FORMAT, else text. A value
/// that does not parse gives text (its error is then reported as text).
pub fn log_format_hint(args: &[OsString], env: &Env) -> LogFormat {
    let cmd = command();
    let mut args = args.iter().skip(1).map(|a| a.to_string_lossy());
    let flag = format!("--{}", LOG_FORMAT.long);
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
    match given {
        Some(v) => value_enum::<LogFormat>(&v).unwrap_or(LogFormat::Text),
        None => env
            .read(&LOG_FORMAT, value_enum::<LogFormat>)
            .ok()
            .flatten()
            .map_or(LogFormat::Text, |f| f.value),
    }
}

// The value parsers: one per kind of value, for flags, variables and defaults alike.

/// A name or id: not blank, no control characters (they could forge log lines or split
/// `leaderrun leader`'s output).
pub fn text(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("must not be empty or blank".into());
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

/// --wait-timeout: more than nothing (not waiting at all is --no-wait).
pub fn wait_timeout(s: &str) -> Result<Duration, String> {
    match duration(s)? {
        Duration::ZERO => {
            Err("must be more than 0 (to not wait for another leader: --no-wait)".into())
        }
        d => Ok(d),
    }
}

/// --run-id-ttl: a lease TTL, at least one second.
pub fn run_id_ttl(s: &str) -> Result<Duration, String> {
    match duration(s)? {
        d if d < Duration::from_secs(1) => Err("must be at least 1s".into()),
        d => Ok(d),
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

fn endpoint_list(s: &str) -> Result<EndpointList, String> {
    endpoints(s).map(EndpointList)
}

/// A comma-separated list of endpoints, normalized, duplicates removed, at most
/// [`MAX_ENDPOINTS`].
pub fn endpoints(s: &str) -> Result<Vec<String>, String> {
    let list = s.split(',').map(endpoint).collect::<Result<Vec<_>, _>>()?;
    distinct(list)
}

fn distinct(list: Vec<String>) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for e in list {
        if !out.contains(&e) {
            out.push(e);
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

/// One endpoint: `[http://]host[:port]`, host a name, an IPv4 address or an IPv6 address in
/// brackets, port 1 to 65535 (default [`DEFAULT_PORT`]). Normalized to `http://host:port`.
pub fn endpoint(s: &str) -> Result<String, String> {
    let e = s.trim();
    let bad = |why: &str| format!("bad endpoint '{}': {why}", crate::log::escape_controls(e));
    if e.is_empty() {
        return Err("empty entry in the endpoint list".into());
    }
    let rest = match e.split_once("://") {
        None => e,
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
            return Err(bad(
                "https:// needs TLS, which leaderrun does not support; use http://",
            ))
        }
        Some(_) => return Err(bad("the scheme must be http:// (or none)")),
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
    Ok(format!("http://{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_checked_and_normalized() {
        for (given, want) in [
            ("127.0.0.1:2379", "http://127.0.0.1:2379"),
            ("HTTP://Etcd-1.example:1/", "http://etcd-1.example:1"),
            ("etcd", "http://etcd:2379"),
            (" [::1]:2380 ", "http://[::1]:2380"),
            ("http://[0:0::1]", "http://[::1]:2379"),
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
            "https://host:2379",
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
    }

    #[test]
    fn help_names_each_variable_and_default() {
        let help = command().render_long_help().to_string();
        for o in OPTIONS {
            assert!(help.contains(&format!("[env: {}]", o.env)), "{}", o.env);
        }
        assert!(help.contains("[default: 10]"), "{help}");
        assert!(help.contains("1m"), "{help}");
        let help = leader_command().render_long_help().to_string();
        assert!(help.contains("[env: LEADERRUN_ENDPOINTS]"), "{help}");
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
