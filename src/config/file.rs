//! The configuration file (`--config FILE`, LEADERRUN_CONFIG): TOML, one key per option.
//!
//! Every option is set under its flag's name with `_` for `-` (`stop_timeout = "3s"`), plus
//! `command`, an array (used when no command is given after `--`). A value is read by the
//! option's own parser, as a flag's or a variable's text, so `ttl = 10` and `ttl = "10"` are
//! alike; `endpoints` takes an array or a comma-separated string. Secrets are given by file
//! only: a `password` key is refused (`password_file` names the file that holds it).
//!
//! The whole file is checked when it is read: unknown keys and values of the wrong shape are
//! refused with the file, line and key. A value is parsed when its setting is taken from the
//! file, that is when no flag or variable sets it.

use crate::config::{
    open_to_others, Env, Opt, Parser, Reader, Source, Sourced, COMMAND_KEY, CONFIG, FROM_PARENT,
};
use crate::config::{ENDPOINTS, OPTIONS, USER};
use crate::error::Error;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// A configuration file as it was read, by its path and what named it: the file, or why not
/// (a usage error).
#[derive(Debug, Clone)]
pub struct Read {
    path: PathBuf,
    from: String,
    file: Result<ConfigFile, String>,
}

/// A configuration file, read and checked for unknown keys.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    path: Arc<Path>,
    /// Each option's value as the text its parser reads, and the line it is on.
    values: Vec<(&'static Opt, String, usize)>,
    command: Option<Vec<OsString>>,
    /// Named by a LEADERRUN_CONFIG inherited from a parent leaderrun: its election, id and
    /// command are the parent's (see [`Env`]).
    inherited: bool,
    /// Said once logging is set up: the file may be changed by others.
    warnings: Vec<String>,
}

impl ConfigFile {
    /// The file named by `--config` (`flag`), else by LEADERRUN_CONFIG; None when neither is.
    /// Read once per `env`: asked for again, it is the same file (or the same error).
    pub fn find(flag: Option<PathBuf>, env: &Env) -> Result<Option<ConfigFile>, Error> {
        let (path, from, inherited) = match flag {
            Some(path) => (path, format!("--{}", CONFIG.long), false),
            None => match (env.raw(&CONFIG), CONFIG.env) {
                (Some(raw), Some(var)) => (PathBuf::from(raw), var.into(), env.under_a_parent()),
                _ => return Ok(None),
            },
        };
        let mut cache = env.file.borrow_mut();
        let read = match cache.as_ref() {
            Some(read) if read.path == path && read.from == from => read.file.clone(),
            _ => {
                let file = ConfigFile::read(&path, &from).map_err(|e| e.to_string());
                *cache = Some(Read {
                    path,
                    from,
                    file: file.clone(),
                });
                file
            }
        };
        let mut file = read.map_err(Error::Usage)?;
        file.inherited = inherited;
        Ok(Some(file))
    }

    /// Read and check the file at `path`, named by `from`.
    fn read(path: &Path, from: &str) -> Result<ConfigFile, Error> {
        let cannot = |e: &dyn std::fmt::Display| {
            Error::Usage(format!(
                "{from}: cannot read the configuration file {}: {e}",
                path.display()
            ))
        };
        let bytes = crate::input_file::read_once(path).map_err(|e| cannot(&e))?;
        let text = String::from_utf8(bytes).map_err(|_| cannot(&"not UTF-8"))?;
        let mut file = ConfigFile::parse(path, &text)?;
        // Whoever may write it chooses what leaderrun runs, and where.
        let what = "configuration file";
        file.warnings
            .extend(open_to_others(path, &from, what, 0o022, "go-w"));
        Ok(file)
    }

