//! The command line, made from the options table ([`crate::config::OPTIONS`]): each flag's
//! argument, help and notes come from its entry there. Also the value parsers that flags,
//! environment variables, the configuration file and defaults share.
//!
//! clap reads the flags only (no `env=`), none of them with a default but a subcommand's own
//! flags (which no other layer sets), so that [`crate::config`] can layer the flags over the
//! environment, the configuration file and the defaults. The help of each option ends with its
//! environment variable, configuration-file key and default.

use crate::config::file::ConfigFile;
use crate::config::{
    value_parser, Cmd, Env, Kind, LogFormat, Opt, Reader, Secret, Settings, User, CONFIG,
    DEFAULT_PORT, LOG_FORMAT, MAX_DURATION, MAX_ENDPOINTS, NO_WAIT, NO_WAIT_TIMEOUT, OPTIONS,
    PARENT_KEY_VAR, PASSWORD,
};
use crate::error::{
    Error, EXIT_ETCD, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, EXIT_NOT_LEADING, EXIT_NO_LEADER,
    EXIT_USAGE,
};
use clap::{Arg, ArgAction, ArgMatches, ValueEnum};
use nix::sys::signal::Signal;
use std::ffi::OsString;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// The id of the command to run (main command only), after the options.
const COMMAND: &str = "command";

/// A command line as clap read it: the flags layer of one command.
#[derive(Debug)]
pub struct Flags {
    cmd: Cmd,
    matches: ArgMatches,
}

impl Flags {
    /// The command these flags are of.
    pub fn cmd(&self) -> Cmd {
        self.cmd
    }

    /// The flags layer: the `wanted` settings given as flags.
    pub fn settings(&self, wanted: &[&'static Opt]) -> Result<Settings, Error> {
        Settings::from_flags(&self.matches, wanted)
    }

    /// `--config`, if given.
    pub fn config(&self) -> Option<PathBuf> {
        self.matches
            .try_get_one::<PathBuf>(CONFIG.id)
            .ok()?
            .cloned()
    }

    /// The command to run and its arguments (empty when none is given).
    pub fn command(&self) -> Vec<OsString> {
        match self.matches.try_get_many::<OsString>(COMMAND) {
            Ok(Some(words)) => words.cloned().collect(),
            _ => Vec::new(),
        }
    }
}

/// A command's arguments, from the options it takes, in the table's order.
fn options_of(cmd: clap::Command, of: Cmd) -> clap::Command {
    let args = OPTIONS
        .iter()
        .filter(|o| o.is_flag() && o.taken_by(of))
        .map(|o| arg(o, of));
    cmd.args(args)
}

/// `opt`'s argument on `cmd`'s command line.
fn arg(opt: &'static Opt, cmd: Cmd) -> Arg {
    let a = Arg::new(opt.id).long(opt.long);
    let a = match opt.kind {
        Kind::Switch => a.action(ArgAction::SetTrue),
        Kind::List => a.action(ArgAction::Append),
        _ => a.action(ArgAction::Set),
    };
    let a = match opt.takes_value() {
        // A value that looks like a negative number is taken as the option's value (and
        // refused by its parser with a message that names the option).
        true => a
            .value_name(opt.value_name)
            .value_parser(value_parser(opt))
            .allow_negative_numbers(true),
        false => a,
    };
    let a = match opt.kind {
        Kind::Words => a.ignore_case(true),
        _ => a,
    };
    let (help, long_help) = doc_help(&opt.help(cmd));
    let a = a.help(help);
    let a = match long_help {
        Some(l) => a.long_help(l),
        None => a,
    };
    match opt.env {
        Some(env) => {
            // A layered setting: the layers, not clap, give its default; the help says which.
            let mut note = format!("[env: {env}]");
            if let Some(key) = opt.key {
                note.push_str(&format!(" [config: {key}]"));
            }
            if let Some(d) = opt.default.filter(|_| opt.takes_value()) {
                note.push_str(&format!(" [default: {d}]"));
            }
            append_help(a, &note)
        }
        // A subcommand's own flag: clap gives (and shows) its default.
        None => match opt.default.filter(|_| opt.takes_value()) {
            Some(d) => a.default_value(d),
            None => a,
        },
    }
}

/// The help of doc lines (`///` comments, one leading space each), as clap's derive makes it:
/// the first paragraph on one line without its final period, and the long help (all
/// paragraphs) when there is more than one.
fn doc_help(lines: &[&str]) -> (String, Option<String>) {
    let lines: Vec<&str> = lines
        .iter()
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    let paragraphs: Vec<String> = lines
        .split(|l| l.trim().is_empty())
        .filter(|p| !p.is_empty())
        .map(|p| p.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" "))
        .collect();
    let first = paragraphs.first().cloned().unwrap_or_default();
    let short = match first.strip_suffix('.') {
        Some(s) if !first.ends_with("..") => s.to_string(),
        _ => first,
    };
    let long = (paragraphs.len() > 1).then(|| paragraphs.join("\n\n"));
    (short, long)
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
         wins over a variable, which wins over the file, which wins over etcdctl's variables \
         (ETCDCTL_ENDPOINTS, ETCDCTL_CACERT, ETCDCTL_CERT, ETCDCTL_KEY, ETCDCTL_USER, and \
         ETCDCTL_PASSWORD with ETCDCTL_USER), which win over the default. Under systemd's \
         LoadCredential=etcd-password:FILE, the credential is the password file when nothing \
         else gives a password.",
        PASSWORD.env.unwrap_or_default(),
        CONFIG.env.unwrap_or_default()
    )
}

