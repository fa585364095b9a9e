//! `leaderrun --version` names the commit it was built from, when the build knows it.
//!
//! LEADERRUN_VERSION is the package's version, followed by ` (COMMIT)` when the sources are a
//! git checkout of their own (`git rev-parse --short HEAD` at the top of this package) and just
//! the version elsewhere (a tarball, a crate, no git installed). The script runs again only
//! when HEAD moves: a new commit, a checkout (`.git/HEAD` and the ref it names, or the packed
//! refs that hold it), not at every build.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let version = env!("CARGO_PKG_VERSION");
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    match commit(&dir) {
        Some((commit, watched)) => {
            for path in watched.iter().filter(|p| p.exists()) {
                println!("cargo:rerun-if-changed={}", path.display());
            }
            println!("cargo:rustc-env=LEADERRUN_VERSION={version} ({commit})");
        }
        None => println!("cargo:rustc-env=LEADERRUN_VERSION={version}"),
    }
}

/// The short commit of HEAD, and the files whose change moves it; None unless `dir` is the top
/// of a git work tree (a tarball unpacked inside another repository is not its checkout).
fn commit(dir: &Path) -> Option<(String, Vec<PathBuf>)> {
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    if Path::new(&top).canonicalize().ok()? != dir.canonicalize().ok()? {
        return None;
    }
    let commit = git(dir, &["rev-parse", "--short", "HEAD"])?;
    let path = |name: &str| git(dir, &["rev-parse", "--git-path", name]).map(|p| dir.join(p));
    let mut watched: Vec<PathBuf> = ["HEAD", "packed-refs"]
        .into_iter()
        .filter_map(path)
        .collect();
    // The branch HEAD names (none when detached): its file moves with every commit.
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        watched.extend(path(&branch));
    }
    Some((commit, watched))
}

/// `git ARGS` in `dir`: its output's first line, or None when git is missing or fails.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let line = text.lines().next()?.trim().to_string();
    (out.status.success() && !line.is_empty()).then_some(line)
}