    /// What to warn of once logging is set up.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    /// Parse and check `text`, the contents of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, Error> {
        let at = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let shown = path.display();
        let table = DeTable::parse(text).map_err(|e| {
            let line = e.span().map_or(1, |s| at(s.start));
            let message = one_line(e.message());
            match e.span().filter(|_| message == "duplicate key") {
                Some(span) => Error::Usage(format!("{shown}:{line}: {}", duplicate(text, span))),
                None => Error::Usage(format!("{shown}:{line}: {message}")),
            }
        })?;
        let mut file = ConfigFile {
            path: path.into(),
            values: Vec::new(),
            command: None,
            inherited: false,
            warnings: Vec::new(),
        };
        let mut entries: Vec<_> = table.get_ref().iter().collect();
        entries.sort_by_key(|(k, _)| k.span().start);
        for (key, value) in entries {
            let line = at(key.span().start);
            let name = crate::log::escape_controls(key.get_ref());
            let refuse = |why: String| Error::Usage(format!("{shown}:{line}: {name}: {why}"));
            if key.get_ref() == COMMAND_KEY {
                file.command = Some(command(value).map_err(refuse)?);
                continue;
            }
            let Some(opt) = OPTIONS
                .iter()
                .copied()
                .find(|o| o.key == Some(key.get_ref()))
            else {
                return Err(refuse(unknown(key.get_ref())));
            };
            let text = value_text(opt, value).map_err(refuse)?;
            if opt == &USER && text.contains(':') {
                return Err(refuse(
                    "a password is not read from the configuration file: give the user name \
                     alone, and the password in a file of its own, named by password_file"
                        .into(),
                ));
            }
            file.values.push((opt, text, line));
        }
        Ok(file)
    }

    /// The command the file names, if any (not when it is a parent's).
    pub fn command(&self) -> Option<Vec<OsString>> {
        self.command.clone().filter(|_| !self.inherited)
    }

    /// Where the file's value of `opt` is, if it has one (not a parent's election or id).
    fn get(&self, opt: &Opt) -> Option<(&str, usize)> {
        if self.inherited && FROM_PARENT.contains(&opt) {
            return None;
        }
        self.values
            .iter()
            .find(|(o, _, _)| *o == opt)
            .map(|(_, text, line)| (text.as_str(), *line))
    }
}

impl Reader for ConfigFile {
    /// `opt`'s value in the file, parsed; an error names the file, the line and the key.
    fn read<T>(&self, opt: &'static Opt, parse: Parser<T>) -> Result<Option<Sourced<T>>, Error> {
        let Some((text, line)) = self.get(opt) else {
            return Ok(None);
        };
        parse(text)
            .map(|value| {
                Some(Sourced {
                    value,
                    from: Source::File {
                        opt,
                        path: self.path.clone(),
                        line,
                    },
                })
            })
            .map_err(|e| {
                Error::Usage(format!(
                    "{}:{line}: {}: {e}",
                    self.path.display(),
                    opt.key.unwrap_or(opt.long)
                ))
            })
    }
}

/// Why `key` is not a key of the file.
fn unknown(key: &str) -> String {
    if key == "password" {
        return "a password is not read from the configuration file: put it in a file of its \
                own (mode 600) and name that file with password_file"
            .into();
    }
    let known = key.replace('-', "_");
    match OPTIONS.iter().find(|o| o.key == Some(known.as_str())) {
        Some(_) => format!("unknown key; did you mean {known}?"),
        None => "unknown key (the keys are the options' names with _ for -, and command)".into(),
    }
}

