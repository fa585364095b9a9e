//! From argv to exit status: parse, validate, set up logging, run the supervisor.
//!
//! Bad input ends here with one line (text, or JSON with `--log-format json`) and status 2,
//! before anything is started or etcd contacted.

pub mod generate;
pub mod history;
pub mod leader;
pub mod list;
pub mod resign;

use crate::config::flags;
use crate::config::{Config, Env, LeaderConfig, LogFormat, ResignConfig};
use crate::error::Error;
use crate::lease::timing;
use crate::log;
use crate::process::guardian::Guardian;
use crate::process::limits;
use crate::status::http;
use crate::status::notify::Notifier;
use crate::status::Status;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use std::error::Error as _;
use std::ffi::OsString;
use std::sync::Arc;

/// Everything `main` does; returns the exit status once the log lines still queued are
/// written (for up to [`log::FLUSH_BOUND`]).
pub fn main(args: impl IntoIterator<Item = OsString>) -> u8 {
    let args: Vec<OsString> = args.into_iter().collect();
    // First, from a small frame: `run`'s own frame, and the argument parsing, need more stack
    // than an absurd `ulimit -s` leaves.
    let code = match limits::stack() {
        Ok(()) => run(args),
        Err(e) => too_little_stack(&args, &e),
    };
    log::flush(log::FLUSH_BOUND);
    code
}

/// The stack error, in JSON when `--log-format json` is among the arguments before `--`, or
/// LEADERRUN_LOG_FORMAT says json. The configuration file is not read: that, and building the
/// argument parser's definitions, take the stack there is not (the scanner of
/// [`flags::log_format_hint`] needs neither).
#[inline(never)]
fn too_little_stack(args: &[OsString], e: &Error) -> u8 {
    fail(flags::log_format_hint(args, &Env::from_process(), false), e)
}

