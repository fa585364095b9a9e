//! Logging on stderr, and the final line of a failure.
//!
//! Logging never takes the supervisor down: what cannot be written (a closed or full stderr) is
//! dropped, and tracing-subscriber's own error reports (`eprintln!`, which panics on a closed
//! stderr) are switched off. Nothing on leaderrun's paths uses `eprintln!` or `println!`.

use crate::config::LogFormat;
use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use tracing_subscriber::fmt::MakeWriter;

/// Stderr for the logs: a write that fails is dropped, never reported.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        write_stderr(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Stderr;

    fn make_writer(&'a self) -> Stderr {
        Stderr
    }
}

/// Write to stderr, or drop it when stderr is gone.
pub fn write_stderr(buf: &[u8]) {
    let _ = std::io::stderr().lock().write_all(buf);
}

/// Set up the process's logging. A second call changes nothing.
pub fn init(format: LogFormat, level: tracing::Level) {
    let builder = tracing_subscriber::fmt()
        .with_writer(Stderr)
        .with_max_level(level)
        .with_target(false)
        .log_internal_errors(false);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// The last line leaderrun writes before it exits with `code` because of `message`: text as
/// `leaderrun: MESSAGE`, or in JSON the same object as every other log line, with `exit_code`
/// among its fields. Works whether logging is set up or not.
pub fn final_line(format: LogFormat, message: &str, code: u8) {
    match format {
        LogFormat::Text => {
            write_stderr(format!("leaderrun: {}\n", escape_controls(message)).as_bytes())
        }
        LogFormat::Json => {
            let subscriber = tracing_subscriber::fmt()
                .with_writer(Stderr)
                .with_target(false)
                .log_internal_errors(false)
                .json()
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                tracing::error!(exit_code = code, "{message}");
            });
        }
    }
}

/// `s` with control characters (and the backslash) escaped as Rust writes them (`\n`,
/// `\u{1b}`, `\\`), so that text from elsewhere can neither forge a line nor a terminal
/// sequence. Unchanged, and not copied, when there is nothing to escape.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() || c == '\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() || c == '\\' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert!(matches!(escape_controls("web-1:42"), Cow::Borrowed(_)));
        assert_eq!(escape_controls("a\nb\u{1b}[2J\\"), "a\\nb\\u{1b}[2J\\\\");
        assert_eq!(escape_controls("é\t"), "é\\t");
    }
}