/// The help is wrapped to the terminal's width, and to this many columns at most (and when
/// stdout is no terminal).
const MAX_HELP_WIDTH: usize = 100;

/// `--version`: the package's version, and the commit it was built from when the build knew
/// it (build.rs).
pub const VERSION: &str = env!("LEADERRUN_VERSION");

/// A usage error for `word`, given where a subcommand may stand (the first argument) and no
/// subcommand's name: `leaderrun help`, `leaderrun resing`. clap's own words, its tip of a
/// similar subcommand included, from the subcommands of [`commands`]. A program to run goes
/// after `--`.
pub fn not_a_subcommand(word: &std::ffi::OsStr) -> clap::Error {
    let subcommands = commands().get_subcommands().cloned().collect::<Vec<_>>();
    let only_subcommands = clap::Command::new("leaderrun")
        .bin_name("leaderrun")
        .disable_help_subcommand(true)
        .disable_help_flag(true)
        .disable_version_flag(true)
        .subcommand_required(true)
        .subcommands(subcommands);
    match only_subcommands.try_get_matches_from([std::ffi::OsStr::new("leaderrun"), word]) {
        Err(e) => e,
        // A subcommand after all (the caller dispatches those first).
        Ok(_) => clap::Error::new(clap::error::ErrorKind::InvalidSubcommand),
    }
}

/// The names of the subcommands, for the line that lists them.
pub fn subcommand_names() -> Vec<String> {
    commands()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect()
}

