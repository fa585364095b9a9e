//! Reading the record files written by `examples/fenced_child.rs` and
//! checking that no two child lifetimes overlapped.
//!
//! Line format (one `write` per line, O_APPEND, times are CLOCK_MONOTONIC ns):
//! `start <pid> <ns> <revision|-> <id|->`, `alive <pid> <ns>` (every 5 ms),
//! `ignored-term <pid> <ns>` (SIGTERM with --ignore-term),
//! `end <pid> <ns> term|exit|expired|standby`.
//!
//! A `--hot` fenced child records its leader intervals in the same lines (one pid, a `start`
//! for each): a [`Run`] is then one interval of acting as leader, ended by `standby` (before
//! its confirmation) or `term`, or by its death (no end line).
//!
//! Hooks that run `fenced_child FILE --stamp promote|demote` write the lines that
//! [`HoldParser`] reads as intervals of holding what the hooks move (a "VIP"), one `Run` each.

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
    /// A hot child told it is a standby again (`end ... standby`, written before its
    /// confirmation), or a hold released by the demote hook (its `demote` line).
    Demoted,
    /// A hold whose leaderrun was SIGKILLed, so that no demote hook ran: ended at the kill (the
    /// `crash` line the soak writes just before it).
    Crashed,
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
                    "standby" => Ending::Demoted,
                    other => return Err(format!("unknown end kind {other}")),
                }
            }
            other => return Err(format!("unknown record kind {other}")),
        }
        Ok(())
    }
}

/// Reads the holds of what the role hooks move (a "VIP") from the lines of
/// `fenced_child --stamp` (one per hook run) and of the soak:
///
/// - `promote <pid> <ns> <revision|-> <id>`: host `id` holds from `ns` (its promote hook ran);
/// - `demote <pid> <ns> <reason|-> <id>`: it holds no more (its demote hook ran): [`Ending::Demoted`];
/// - `crash <pid> <ns> - <id>`: its leaderrun is about to be SIGKILLed, which runs no demote
///   hook: the hold ends here, [`Ending::Crashed`] (docs/SAFETY.md: what a crash means for a
///   VIP; whatever the promote hook configured stays on that host until the next leader's
///   promote hook takes it over).
///
/// A hold not yet ended reaches the time it is asked at ([`HoldParser::holds`]).
#[derive(Debug, Default)]
pub struct HoldParser {
    /// The holds, in the order of their `promote` lines (open ones end at their start here).
    holds: Vec<Run>,
    /// id -> index of its open hold.
    open: HashMap<String, usize>,
    /// `promote` lines of a host that held already (its demote hook never stamped): the hold
    /// goes on from the first.
    pub promoted_while_held: usize,
    /// `demote` lines of a host that held nothing (a promote hook that failed or was killed
    /// before its stamp, undone by the demote hook): they end nothing.
    pub released_nothing: usize,
}

impl HoldParser {
    /// Takes one complete line; Err says what is wrong with it.
    pub fn line(&mut self, line: &str) -> Result<(), String> {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            return Ok(());
        }
        if f.len() != 5 {
            return Err(format!("{} fields, not 5", f.len()));
        }
        let pid: u32 = f[1].parse().map_err(|e| format!("pid: {e}"))?;
        let ns: u64 = f[2].parse().map_err(|e| format!("ns: {e}"))?;
        let id = f[4].to_string();
        match f[0] {
            "promote" if self.open.contains_key(&id) => self.promoted_while_held += 1,
            "promote" => {
                self.open.insert(id.clone(), self.holds.len());
                self.holds.push(Run {
                    pid,
                    start_ns: ns,
                    last_seen_ns: ns,
                    revision: dash_none(f[3]),
                    id: Some(id),
                    ending: Ending::Killed,
                    terms_ignored: 0,
                });
            }
            "demote" | "crash" => match self.open.remove(&id) {
                Some(i) => {
                    let hold = &mut self.holds[i];
                    hold.last_seen_ns = hold.last_seen_ns.max(ns);
                    hold.ending = match f[0] {
                        "demote" => Ending::Demoted,
                        _ => Ending::Crashed,
                    };
                }
                None if f[0] == "demote" => self.released_nothing += 1,
                None => {}
            },
            other => return Err(format!("unknown hold record kind {other}")),
        }
        Ok(())
    }

    /// Every hold, those still open reaching `now_ns` (their ending stays `Killed`: no end
    /// line yet), in the order of their `promote` lines.
    pub fn holds(&self, now_ns: u64) -> Vec<Run> {
        let mut holds = self.holds.clone();
        for &i in self.open.values() {
            holds[i].last_seen_ns = holds[i].last_seen_ns.max(now_ns);
        }
        holds
    }

    /// The hosts that hold now.
    pub fn holders(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.open.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// A whole file of such lines (a missing file holds none); Err names the bad line.
    pub fn read(path: &Path) -> Result<HoldParser, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let mut parser = HoldParser::default();
        let whole = text.rfind('\n').map_or("", |end| &text[..=end]);
        for (n, line) in whole.lines().enumerate() {
            parser
                .line(line)
                .map_err(|e| format!("{} line {}: {e}: {line:?}", path.display(), n + 1))?;
        }
        Ok(parser)
    }
}

fn dash_none(s: &str) -> Option<String> {
    (s != "-").then(|| s.to_string())
}

/// Panics, naming both runs, if any two runs' [start, last_seen] intervals
/// intersect. Resolution is the 5 ms alive period for SIGKILLed children.
pub fn assert_no_overlap(runs: &[Run]) {
    if let Some((prev, run)) = overlapping(runs).first() {
        panic!(
            "fenced children overlapped by {} us:\n  {prev:?}\n  {run:?}",
            (prev.last_seen_ns.min(run.last_seen_ns) - run.start_ns) / 1000
        );
    }
}

/// Each run that started while an earlier one was alive, beside the earlier run reaching
/// furthest (the benchmark counts them; the tests assert there are none).
pub fn overlapping(runs: &[Run]) -> Vec<(&Run, &Run)> {
    let mut sorted: Vec<&Run> = runs.iter().collect();
    sorted.sort_by_key(|r| r.start_ns);
    // The run reaching furthest so far is the only one a later start can hit
    // first; checking against it finds an overlap whenever one exists.
    let mut furthest: Option<&Run> = None;
    let mut found = Vec::new();
    for run in sorted {
        if let Some(prev) = furthest {
            if prev.overlaps(run) {
                found.push((prev, run));
            }
        }
        if furthest.is_none_or(|f| run.last_seen_ns > f.last_seen_ns) {
            furthest = Some(run);
        }
    }
    found
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
