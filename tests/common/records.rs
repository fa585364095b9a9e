//! Reading the record files written by `examples/fenced_child.rs` and
//! checking that no two child lifetimes overlapped.
//!
//! Line format (one `write` per line, O_APPEND, times are CLOCK_MONOTONIC ns):
//! `start <pid> <ns> <revision|-> <id|->`, `alive <pid> <ns>` (every 5 ms),
//! `ignored-term <pid> <ns>` (SIGTERM with --ignore-term),
//! `end <pid> <ns> term|exit|expired`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use super::wait_until;

/// How one child lifetime ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Got SIGTERM and exited 0.
    Term,
    /// Exited by itself (--exit-after).
    Exit,
    /// Hit its safety lifetime cap (--max-lifetime-ms).
    Expired,
    /// No end line: SIGKILLed, or still running.
    Killed,
}

/// One child lifetime, from its `start` line to its last line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub pid: u32,
    pub start_ns: u64,
    /// Max of all alive/end timestamps (start_ns if none). A SIGKILLed child
    /// may have lived up to ~5 ms (plus scheduling delay) past this.
    pub last_seen_ns: u64,
    /// LEADERRUN_REVISION at start, None if unset.
    pub revision: Option<String>,
    /// LEADERRUN_ID at start, None if unset.
    pub id: Option<String>,
    pub ending: Ending,
    /// SIGTERMs received and ignored (--ignore-term).
    pub terms_ignored: u32,
}

impl Run {
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.last_seen_ns - self.start_ns)
    }

    /// True if it wrote anything within `window` before `now_ns`: i.e. it is
    /// (probably) alive now.
    pub fn seen_within(&self, now_ns: u64, window: Duration) -> bool {
        now_ns.saturating_sub(self.last_seen_ns) <= window.as_nanos() as u64
    }

    fn overlaps(&self, other: &Run) -> bool {
        self.start_ns <= other.last_seen_ns && other.start_ns <= self.last_seen_ns
    }
}

/// Namespace for reading record files.
pub struct Records;

impl Records {
    /// All runs in the file, sorted by start time. A missing file means no
    /// runs yet. Panics on a malformed line (a fixture bug, not a flake).
    pub fn read(path: &Path) -> Vec<Run> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => panic!("cannot read records {}: {e}", path.display()),
        };
        parse(&text).unwrap_or_else(|e| panic!("bad record file {}: {e}", path.display()))
    }

    /// Polls the file until `pred(runs)` holds; None after `timeout`.
    pub fn wait_for(
        path: &Path,
        timeout: Duration,
        mut pred: impl FnMut(&[Run]) -> bool,
    ) -> Option<Vec<Run>> {
        let mut found = None;
        wait_until(timeout, Duration::from_millis(10), || {
            let runs = Records::read(path);
            let ok = pred(&runs);
            if ok {
                found = Some(runs);
            }
            ok
        });
        found
    }
}

/// Parses a whole record file; Err names the offending line.
pub fn parse(text: &str) -> Result<Vec<Run>, String> {
    let mut parser = RecordParser::default();
    // A reader can see a line that is still being written (a read takes no lock against the
    // write): only whole lines count.
    let whole = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    for (n, line) in whole.lines().enumerate() {
        parser
            .line(line)
            .map_err(|e| format!("line {}: {e}: {line:?}", n + 1))?;
    }
    let mut runs = parser.runs;
    runs.sort_by_key(|r| (r.start_ns, r.pid));
    Ok(runs)
}

/// Builds runs from record lines fed one at a time (for a file read as it grows).
#[derive(Debug, Default)]
pub struct RecordParser {
    /// The runs so far, in the order of their start lines.
    pub runs: Vec<Run>,
    /// pid -> index of its latest run (pids can be reused).
    latest: HashMap<u32, usize>,
}