/// `leaderrun`'s command line definition.
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
        CONFIG.env.unwrap_or_default()
    );
    let cmd = clap::Command::new("leaderrun")
        .bin_name("leaderrun")
        .max_term_width(MAX_HELP_WIDTH)
        .version(VERSION)
        .about(env!("CARGO_PKG_DESCRIPTION"))
        .long_about(None);
    options_of(cmd, Cmd::Main)
        .arg(
            Arg::new(COMMAND)
                .num_args(1..)
                .trailing_var_arg(true)
                .value_name("COMMAND")
                .value_parser(clap::value_parser!(OsString))
                .action(ArgAction::Append)
                .help(
                    "The command to run while leading, and its arguments (after `--`). \
                     Required, unless the configuration file names one (`command = \
                     [\"./my-server\", \"--port\", \"8080\"]`); this one wins over the file's",
                ),
        )
        .after_long_help(after)
        .mut_arg(NO_WAIT.id, |a| {
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
    let cmd = clap::Command::new("leaderrun leader")
        .bin_name("leaderrun leader")
        .max_term_width(MAX_HELP_WIDTH)
        .version(VERSION)
        .about("Print the current leader of an election (exit 0), or exit 3 when nobody leads")
        .long_about(None);
    options_of(cmd, Cmd::Leader).after_long_help(format!(
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
    let cmd = clap::Command::new("leaderrun resign")
        .bin_name("leaderrun resign")
        .max_term_width(MAX_HELP_WIDTH)
        .version(VERSION)
        .about(
            "Ask the leader of an election to hand over: it stops its command, resigns and \
             campaigns again behind the others, so that a standby takes over at once",
        )
        .long_about(None);
    options_of(cmd, Cmd::Resign).after_long_help(format!(
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

/// `leaderrun list`'s command line definition.
pub fn list_command() -> clap::Command {
    let cmd = clap::Command::new("leaderrun list")
        .bin_name("leaderrun list")
        .max_term_width(MAX_HELP_WIDTH)
        .version(VERSION)
        .about("List the candidates of an election: role, id, priority, key, lease TTL left")
        .long_about(None);
    options_of(cmd, Cmd::List).after_long_help(format!(
        "{}\n\n\
         One line per key under NAME/, in the order of the queue: the leader (or, with \
         --holders N, holder k of N), then the standbys. What a candidate publishes \
         (--priority, --preempt, --hot-standby, when it joined) is read from \
         leaderrun.candidates/NAME/; a candidate that publishes nothing (no --priority, an \
         etcdctl elect) shows priority 0. Keys that are not candidates are listed as what they \
         are (no lease, nested election, foreign).\n\n\
         Exit status: 0 somebody leads; {EXIT_NO_LEADER} nobody leads; {EXIT_USAGE} bad usage; \
         {EXIT_ETCD} etcd cannot be read.",
        settings_help()
    ))
}

/// `leaderrun history`'s command line definition.
pub fn history_command() -> clap::Command {
    let cmd = clap::Command::new("leaderrun history")
        .bin_name("leaderrun history")
        .max_term_width(MAX_HELP_WIDTH)
        .version(VERSION)
        .about("List the last terms of an election, newest first: who led, when, and why it ended")
        .long_about(None);
    options_of(cmd, Cmd::History).after_long_help(format!(
        "{}\n\n\
         Each leader records its term under leaderrun.history/NAME/ (the last 100 are kept): \
         its id, fencing token, start, end, and why it ended; a term whose leader could not \
         say (a crash, a cut-off host) is closed by the next leader as `lost`. Times are each \
         leader's own clock.\n\n\
         Exit status: 0 (an empty history too); {EXIT_USAGE} bad usage; {EXIT_ETCD} etcd cannot \
         be read.",
        settings_help()
    ))
}

/// Every command, for the man pages and the shell completions: `leaderrun` with its
/// subcommands attached. For documentation only: `cli` dispatches a subcommand on the first
/// word and parses it with its own definition. A new subcommand is one line here.
pub fn commands() -> clap::Command {
    command()
        .subcommand(leader_command().name("leader"))
        .subcommand(resign_command().name("resign"))
        .subcommand(list_command().name("list"))
        .subcommand(history_command().name("history"))
        // As on the command line: a subcommand takes the place of COMMAND.
        .args_conflicts_with_subcommands(true)
        .subcommand_negates_reqs(true)
}

/// Parse `cmd`'s command line with its definition `def` (the first item is the program name,
/// or the subcommand's).
fn parse_as<I, T>(cmd: Cmd, def: clap::Command, args: I) -> Result<Flags, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = def.try_get_matches_from(args)?;
    Ok(Flags { cmd, matches })
}

/// Parse `leaderrun`'s flags (the first item is the program name).
pub fn parse<I, T>(args: I) -> Result<Flags, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    parse_as(Cmd::Main, command(), args)
}

/// Parse `leaderrun leader`'s flags (the first item is `leader`).
pub fn parse_leader<I, T>(args: I) -> Result<Flags, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    parse_as(Cmd::Leader, leader_command(), args)
}

/// Parse `leaderrun resign`'s flags (the first item is `resign`).
pub fn parse_resign<I, T>(args: I) -> Result<Flags, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    parse_as(Cmd::Resign, resign_command(), args)
}

/// Parse `leaderrun list`'s flags (the first item is `list`).
pub fn parse_list<I, T>(args: I) -> Result<Flags, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    parse_as(Cmd::List, list_command(), args)
}

/// Parse `leaderrun history`'s flags (the first item is `history`).
pub fn parse_history<I, T>(args: I) -> Result<Flags, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    parse_as(Cmd::History, history_command(), args)
}