#[inline(never)]
fn run(args: Vec<OsString>) -> u8 {
    let env = Env::from_process();
    // `leaderrun leader ...` asks who leads, `leaderrun resign ...` asks the leader to hand
    // over; a command named `leader` or `resign` runs with `-- leader`, `-- resign`.
    match args.get(1).and_then(|a| a.to_str()) {
        Some("leader") => return leader_main(&args[1..], &env),
        Some("resign") => return resign_main(&args[1..], &env),
        Some("list") => return ask_main(&args[1..], &env, |a| flags::parse_list(a), list::run),
        Some("history") => {
            return ask_main(&args[1..], &env, |a| flags::parse_history(a), history::run)
        }
        _ => {}
    }
    // Known first, so that even a failure to parse the rest is reported in this format.
    let format = flags::log_format_hint(&args, &env, true);
    if let Some(word) = args
        .get(1)
        .filter(|a| !a.is_empty() && !a.to_string_lossy().starts_with('-'))
    {
        return fail(format, &not_a_subcommand(word));
    }
    let config = match configure(format, flags::parse(&args), |f| Config::load(f, &env)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let format = config.log_format;
    let serving = config.status_addr.map(|_| http::MAX_CONNECTIONS);
    if let Err(e) = limits::files(config.connection.endpoints.len(), serving) {
        return fail(format, &e);
    }
    log::set_context(&config.election, &config.id);
    log::init(format, config.log_level);
    warn(&config.warnings);
    for note in &config.notes {
        tracing::info!("{note}");
    }
    // SAFETY: one thread so far; the runtime is built below. The guardian revokes the lease
    // after a crash, with the same connection settings.
    let guardian = match unsafe { Guardian::start(config.connection.clone()) } {
        Ok(g) => Arc::new(g),
        Err(e) => return fail(format, &Error::io("starting the guardian process", e)),
    };
    // Forked: from now on a thread writes the logs, so that stderr never blocks the supervisor.
    log::start_writer(format);
    let result = supervise(config, guardian.clone());
    // Every other holder went with the runtime.
    if let Ok(guardian) = Arc::try_unwrap(guardian) {
        guardian.finish();
    }
    match result {
        Ok(code) => code,
        Err(e) => fail(format, &e),
    }
}

/// How long an idle blocking thread is kept: for good (see [`supervise`]).
const BLOCKING_THREAD_KEEP_ALIVE: std::time::Duration =
    std::time::Duration::from_secs(100 * 365 * 24 * 3600);

/// The supervisor on a current-thread runtime, dropped (with every task) when it returns,
/// without waiting for its blocking threads: a TLS file read on a mount that hangs must not
/// keep a leader that has stopped its child and resigned from exiting.
fn supervise(config: Config, guardian: Arc<Guardian>) -> Result<u8, Error> {
    // One thread: the child's parent-death signal is tied to the thread that forked it, and the
    // main thread lives as long as the process.
    // Blocking threads (name resolution, TLS file reads) are kept for good once made: tokio
    // panics when it must make one and cannot (the process limit reached), but only when no
    // thread is left to take the task. One made now and never retired makes that impossible.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_keep_alive(BLOCKING_THREAD_KEEP_ALIVE)
        .build()
        .map_err(|e| Error::io("starting the runtime", e))?;
    std::thread::Builder::new()
        .spawn(|| ())
        .and_then(|t| {
            t.join()
                .map_err(|_| std::io::Error::other("thread panicked"))
        })
        .map_err(|e| Error::io("starting a thread", e))?;
    drop(runtime.spawn_blocking(|| ()));
    let status = Status::default();
    // Bound before anything starts: an address that cannot be used is exit 2.
    let listener = config.status_addr.map(http::bind).transpose()?;
    let notifier = Notifier::from_env(&config.election);
    if let Some(watchdog) = notifier.as_ref().and_then(Notifier::watchdog) {
        check_watchdog(&config, watchdog);
    }
    let result = runtime.block_on(async {
        // On the supervisor's own thread: its watchdog pings stop when that thread stops.
        let notifying =
            notifier.map(|n| tokio::spawn(n.run(status.subscribe(), status.subscribe_health())));
        // Also on that thread: an answer proves the thread that stops the child runs.
        let (roles, health) = (status.subscribe(), status.subscribe_health());
        let lease = status.subscribe_lease();
        let context = || {
            let mut ctx = http::Context::new(
                roles,
                health,
                lease,
                &config.election,
                &config.id,
                &config.connection,
            );
            (ctx.priority, ctx.preempt) = (config.priority, config.preempt);
            ctx
        };
        let _serving = listener.map(|l| AbortOnDrop(tokio::spawn(http::serve(l, context()))));
        // Handlers first: no signal and no child exit may be missed once a child exists.
        let signals = crate::process::signals::Signals::install()
            .map_err(|e| Error::io("installing signal handlers", e))?;
        let result = crate::supervisor::run(config, signals, status, Some(guardian)).await;
        // The status channel closed with the supervisor: the notifier sends STOPPING=1 (if it
        // has not yet) and ends.
        if let Some(task) = notifying {
            let _ = task.await;
        }
        result
    });
    runtime.shutdown_background();
    result
}

/// One WARN line when systemd's watchdog (`WatchdogSec`) is too long for the TTL to close the
/// frozen-supervisor gap, naming the values that would fit.
fn check_watchdog(config: &Config, watchdog: std::time::Duration) {
    let hook = match config.hooks.demote {
        Some(_) => config.hooks.timeout,
        None => std::time::Duration::ZERO,
    };
    let Ok(timing) = timing::Timing::with_hook(config.ttl, config.stop_timeout, hook) else {
        return;
    };
    if let Some(line) = timing::watchdog_misfit(&timing, watchdog) {
        tracing::warn!("{line}");
    }
}

/// Ends the task when dropped: the status endpoint stops answering as the supervisor returns.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn leader_main(args: &[OsString], env: &Env) -> u8 {
    let parsed = flags::parse_leader(args);
    let mut config = match configure(LogFormat::Text, parsed, |f| LeaderConfig::load(f, env)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (endpoints, warnings) = (
        config.connection.endpoints.len(),
        std::mem::take(&mut config.warnings),
    );
    warn_then(endpoints, &warnings, crate::cli::leader::run(config))
}

fn resign_main(args: &[OsString], env: &Env) -> u8 {
    let parsed = flags::parse_resign(args);
    let mut config = match configure(LogFormat::Text, parsed, |f| ResignConfig::load(f, env)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (endpoints, warnings) = (
        config.connection.endpoints.len(),
        std::mem::take(&mut config.warnings),
    );
    warn_then(endpoints, &warnings, crate::cli::resign::run(config))
}

/// A subcommand that asks about an election: parse with `parse`, load, `run`.
fn ask_main<F>(
    args: &[OsString],
    env: &Env,
    parse: impl FnOnce(&[OsString]) -> Result<flags::Flags, clap::Error>,
    run: fn(crate::config::AskConfig) -> F,
) -> u8
where
    F: std::future::Future<Output = Result<u8, Error>>,
{
    let parsed = parse(args);
    let mut config = match configure(LogFormat::Text, parsed, |f| {
        crate::config::AskConfig::load(f, env)
    }) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (endpoints, warnings) = (
        config.connection.endpoints.len(),
        std::mem::take(&mut config.warnings),
    );
    warn_then(endpoints, &warnings, run(config))
}

/// A subcommand's run once its configuration is loaded (for `endpoints` endpoints): warnings
/// only are logged, its own output goes to stdout.
fn warn_then(
    endpoints: usize,
    warnings: &[String],
    run: impl std::future::Future<Output = Result<u8, Error>>,
) -> u8 {
    if let Err(e) = limits::files(endpoints, None) {
        return fail(LogFormat::Text, &e);
    }
    log::init(LogFormat::Text, tracing::Level::WARN);
    log::start_writer(LogFormat::Text);
    warn(warnings);
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the runtime", e))
        .and_then(|runtime| {
            let result = runtime.block_on(run);
            runtime.shutdown_background();
            result
        });
    match result {
        Ok(code) => code,
        Err(e) => fail(LogFormat::Text, &e),
    }
}

/// The validated configuration from the parsed flags, or the exit status once help, the
/// version or the failure has been written (the failure in `format`).
fn configure<F, C>(
    format: LogFormat,
    parsed: Result<F, clap::Error>,
    load: impl FnOnce(F) -> Result<C, Error>,
) -> Result<C, u8> {
    let loaded = match parsed {
        Ok(flags) => load(flags),
        Err(e) => match clap_error(e) {
            Ok(code) => return Err(code),
            Err(e) => Err(e),
        },
    };
    loaded.map_err(|e| fail(format, &e))
}

/// The first argument is where a subcommand stands; a word there that names none (`help`,
/// `status`, a typo) is a usage error listing them, with clap's tip of a similar one. A program
/// to run goes after `--`, where it always runs.
fn not_a_subcommand(word: &OsString) -> Error {
    let e = flags::not_a_subcommand(word);
    let shown = log::shown_value(&word.to_string_lossy());
    let names = flags::subcommand_names().join(", ");
    let tip = match e.get(ContextKind::SuggestedSubcommand) {
        Some(ContextValue::String(s)) => format!(" (did you mean '{s}'?)"),
        Some(ContextValue::Strings(s)) if !s.is_empty() => {
            format!(" (did you mean '{}'?)", s.join("', '"))
        }
        _ => String::new(),
    };
    Error::Usage(format!(
        "'{shown}' is no subcommand{tip}: the subcommands are {names} (leaderrun SUBCOMMAND \
         --help; leaderrun --help); a command to run goes after --: leaderrun [OPTIONS] -- \
         {shown} ..."
    ))
}

/// The configuration's warnings, once logging is set up.
fn warn(warnings: &[String]) {
    for w in warnings {
        tracing::warn!("{w}");
    }
}

/// Help and version go to stdout with status 0 (Ok); anything else is a usage error.
fn clap_error(e: clap::Error) -> Result<u8, Error> {
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        // A closed stdout must not panic: the error is dropped.
        let _ = e.print();
        return Ok(0);
    }
    Err(Error::Usage(format!("{} (see --help)", clap_message(&e))))
}

/// The final line, then the status it ends with.
fn fail(format: LogFormat, e: &Error) -> u8 {
    log::final_line(format, &e.to_string(), e.exit_code());
    e.exit_code()
}

/// clap's message on one line, without its "error: " prefix. A refused value is quoted from
/// clap's context rather than its rendering, where a newline in the value would end the line.
fn clap_message(e: &clap::Error) -> String {
    let string = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => Some(s.as_str()),
        _ => None,
    };
    // An empty value with InvalidValue is a missing one: clap's own words say so.
    if let (Some(arg), Some(value)) = (
        string(ContextKind::InvalidArg),
        string(ContextKind::InvalidValue).filter(|v| !v.is_empty()),
    ) {
        let value = log::shown_value(value);
        match e.kind() {
            ErrorKind::ValueValidation => {
                let why = e.source().map(|s| s.to_string()).unwrap_or_default();
                return format!("invalid value '{value}' for '{arg}': {why}");
            }
            ErrorKind::InvalidValue => {
                let valid = match e.get(ContextKind::ValidValue) {
                    Some(ContextValue::Strings(v)) => {
                        format!(" [possible values: {}]", v.join(", "))
                    }
                    _ => String::new(),
                };
                return format!("invalid value '{value}' for '{arg}'{valid}");
            }
            _ => {}
        }
    }
    one_line(&e.render().to_string())
}

