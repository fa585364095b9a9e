//! What the man pages and the shell completions are generated from: the command definitions
//! ([`crate::config::flags::commands`]), so that they say what `--help` says and cannot drift from it.
//!
//! The generators themselves (clap_mangen, clap_complete) run in `examples/generate.rs`, which
//! `scripts/package.sh` calls: the shipped binary does not carry them. The tests here check the
//! options tables of docs/usage.md against the same definitions.

use clap::ValueHint;

/// The program's name, as the completions and the man pages call it.
pub const BIN: &str = "leaderrun";

/// The shells completions are made for (clap_complete's names), each with the file name its
/// directory of completions expects.
pub const SHELLS: [(&str, &str); 3] = [
    ("bash", "leaderrun"),
    ("zsh", "_leaderrun"),
    ("fish", "leaderrun.fish"),
];

/// The command tree as documented, with the hints shells complete from: a file name for each
/// FILE, a command and its arguments for COMMAND.
pub fn commands() -> clap::Command {
    hinted(crate::config::flags::commands().disable_help_subcommand(true))
}

fn hinted(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|a| {
        let file = a.get_value_names().is_some_and(|n| n == ["FILE"]);
        match a.get_id().as_str() {
            "command" => a.value_hint(ValueHint::CommandWithArguments),
            _ if file => a.value_hint(ValueHint::FilePath),
            _ => a,
        }
    })
    .mut_subcommands(hinted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Opt, OPTIONS};
    use std::collections::BTreeMap;

    /// The header of every options table in docs/usage.md: one row per flag (or per variable,
    /// for a setting without a flag).
    const HEADER: &str = "| option | variable | config key | default | meaning |";

    /// A row of an options table, its cells as written (code spans unwrapped).
    #[derive(Debug)]
    struct Row {
        line: usize,
        option: String,
        variable: String,
        key: String,
        default: String,
    }

    /// Every row of the options tables of docs/usage.md, by flag (`--ttl`), or by variable for a
    /// setting without a flag.
    fn readme_rows() -> BTreeMap<String, Row> {
        let readme = include_str!("../../docs/usage.md");
        let mut rows = BTreeMap::new();
        let mut in_table = false;
        for (i, line) in readme.lines().enumerate() {
            if line.trim() == HEADER {
                in_table = true;
                continue;
            }
            if !in_table || line.starts_with("|---") {
                continue;
            }
            if !line.starts_with('|') {
                in_table = false;
                continue;
            }
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
            assert!(
                cells.len() == 5,
                "docs/usage.md:{}: a row of 5 cells",
                i + 1
            );
            let unquote = |c: &str| c.trim_matches('`').to_string();
            let row = Row {
                line: i + 1,
                option: cells[0].to_string(),
                variable: unquote(cells[1]),
                key: unquote(cells[2]),
                default: cells[3].to_string(),
            };
            // `--ttl SECONDS` is --ttl; a row without a flag is known by its variable.
            let name = match row.option.strip_prefix("`--") {
                Some(rest) => format!("--{}", rest.split([' ', '`']).next().unwrap_or("")),
                None => row.variable.clone(),
            };
            let line = row.line;
            if let Some(first) = rows.insert(name.clone(), row) {
                panic!(
                    "docs/usage.md:{line}: {name} is also at line {}",
                    first.line
                );
            }
        }
        rows
    }

    /// Checks a row against the options table of `config`.
    fn check(row: &Row, opt: &Opt) {
        let at = format!("docs/usage.md:{} ({})", row.line, opt.long);
        // A subcommand's own flag has neither a variable nor a key.
        assert_eq!(
            row.variable,
            opt.env.unwrap_or("none"),
            "{at}: the variable"
        );
        assert_eq!(row.key, opt.key.unwrap_or("none"), "{at}: the config key");
        match opt.default {
            // The default as written in the options table, first in its cell.
            Some(d) => assert!(
                row.default.starts_with(&format!("`{d}`")),
                "{at}: the default is `{d}`, docs/usage.md says {}",
                row.default
            ),
            // No default, or one computed from other settings: the cell says which, in words.
            None => assert!(!row.default.is_empty(), "{at}: the default"),
        }
    }

    #[test]
    fn the_readme_documents_every_option_as_defined() {
        let mut rows = readme_rows();
        let mut cmd = commands();
        // Gives every flag its default (`false` for a switch).
        cmd.build();
        let mut flags: Vec<(String, clap::Arg)> = Vec::new();
        for c in std::iter::once(&cmd).chain(cmd.get_subcommands()) {
            for a in c.get_arguments() {
                let Some(long) = a.get_long() else { continue };
                if !["help", "version"].contains(&long) {
                    flags.push((format!("{} --{long}", c.get_name()), a.clone()));
                }
            }
        }
        for (name, a) in &flags {
            let long = format!("--{}", a.get_long().unwrap_or(""));
            let Some(row) = rows.get(&long) else {
                panic!("docs/usage.md: no row for {name} in a table headed {HEADER}");
            };
            match OPTIONS.iter().find(|o| a.get_long() == Some(o.long)) {
                Some(opt) => check(row, opt),
                None => panic!("{name}: a flag that is not in the options table"),
            }
        }
        // Settings without a flag (the password) have a row of their own.
        for opt in OPTIONS.iter().filter(|o| !o.is_flag()) {
            let var = opt.env.expect("an option without a flag has a variable");
            let Some(row) = rows.get(var) else {
                panic!("docs/usage.md: no row for {var} in a table headed {HEADER}");
            };
            check(row, opt);
        }
        // And nothing documented that does not exist.
        rows.retain(|name, _| {
            let flag = flags
                .iter()
                .any(|(_, a)| a.get_long() == name.strip_prefix("--"));
            !flag && !OPTIONS.iter().any(|o| o.env == Some(name.as_str()))
        });
        assert!(
            rows.is_empty(),
            "docs/usage.md: rows for no option: {rows:?}"
        );
    }

    #[test]
    fn every_subcommand_is_documented_with_its_flags() {
        let cmd = commands();
        let subs: Vec<&str> = cmd.get_subcommands().map(|s| s.get_name()).collect();
        assert!(subs.contains(&"leader"), "{subs:?}");
        assert!(!subs.contains(&"help"), "{subs:?}");
        // The tree is valid as clap sees it (no conflicting definitions).
        cmd.clone().debug_assert();
    }

    #[test]
    fn completions_know_every_flag_and_subcommand() {
        let cmd = commands();
        for (name, file) in SHELLS {
            let shell: clap_complete::Shell = name.parse().unwrap();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd.clone(), BIN, &mut out);
            let script = String::from_utf8(out).unwrap();
            for c in std::iter::once(&cmd).chain(cmd.get_subcommands()) {
                assert!(script.contains(c.get_name()), "{name}: {}", c.get_name());
                for long in c.get_arguments().filter_map(|a| a.get_long()) {
                    // fish writes `-l ttl`, the others `--ttl`.
                    let found = script.contains(&format!("--{long}"))
                        || script.contains(&format!("-l {long}"));
                    assert!(found, "{name} ({file}): --{long}");
                }
            }
        }
    }

    #[test]
    fn the_man_pages_show_every_flag_with_its_variable() {
        let mut cmd = commands();
        cmd.build();
        for c in std::iter::once(&cmd).chain(cmd.get_subcommands()) {
            let mut out = Vec::new();
            clap_mangen::Man::new(c.clone()).render(&mut out).unwrap();
            let page = String::from_utf8(out).unwrap();
            for a in c.get_arguments() {
                let Some(long) = a.get_long() else { continue };
                // roff escapes every dash: \-\-stop\-signal.
                let flag = format!("--{long}").replace('-', "\\-");
                assert!(page.contains(&flag), "{}: --{long}", c.get_name());
                let env = OPTIONS.iter().find(|o| o.long == long).and_then(|o| o.env);
                if let Some(env) = env {
                    assert!(page.contains(env), "{}: {env}", c.get_name());
                }
            }
        }
    }
}