/// The log format to report a failure in, found before the command line is validated: the
/// `--log-format` flag if given (before COMMAND), else LEADERRUN_LOG_FORMAT, else (when
/// `read_file`) the configuration file's `log_format`, else text. A value that does not parse,
/// or a file that cannot be read, gives text (its error is then reported as text).
pub fn log_format_hint(args: &[OsString], env: &Env, read_file: bool) -> LogFormat {
    let parse = value_enum::<LogFormat>;
    let own = scan(args);
    if let Some(v) = given(&own, &LOG_FORMAT) {
        return v.and_then(|v| parse(&v).ok()).unwrap_or(LogFormat::Text);
    }
    let from_env = env.read(&LOG_FORMAT, parse);
    let from_file = || {
        let config = given(&own, &CONFIG).flatten().map(PathBuf::from);
        let file = ConfigFile::find(config, env).ok()??;
        file.read(&LOG_FORMAT, parse).ok()?
    };
    match from_env {
        Ok(Some(f)) => f.value,
        Ok(None) if read_file => from_file().map_or(LogFormat::Text, |f| f.value),
        Ok(None) | Err(_) => LogFormat::Text,
    }
}

/// The value of the last `opt` flag of `own` (None inside when it lacks one); None when not
/// given.
fn given(own: &[(String, Option<String>)], opt: &Opt) -> Option<Option<String>> {
    let flag = format!("--{}", opt.long);
    own.iter()
        .rev()
        .find(|(name, _)| *name == flag)
        .map(|(_, v)| v.clone())
}