impl RecordParser {
    /// Takes one complete line; Err says what is wrong with it.
    pub fn line(&mut self, line: &str) -> Result<(), String> {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            return Ok(());
        }
        let field = |i: usize| {
            f.get(i)
                .copied()
                .ok_or_else(|| format!("missing field {i}"))
        };
        let pid: u32 = field(1)?.parse().map_err(|e| format!("pid: {e}"))?;
        let ns: u64 = field(2)?.parse().map_err(|e| format!("ns: {e}"))?;
        if f[0] == "start" {
            self.latest.insert(pid, self.runs.len());
            self.runs.push(Run {
                pid,
                start_ns: ns,
                last_seen_ns: ns,
                revision: dash_none(field(3)?),
                id: dash_none(field(4)?),
                ending: Ending::Killed,
                terms_ignored: 0,
            });
            return Ok(());
        }
        let idx = *self.latest.get(&pid).ok_or("no start line for this pid")?;
        let run = &mut self.runs[idx];
        run.last_seen_ns = run.last_seen_ns.max(ns);
        match f[0] {
            "alive" => {}
            "ignored-term" => run.terms_ignored += 1,
            "end" => {
                run.ending = match field(3)? {
                    "term" => Ending::Term,
                    "exit" => Ending::Exit,
                    "expired" => Ending::Expired,
                    other => return Err(format!("unknown end kind {other}")),
                }
            }
            other => return Err(format!("unknown record kind {other}")),
        }
        Ok(())
    }
}

fn dash_none(s: &str) -> Option<String> {
    (s != "-").then(|| s.to_string())
}

/// Panics, naming both runs, if any two runs' [start, last_seen] intervals
/// intersect. Resolution is the 5 ms alive period for SIGKILLed children.
pub fn assert_no_overlap(runs: &[Run]) {
    let mut sorted: Vec<&Run> = runs.iter().collect();
    sorted.sort_by_key(|r| r.start_ns);
    // The run reaching furthest so far is the only one a later start can hit
    // first; checking against it finds an overlap whenever one exists.
    let mut furthest: Option<&Run> = None;
    for run in sorted {
        if let Some(prev) = furthest {
            if prev.overlaps(run) {
                panic!(
                    "fenced children overlapped by {} us:\n  {prev:?}\n  {run:?}",
                    (prev.last_seen_ns.min(run.last_seen_ns) - run.start_ns) / 1000
                );
            }
        }
        if furthest.is_none_or(|f| run.last_seen_ns > f.last_seen_ns) {
            furthest = Some(run);
        }
    }
}

/// The most runs alive at one instant (each from its start to its last sign of life, ends
/// inclusive, as `assert_no_overlap` counts them).
pub fn max_concurrent(runs: &[Run]) -> usize {
    // A start sorts before an end at the same instant: touching runs count as overlapping.
    let mut events: Vec<(u64, i8)> = runs
        .iter()
        .flat_map(|r| [(r.start_ns, -1), (r.last_seen_ns, 1)])
        .collect();
    events.sort_unstable();
    let (mut alive, mut most) = (0usize, 0usize);
    for (_, kind) in events {
        if kind < 0 {
            alive += 1;
            most = most.max(alive);
        } else {
            alive -= 1;
        }
    }
    most
}

/// Panics, listing the runs, if more than `n` of them were ever alive at once.
pub fn assert_at_most_concurrent(runs: &[Run], n: usize) {
    let most = max_concurrent(runs);
    assert!(
        most <= n,
        "{most} fenced children ran at once, more than {n}:\n  {runs:#?}"
    );
}

/// CLOCK_MONOTONIC in ns: the clock fenced_child stamps records with.
pub fn mono_now_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock_gettime");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// Path of the compiled `examples/fenced_child` next to the leaderrun
/// binary. `cargo test --test X` does not build examples, so the first call
/// in each test process runs `cargo build --example fenced_child` (a no-op
/// when fresh). `LEADERRUN_FENCED_CHILD` overrides the path.
pub fn fenced_child_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(locate_fenced_child).clone()
}

fn locate_fenced_child() -> PathBuf {
    if let Some(p) = std::env::var_os("LEADERRUN_FENCED_CHILD") {
        return PathBuf::from(p);
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_leaderrun"));
    let profile_dir = bin.parent().expect("bin dir");
    let path = profile_dir.join("examples").join("fenced_child");
    if let Some(cargo) = std::env::var_os("CARGO") {
        build_example(&cargo, profile_dir);
    }
    assert!(
        path.exists(),
        "{} missing: build it with `cargo build --example fenced_child`",
        path.display()
    );
    path
}

/// Builds the example into the same target dir and profile as this test.
/// Layout is `<target-dir>/<profile>/`; a `<triple>/` level, if any, is
/// simply treated as part of the target dir, which lands in the same place.
fn build_example(cargo: &std::ffi::OsStr, profile_dir: &Path) {
    let target_dir = profile_dir.parent().expect("target dir");
    let profile = profile_dir
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or("debug");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--offline", "--example", "fenced_child"])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let out = cmd
        .output()
        .expect("run cargo build --example fenced_child");
    assert!(
        out.status.success(),
        "cargo build --example fenced_child failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