/// clap's first paragraph on one line, without its "error: " prefix, and its tips after it
/// (`a similar argument exists: '--election'`).
fn one_line(rendered: &str) -> String {
    let mut line = rendered
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
        .trim_start_matches("error: ")
        .to_string();
    let tips = rendered
        .lines()
        .filter_map(|l| l.trim().strip_prefix("tip: "));
    for tip in tips.filter(|t| t.contains("similar")) {
        line.push_str(&format!(" ({tip})"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_errors_become_one_line() {
        let text = "error: the following required arguments were not provided:\n  <COMMAND>...\n\nUsage: x\n";
        assert_eq!(
            one_line(text),
            "the following required arguments were not provided: <COMMAND>..."
        );
    }

    #[test]
    fn a_word_where_a_subcommand_stands_is_one_or_a_usage_error() {
        let said = |w: &str| not_a_subcommand(&OsString::from(w)).to_string();
        let e = not_a_subcommand(&OsString::from("resing"));
        assert_eq!(e.exit_code(), crate::error::EXIT_USAGE);
        let m = e.to_string();
        assert!(
            m.contains("'resing' is no subcommand (did you mean 'resign'?)"),
            "{m}"
        );
        assert!(
            m.contains("leader, resign") && m.contains("-- resing"),
            "{m}"
        );
        assert!(said("leadr").contains("did you mean 'leader'?"));
        for far in ["help", "status", "x"] {
            let m = said(far);
            assert!(
                !m.contains("did you mean") && m.contains("leader, resign"),
                "{m}"
            );
        }
        let m = said("a\nb");
        assert!(!m.contains('\n'), "{m}");
    }

    #[test]
    fn a_mistyped_flag_gets_claps_tip() {
        let e = flags::parse(["leaderrun", "--electoin", "x", "--", "true"]).unwrap_err();
        let m = clap_message(&e);
        assert!(m.contains("a similar argument exists: '--election'"), "{m}");
        assert!(!m.contains('\n'), "{m}");
    }

    #[test]
    fn a_refused_value_is_quoted_escaped() {
        let e = flags::parse(["leaderrun", "--ttl", "1\n\n2", "--", "true"]).unwrap_err();
        let m = clap_message(&e);
        assert!(!m.contains('\n'), "{m}");
        assert!(m.contains("--ttl") && m.contains("1\\n\\n2"), "{m}");
        let e = flags::parse(["leaderrun", "--election"]).unwrap_err();
        let m = clap_message(&e);
        assert!(m.contains("a value is required for '--election"), "{m}");
        let e = flags::parse(["leaderrun", "--on-exit", "x\ny", "--", "true"]).unwrap_err();
        let m = clap_message(&e);
        assert!(
            m.contains("--on-exit") && m.contains("x\\ny") && m.contains("restart"),
            "{m}"
        );
    }
}
