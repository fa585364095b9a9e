//! From argv to exit status: parse, validate, set up logging, run the supervisor.

use crate::config::{Cli, Config, LogFormat};
use crate::error::{Error, EXIT_USAGE};
use crate::guardian::Guardian;
use crate::leader::LeaderCli;
use crate::status::Status;
use clap::error::ErrorKind;
use clap::Parser;
use std::ffi::OsString;
use std::io::IsTerminal;
use std::sync::Arc;

/// Everything `main` does; returns the exit status.
pub fn main(args: impl IntoIterator<Item = OsString>) -> u8 {
    let args: Vec<OsString> = args.into_iter().collect();
    // `leaderrun leader ...` asks who leads; a command named `leader` runs with `-- leader`.
    if args.get(1).is_some_and(|a| a == "leader") {
        return leader_main(&args[1..]);
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return 0;
        }
        Err(e) => {
            eprintln!(
                "leaderrun: {} (see --help)",
                one_line(&e.render().to_string())
            );
            return EXIT_USAGE;
        }
    };
    let config = match Config::from_cli(cli) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    init_logging(config.log_format, config.log_level);
    // SAFETY: one thread so far; the runtime is built below.
    let guardian = match unsafe { Guardian::start() } {
        Ok(g) => Arc::new(g),
        Err(e) => return fail(&Error::io("starting the guardian process", e)),
    };
    // One thread: the child's parent-death signal is tied to the thread that forked it, and the
    // main thread lives as long as the process.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&Error::io("starting the runtime", e)),
    };
    let result = runtime.block_on(crate::supervisor::run(
        config,
        Status::default(),
        Some(guardian.clone()),
    ));
    drop(runtime);
    if let Ok(guardian) = Arc::try_unwrap(guardian) {
        guardian.finish();
    }
    match result {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

fn leader_main(args: &[OsString]) -> u8 {
    let cli = match LeaderCli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => return clap_error(e),
    };
    init_logging(LogFormat::Text, tracing::Level::WARN);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&Error::io("starting the runtime", e)),
    };
    match runtime.block_on(crate::leader::run(cli)) {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

/// Help and version go to stdout with status 0; anything else is one line and status 2.
fn clap_error(e: clap::Error) -> u8 {
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return 0;
    }
    eprintln!(
        "leaderrun: {} (see --help)",
        one_line(&e.render().to_string())
    );
    EXIT_USAGE
}

fn fail(e: &Error) -> u8 {
    eprintln!("leaderrun: {e}");
    e.exit_code()
}

/// clap's first paragraph on one line, without its "error: " prefix.
fn one_line(rendered: &str) -> String {
    rendered
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
        .trim_start_matches("error: ")
        .to_string()
}

fn init_logging(format: LogFormat, level: tracing::Level) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
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
}
