//! Writes leaderrun's man pages and shell completions, generated from its command definitions
//! (`leaderrun::cli::generate::commands`): `cargo run --example generate -- DIR` gives
//! `DIR/man/leaderrun.1` (and `leaderrun-NAME.1` per subcommand) and
//! `DIR/completions/{leaderrun,_leaderrun,leaderrun.fish}` (bash, zsh, fish).
//! `scripts/package.sh` runs it; an example, so that the shipped binary carries no generator.

use clap_complete::Shell;
use clap_mangen::Man;
use leaderrun::cli::generate::{commands, BIN, SHELLS};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: generate DIR");
        return ExitCode::from(2);
    };
    match write_all(Path::new(&dir)) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("generate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Every page and script, written under `dir`; returns their paths.
fn write_all(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut cmd = commands();
    // Names the subcommands' pages: leaderrun-leader.
    cmd.build();
    let man = dir.join("man");
    fs::create_dir_all(&man)?;
    let mut files = vec![Man::new(cmd.clone()).generate_to(&man)?];
    for sub in cmd.get_subcommands() {
        files.push(Man::new(sub.clone()).generate_to(&man)?);
    }
    let completions = dir.join("completions");
    fs::create_dir_all(&completions)?;
    for (name, file) in SHELLS {
        let shell: Shell = name
            .parse()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{name}: {e}")))?;
        let path = completions.join(file);
        let mut out = BufWriter::new(File::create(&path)?);
        clap_complete::generate(shell, &mut cmd.clone(), BIN, &mut out);
        out.flush()?;
        files.push(path);
    }
    Ok(files)
}