/// A value as the text of a flag: strings as they are, numbers and booleans as written, an
/// array of strings (for `endpoints` only) joined by commas.
fn value_text(opt: &Opt, value: &Spanned<DeValue<'_>>) -> Result<String, String> {
    match value.get_ref() {
        DeValue::String(s) => Ok(s.to_string()),
        DeValue::Integer(i) if i.radix() == 10 => Ok(i.as_str().to_string()),
        DeValue::Float(f) => Ok(f.as_str().to_string()),
        DeValue::Boolean(b) => Ok(b.to_string()),
        DeValue::Array(items) if opt == &ENDPOINTS => items
            .iter()
            .map(|item| match item.get_ref() {
                DeValue::String(s) => Ok(s.to_string()),
                _ => Err("expected an array of strings".to_string()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|list| list.join(",")),
        DeValue::Integer(_) => Err("write the number in decimal".into()),
        other => Err(format!(
            "expected a string, a number or a boolean, not {}",
            other.type_str()
        )),
    }
}

/// `command = ["./my-server", "--port", "8080"]`: the program and its arguments.
fn command(value: &Spanned<DeValue<'_>>) -> Result<Vec<OsString>, String> {
    let wrong =
        || "expected an array of strings: command = [\"./my-server\", \"--port\", \"8080\"]";
    let DeValue::Array(items) = value.get_ref() else {
        return Err(wrong().into());
    };
    let command = items
        .iter()
        .map(|item| match item.get_ref() {
            DeValue::String(s) => Ok(OsString::from(s.as_ref())),
            _ => Err(wrong().to_string()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if command.first().is_none_or(|c| c.is_empty()) {
        return Err("the command must not be empty".into());
    }
    Ok(command)
}

/// What the parser's "duplicate key" (at `span`, the second definition) is about: the key, and
/// where it was first set when that is a key of the top level.
fn duplicate(text: &str, span: std::ops::Range<usize>) -> String {
    let written = text.get(span.clone()).unwrap_or_default();
    let key = written
        .split('=')
        .next()
        .unwrap_or_default()
        .trim()
        .trim_matches(|c| c == '[' || c == ']')
        .trim();
    let name = key.trim_matches('"');
    let shown = crate::log::shown_value(name);
    // The text before the second definition parses (the parser stopped at it).
    let line_start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let before = &text[..line_start];
    let first = DeTable::parse(before).ok().and_then(|table| {
        let (k, _) = table.get_ref().get_key_value(name)?;
        Some(before[..k.span().start].matches('\n').count() + 1)
    });
    match first {
        Some(line) => format!("{shown}: duplicate key (first set at line {line})"),
        None => format!("{shown}: duplicate key"),
    }
}

/// The parser's message on one line.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TTL;

    fn parse(text: &str) -> Result<ConfigFile, String> {
        ConfigFile::parse(Path::new("/etc/leaderrun.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn values_are_read_as_their_flags_text() {
        let f = parse(
            "# a comment\nttl = 10\nstop_timeout = \"3s\"\nno_wait = true\n\
             endpoints = [\"https://etcd1:2379\", \"etcd2\"]\ncommand = [\"./s\", \"-p\", \"1\"]\n",
        )
        .unwrap();
        assert_eq!(f.get(&TTL), Some(("10", 2)));
        assert_eq!(f.get(&ENDPOINTS), Some(("https://etcd1:2379,etcd2", 5)));
        assert_eq!(f.command().unwrap(), ["./s", "-p", "1"]);
        let f = parse("ttl = \"10\"\nendpoints = \"a:1,b:2\"").unwrap();
        assert_eq!(f.get(&TTL), Some(("10", 1)));
        assert_eq!(f.get(&ENDPOINTS), Some(("a:1,b:2", 2)));
    }

    #[test]
    fn bad_files_are_refused_with_the_line_and_key() {
        for (text, want) in [
            (
                "ttl = 3\n\nstop-timeout = \"3s\"",
                "/etc/leaderrun.toml:3: stop-timeout: unknown key; did you mean stop_timeout?",
            ),
            (
                "\nfrobnicate = 1",
                "/etc/leaderrun.toml:2: frobnicate: unknown key",
            ),
            (
                "password = \"x\"",
                "/etc/leaderrun.toml:1: password: a password is not read",
            ),
            (
                "user = \"me:secret\"",
                "/etc/leaderrun.toml:1: user: a password is not read",
            ),
            ("ttl = [1]", "/etc/leaderrun.toml:1: ttl: expected a string"),
            (
                "command = \"./s -p 1\"",
                "/etc/leaderrun.toml:1: command: expected an array",
            ),
            (
                "command = []",
                "/etc/leaderrun.toml:1: command: the command must not be empty",
            ),
            (
                "[tls]\ncacert = \"x\"",
                "/etc/leaderrun.toml:1: tls: unknown key",
            ),
            (
                "ttl = 3\nttl = 4",
                "/etc/leaderrun.toml:2: ttl: duplicate key (first set at line 1)",
            ),
            (
                "ttl = 3\n\nelection = \"x\"\n \"ttl\" = 4 # again",
                "/etc/leaderrun.toml:4: ttl: duplicate key (first set at line 1)",
            ),
            // Not a key of the top level: named, without the first line.
            ("[a]\nx = 1\n[a]", "/etc/leaderrun.toml:3: a: duplicate key"),
            ("ttl = ", "/etc/leaderrun.toml:1: "),
            ("config = \"other.toml\"", "config: unknown key"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.starts_with(want) || e.contains(want), "{text:?}: {e}");
            assert!(!e.contains("secret"), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn the_example_file_names_every_option_and_parses() {
        let text = include_str!("../../examples/leaderrun.toml");
        let file = parse(text).unwrap();
        assert!(file.command().is_some());
        for key in OPTIONS.iter().filter_map(|o| o.key) {
            let set = format!("\n{key} = ");
            let commented = format!("\n# {key} = ");
            assert!(text.contains(&set) || text.contains(&commented), "{key}");
        }
    }
}