/// `leaderrun`'s own flags among `args` (those before COMMAND; the first item is the program
/// name), each with its value: the one scanner of the command line before clap reads it,
/// from the options table alone (whether a flag takes a value), so that it needs neither the
/// argument parser's definitions nor much stack.
pub fn scan(args: &[OsString]) -> Vec<(String, Option<String>)> {
    let mut args = args.iter().skip(1).map(|a| a.to_string_lossy());
    let mut own = Vec::new();
    while let Some(arg) = args.next() {
        if arg == "--" || !arg.starts_with('-') || arg == "-" {
            break; // COMMAND starts here: its arguments are not ours.
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (arg.to_string(), None),
        };
        let takes_value = name.strip_prefix("--").is_some_and(|long| {
            OPTIONS
                .iter()
                .any(|o| o.long == long && o.taken_by(Cmd::Main) && o.takes_value())
        });
        let value = match inline {
            Some(v) => Some(v),
            None if takes_value => args.next().map(|v| v.to_string()),
            None => None,
        };
        own.push((name, value));
    }
    own
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

/// An election name: [`text`], and neither a prefix of leaderrun's own keys nor one ending in
/// `/`. Every key under `NAME/` takes part in the election, so an election at or under the
/// root of leaderrun's own keys (run records, step-down requests, holders' counts) would take
/// them for candidates; and `web/` would campaign under `web//`, a nested election of `web`
/// that blocks it.
pub fn election(s: &str) -> Result<String, String> {
    let name = text(s)?;
    if name.ends_with('/') {
        return Err("must not end with '/': the candidates' keys are NAME/LEASE".into());
    }
    if let Some(root) = own_key_roots()
        .into_iter()
        .find(|r| name == *r || name.starts_with(&format!("{r}/")))
    {
        return Err(format!(
            "{root}/ is where leaderrun keeps keys of its own, which an election there would \
             take for candidates: choose another name"
        ));
    }
    Ok(name)
}

/// The first segment of each of leaderrun's own key prefixes, as the election module writes
/// them (`leaderrun.runs`, `leaderrun.resign`, `leaderrun.holders`, `leaderrun.candidates`,
/// `leaderrun.history`).
fn own_key_roots() -> Vec<String> {
    use crate::election::{history, holders, priority, run_records, step_down};
    let keys = [
        run_records::run_key("x", "x"),
        step_down::request_key("x"),
        holders::prefix("x"),
        priority::prefix("x"),
        history::prefix("x"),
    ];
    keys.iter()
        .filter_map(|k| k.split('/').next())
        .map(str::to_string)
        .collect()
}

/// A path, not empty (as clap's own parser reads `--config`).
pub fn path(s: &str) -> Result<PathBuf, String> {
    match s.is_empty() {
        true => Err("must not be empty".into()),
        false => Ok(PathBuf::from(s)),
    }
}

/// A lease TTL: whole seconds, 1 to etcd's maximum, as a number (`10`) or a duration (`10s`,
/// `1m`). etcd's TTLs are whole seconds: a duration with a fraction of one (`1.5s`,
/// `1500ms`) is refused, naming the whole seconds around it.
pub fn ttl(s: &str) -> Result<u64, String> {
    let max = MAX_DURATION.as_secs();
    let t = s.trim();
    let range = || {
        format!(
            "must be a whole number of seconds from 1 to {max} (10 or 10s; etcd's maximum lease \
             TTL)"
        )
    };
    let secs = match t.parse::<u64>() {
        Ok(secs) => secs,
        // A bare number that is not whole (1.5, -1) is not read as a duration.
        Err(_) if t.starts_with(|c: char| c.is_ascii_digit()) && !t.ends_with(char::is_numeric) => {
            match humantime::parse_duration(t) {
                Ok(d) if d.subsec_nanos() != 0 => {
                    let around = match d.as_secs() {
                        0 => "1s".to_string(),
                        n => format!("{n}s or {}s", n + 1),
                    };
                    return Err(format!(
                        "{} is not a whole number of seconds: etcd's lease TTLs are whole \
                         seconds (give {around})",
                        crate::log::shown_value(t),
                    ));
                }
                Ok(d) => d.as_secs(),
                Err(_) => return Err(range()),
            }
        }
        Err(_) => return Err(range()),
    };
    match secs {
        1.. if secs <= max => Ok(secs),
        _ => Err(range()),
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
/// resolve: the address is bound before anything starts, and must mean one thing); or `:PORT`,
/// every address: `[::]:PORT`, which takes IPv4 too ([`crate::status::http::bind`]).
pub fn status_addr(s: &str) -> Result<SocketAddr, String> {
    let t = s.trim();
    let shown = crate::log::escape_controls(t);
    if let Some(port) = t.strip_prefix(':').filter(|p| !p.contains(':')) {
        return status_addr(&format!("[::]:{port}"))
            .map_err(|_| format!("'{shown}': the port must be a number from 1 to 65535"));
    }
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

pub fn priority(s: &str) -> Result<u32, String> {
    let max = crate::election::priority::MAX_PRIORITY;
    match s.trim().parse::<u32>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(format!("must be a whole number from 0 to {max}")),
    }
}

/// `never`, or a duration (at least a second: a shorter one would let leadership bounce with
/// every keepalive).
pub fn preempt(s: &str) -> Result<Option<Duration>, String> {
    if s.trim().eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    match duration(s) {
        Ok(d) if d >= Duration::from_secs(1) => Ok(Some(d)),
        Ok(_) => Err("must be `never` or a duration of at least 1s".into()),
        Err(e) => Err(format!("must be `never` or a duration ({e})")),
    }
}

pub fn history_limit(s: &str) -> Result<u32, String> {
    let max = crate::election::history::KEPT;
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
    use crate::config::{OnExit, ELECTION, FORMAT, HOLDERS, ID, TIMEOUT, TTL, WATCH};

    #[test]
    fn status_addr_is_an_ip_and_a_port() {
        for (given, want) in [
            ("127.0.0.1:9110", "127.0.0.1:9110"),
            (" 0.0.0.0:1 ", "0.0.0.0:1"),
            ("[::1]:9110", "[::1]:9110"),
            ("[0:0::1]:65535", "[::1]:65535"),
            // Every address: IPv6's, which takes IPv4 too.
            (":9110", "[::]:9110"),
            (" :1", "[::]:1"),
        ] {
            assert_eq!(status_addr(given).unwrap().to_string(), want, "{given}");
        }
        for bad in [
            "",
            "9110",
            ":",
            ":0",
            ":x",
            "::9110",
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
        for (given, secs) in [
            ("10", 10),
            ("10s", 10),
            (" 3s ", 3),
            ("1m", 60),
            ("2000ms", 2),
        ] {
            assert_eq!(ttl(given), Ok(secs), "{given}");
        }
        for part in ["1.5s", "1500ms", "999ms", "10s 1ms"] {
            let e = ttl(part).unwrap_err();
            assert!(
                e.contains("whole seconds") && e.contains(part),
                "{part}: {e}"
            );
        }
        assert!(ttl("1500ms").unwrap_err().contains("give 1s or 2s"));
        assert!(ttl("999ms").unwrap_err().ends_with("(give 1s)"));
        for bad in [
            "0",
            "-1",
            "9000000001",
            "18446744073709551616",
            "ten",
            "1.5",
            "0s",
            "-1s",
            "s",
            "",
            "9000000001s",
            "300 years",
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
        for (cmd, mut def) in [
            (Cmd::Main, command()),
            (Cmd::Leader, leader_command()),
            (Cmd::Resign, resign_command()),
        ] {
            // Wrapped to at most 100 columns (no terminal here), every line.
            let wrapped = def.render_long_help().to_string();
            let long = wrapped.lines().find(|l| l.chars().count() > MAX_HELP_WIDTH);
            assert_eq!(long, None, "{cmd:?}");
            let usage = def.render_usage().to_string();
            let name = format!("Usage: {}", def.get_name());
            assert!(usage.starts_with(&name), "{usage}");
            // Unwrapped, for the notes' words.
            let mut def = def.term_width(0);
            let help = def.render_long_help().to_string();
            for o in OPTIONS.iter().filter(|o| o.is_flag()) {
                let flag = format!("--{}", o.long);
                let listed = help.lines().any(|l| {
                    let rest = l.trim().strip_prefix(&flag);
                    rest.is_some_and(|r| r.is_empty() || r.starts_with(' '))
                });
                assert_eq!(listed, o.taken_by(cmd), "{cmd:?} {flag}");
                if !o.taken_by(cmd) {
                    continue;
                }
                if let Some(env) = o.env {
                    assert!(help.contains(&format!("[env: {env}]")), "{cmd:?} {env}");
                }
                if let Some(key) = o.key {
                    assert!(help.contains(&format!("[config: {key}]")), "{cmd:?} {key}");
                }
            }
            // The password has a variable and no flag.
            assert!(help.contains("LEADERRUN_PASSWORD,"), "{help}");
            assert!(!help.contains("[config: password]"), "{help}");
        }
        let help = command().term_width(0).render_long_help().to_string();
        assert!(help.contains("[default: 10]"), "{help}");
        assert!(help.contains("1m"), "{help}");
        // Per command: its own help of a shared option, and a subcommand's flag's own default.
        let help = leader_command()
            .term_width(0)
            .render_long_help()
            .to_string();
        assert!(help.contains("The election to ask about ["), "{help}");
        assert!(help.contains("[default: text]"), "{help}");
        let help = resign_command()
            .term_width(0)
            .render_long_help()
            .to_string();
        assert!(help.contains("step down ["), "{help}");
        assert!(help.contains("[default: 30s]"), "{help}");
    }

    #[test]
    fn each_command_takes_its_options() {
        let takes = |args: &[&str], parse: fn(Vec<OsString>) -> Result<Flags, clap::Error>| {
            parse(args.iter().map(OsString::from).collect()).is_ok()
        };
        let main = |a| parse(a);
        let leader = |a| parse_leader(a);
        let resign = |a| parse_resign(a);
        assert!(takes(&["l", "--ttl", "3", "--", "x"], main));
        assert!(!takes(&["leader", "--ttl", "3"], leader));
        assert!(!takes(&["resign", "--holders", "3"], resign));
        assert!(takes(&["leader", "--holders", "3", "--watch"], leader));
        assert!(!takes(&["l", "--watch", "--", "x"], main));
        assert!(!takes(&["l", "--format", "json", "--", "x"], main));
        assert!(takes(
            &["resign", "--timeout", "2s", "--format", "JSON"],
            resign
        ));
        assert!(!takes(&["l", "--password", "x", "--", "x"], main));
        for o in [&ELECTION, &CONFIG, &PASSWORD] {
            assert!(
                o.taken_by(Cmd::Leader) && o.taken_by(Cmd::Resign),
                "{}",
                o.long
            );
        }
        assert!(!ID.taken_by(Cmd::Leader) && !TTL.taken_by(Cmd::Resign));
        assert!(HOLDERS.taken_by(Cmd::Leader) && !HOLDERS.taken_by(Cmd::Resign));
        assert!(!TIMEOUT.taken_by(Cmd::Main) && !WATCH.taken_by(Cmd::Resign));
        assert!(!FORMAT.taken_by(Cmd::Main));
    }

    #[test]
    fn doc_comments_become_help_as_derive_makes_it() {
        assert_eq!(doc_help(&[" One line."]), ("One line".into(), None));
        assert_eq!(doc_help(&[" Etc..."]), ("Etc...".into(), None));
        assert_eq!(
            doc_help(&[" First", " line.", "", " Second."]),
            ("First line".into(), Some("First line.\n\nSecond.".into()))
        );
    }

    #[test]
    fn election_names_stay_clear_of_leaderruns_own_keys() {
        assert_eq!(election("web").as_deref(), Ok("web"));
        for ok in [
            "leaderrun",
            "leaderrun.runsx",
            "jobs/nightly",
            "x/leaderrun.runs",
        ] {
            assert!(election(ok).is_ok(), "{ok}");
        }
        for bad in [
            "leaderrun.runs",
            "leaderrun.runs/web",
            "leaderrun.resign",
            "leaderrun.resign/web",
            "leaderrun.holders/web",
            "leaderrun.candidates/web",
            "leaderrun.history",
        ] {
            let e = election(bad).unwrap_err();
            assert!(e.contains("keys of its own"), "{bad}: {e}");
            assert!(!e.contains("  "), "{e}");
        }
        for bad in ["web/", "/"] {
            let e = election(bad).unwrap_err();
            assert!(e.contains("must not end with '/'"), "{bad}: {e}");
        }
        assert!(election("").is_err());
    }

    #[test]
    fn the_log_format_is_found_before_validation() {
        let hint = |args: &[&str], vars: &[(&str, &str)]| {
            let args: Vec<OsString> = args.iter().map(OsString::from).collect();
            let env = Env::from_pairs(vars.iter().map(|(k, v)| (k.into(), v.into())));
            log_format_hint(&args, &env, true)
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

    #[test]
    fn the_scanner_knows_from_the_table_which_flags_take_a_value() {
        let own = |args: &[&str]| {
            let args: Vec<OsString> = args.iter().map(OsString::from).collect();
            scan(&args)
        };
        let pair = |n: &str, v: Option<&str>| (n.to_string(), v.map(str::to_string));
        assert_eq!(
            own(&[
                "l",
                "--no-wait",
                "--config",
                "a.toml",
                "--ttl=3",
                "x",
                "--id",
                "y"
            ]),
            [
                pair("--no-wait", None),
                pair("--config", Some("a.toml")),
                pair("--ttl", Some("3"))
            ]
        );
        // A switch takes no value: what follows it is the command.
        assert_eq!(own(&["l", "--no-wait", "json"]), [pair("--no-wait", None)]);
        // A flag that is no option of leaderrun's (a subcommand's, a typo) takes none either.
        assert_eq!(
            own(&["l", "--watch", "--log-format", "json"]),
            [pair("--watch", None), pair("--log-format", Some("json"))]
        );
        assert_eq!(own(&["l", "--ttl"]), [pair("--ttl", None)]);
        // The stack error's reading of the same: the variable, and no file.
        let env = Env::from_pairs([("LEADERRUN_LOG_FORMAT".into(), "JSON".into())]);
        let args: Vec<OsString> = ["l", "x"].iter().map(OsString::from).collect();
        assert_eq!(log_format_hint(&args, &env, false), LogFormat::Json);
    }
}
