//! Bad input is refused before anything starts: the right exit status, exactly
//! one line on stderr naming the problem, no child, no contact with etcd.
//! And the flag-over-environment rule, checked against a real etcd.

mod common;

use std::io::ErrorKind;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{leaderrun, run_with_timeout, Etcd, TempDir};

const SEC: Duration = Duration::from_secs(1);

/// One bad invocation and what leaderrun must answer.
struct Case {
    name: &'static str,
    /// Arguments after `--endpoints <silent port>`.
    args: Vec<String>,
    env: Vec<(&'static str, &'static str)>,
    code: i32,
    /// Each must appear in the error line (case-insensitive).
    mentions: Vec<String>,
}

fn case(name: &'static str, args: Vec<String>, code: i32, mentions: &[&str]) -> Case {
    Case {
        name,
        args,
        env: Vec::new(),
        code,
        mentions: mentions.iter().map(|m| m.to_string()).collect(),
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn bad_input_is_refused_with_one_line_and_nothing_started() {
    let dir = TempDir::new("leaderrun-bad-input");
    let marker = dir.join("started");
    let plain = dir.join("plain-file");
    std::fs::write(&plain, "#!/bin/sh\ntouch /dev/null\n").unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    let subdir = dir.join("a-directory");
    std::fs::create_dir(&subdir).unwrap();
    let plain = plain.display().to_string();
    let subdir = subdir.display().to_string();

    // A valid command after the options: the proof that nothing ran is that
    // its marker file is absent.
    let touch = format!("touch {}", marker.display());
    let with = |opts: &[&str]| -> Vec<String> {
        let mut v = strings(opts);
        v.extend(strings(&["--", "/bin/sh", "-c", &touch]));
        v
    };

    let mut cases = vec![
        case(
            "command not found",
            strings(&["--", "no-such-command-xyz"]),
            127,
            &["command not found", "no-such-command-xyz"],
        ),
        case(
            "command not executable (mode 644)",
            strings(&["--", &plain]),
            126,
            &["not executable", &plain],
        ),
        case(
            "command is a directory",
            strings(&["--", &subdir]),
            126,
            &["not executable", &subdir, "directory"],
        ),
        case("--ttl 0", with(&["--ttl", "0"]), 2, &["--ttl", "0"]),
        case("--ttl -1", with(&["--ttl", "-1"]), 2, &["--ttl", "-1"]),
        case(
            "--ttl not a number",
            with(&["--ttl", "ten"]),
            2,
            &["--ttl", "ten"],
        ),
        case(
            "--stop-timeout garbage",
            with(&["--stop-timeout", "garbage"]),
            2,
            &["--stop-timeout", "garbage"],
        ),
        case(
            "--stop-timeout too long for the ttl",
            with(&["--ttl", "3", "--stop-timeout", "5s"]),
            2,
            &["--ttl", "--stop-timeout"],
        ),
        case(
            "empty --election",
            with(&["--election", ""]),
            2,
            &["--election"],
        ),
        case("empty --id", with(&["--id", ""]), 2, &["--id"]),
        case(
            "unknown flag",
            with(&["--frobnicate"]),
            2,
            &["--frobnicate"],
        ),
        case("missing command", strings(&["--ttl", "3"]), 2, &["COMMAND"]),
        case(
            "nothing after --",
            strings(&["--ttl", "3", "--"]),
            2,
            &["COMMAND"],
        ),
        case("empty command", strings(&["--", ""]), 2, &["COMMAND"]),
        case(
            "bad --stop-signal",
            with(&["--stop-signal", "NOPE"]),
            2,
            &["--stop-signal", "NOPE"],
        ),
        case(
            "bad --on-exit",
            with(&["--on-exit", "sometimes"]),
            2,
            &["--on-exit", "sometimes"],
        ),
        case(
            "bad --log-level",
            with(&["--log-level", "loud"]),
            2,
            &["--log-level", "loud"],
        ),
        case(
            "bad --log-format",
            with(&["--log-format", "xml"]),
            2,
            &["--log-format", "xml"],
        ),
    ];
    let mut env_ttl = case("LEADERRUN_TTL=0", with(&[]), 2, &["ttl", "0"]);
    env_ttl.env.push(("LEADERRUN_TTL", "0"));
    cases.push(env_ttl);
    let mut env_on_exit = case(
        "LEADERRUN_ON_EXIT=bogus",
        with(&[]),
        2,
        &["on-exit", "bogus"],
    );
    env_on_exit.env.push(("LEADERRUN_ON_EXIT", "bogus"));
    cases.push(env_on_exit);
    let mut env_timeout = case(
        "LEADERRUN_STOP_TIMEOUT too long for --ttl 3",
        with(&["--ttl", "3"]),
        2,
        &["--ttl", "--stop-timeout"],
    );
    env_timeout.env.push(("LEADERRUN_STOP_TIMEOUT", "5s"));
    cases.push(env_timeout);

    let mut failures = Vec::new();
    for c in &cases {
        if let Err(why) = check(c, &marker) {
            failures.push(format!("{}: {why}", c.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Runs one case against a listening port that never answers: any contact with
/// "etcd" would leave a pending connection there (and hang leaderrun).
fn check(c: &Case, marker: &Path) -> Result<(), String> {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    silent.set_nonblocking(true).unwrap();
    let endpoint = silent.local_addr().unwrap().to_string();
    let mut cmd = leaderrun();
    cmd.args(["--endpoints", &endpoint]).args(&c.args);
    for (k, v) in &c.env {
        cmd.env(k, v);
    }
    let t0 = Instant::now();
    let out = run_with_timeout(&mut cmd, 10 * SEC);
    let took = t0.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut problems = Vec::new();
    if out.status.code() != Some(c.code) {
        problems.push(format!("exit status {} (want {})", out.status, c.code));
    }
    if took > 2 * SEC {
        problems.push(format!("took {took:?} to exit"));
    }
    let lines: Vec<&str> = stderr.lines().collect();
    if lines.len() != 1 || !stderr.ends_with('\n') {
        problems.push(format!("stderr is not exactly one line: {stderr:?}"));
    }
    if !stderr.starts_with("leaderrun: ") {
        problems.push(format!(
            "stderr does not start with 'leaderrun: ': {stderr:?}"
        ));
    }
    for m in &c.mentions {
        if !stderr.to_lowercase().contains(&m.to_lowercase()) {
            problems.push(format!("stderr does not mention {m:?}: {stderr:?}"));
        }
    }
    if !out.stdout.is_empty() {
        problems.push(format!(
            "stdout not empty: {:?}",
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    if marker.exists() {
        let _ = std::fs::remove_file(marker);
        problems.push("the command was started".into());
    }
    match silent.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Ok(_) => problems.push("leaderrun connected to the etcd endpoint".into()),
        Err(e) => problems.push(format!("accept on the silent port: {e}")),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{} [stderr: {stderr:?}]", problems.join("; ")))
    }
}

#[test]
fn a_flag_wins_over_the_environment() {
    let etcd = Etcd::single();
    let dir = TempDir::new("leaderrun-env");
    let seen = dir.join("seen");
    let script = format!(
        "echo \"$LEADERRUN_ELECTION $LEADERRUN_ID $LEADERRUN_KEY\" > {}",
        seen.display()
    );
    let mut cmd = leaderrun();
    // From the environment only: endpoints and id. Set in both (flag wins):
    // election, and a TTL whose environment value alone would be refused.
    cmd.env("LEADERRUN_ENDPOINTS", etcd.endpoints())
        .env("LEADERRUN_ID", "env-id")
        .env("LEADERRUN_ELECTION", "from-env")
        .env("LEADERRUN_TTL", "0")
        .args([
            "--election",
            "from-flag",
            "--ttl",
            "3",
            "--",
            "/bin/sh",
            "-c",
            &script,
        ]);
    let out = run_with_timeout(&mut cmd, 15 * SEC);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "status {}; stderr:\n{stderr}",
        out.status
    );
    let seen = std::fs::read_to_string(&seen)
        .unwrap_or_else(|e| panic!("child did not run ({e}); stderr:\n{stderr}"));
    let fields: Vec<&str> = seen.split_whitespace().collect();
    assert_eq!(fields.len(), 3, "child saw {seen:?}");
    assert_eq!(
        fields[0], "from-flag",
        "LEADERRUN_ELECTION; stderr:\n{stderr}"
    );
    assert_eq!(fields[1], "env-id");
    assert!(
        fields[2].starts_with("from-flag/"),
        "LEADERRUN_KEY {}",
        fields[2]
    );
}

#[test]
fn a_ttl_etcd_refuses_is_a_fatal_error() {
    // etcd grants at most 9e9 s: a larger TTL can never be granted, retrying
    // cannot help, so leaderrun must give up with the fatal-etcd status 1.
    let etcd = Etcd::single();
    let dir = TempDir::new("leaderrun-big-ttl");
    let marker = dir.join("started");
    let mut cmd = leaderrun();
    cmd.args([
        "--endpoints",
        &etcd.endpoints(),
        "--ttl",
        "9000000001",
        "--",
    ])
    .args(["/bin/sh", "-c", &format!("touch {}", marker.display())]);
    let t0 = Instant::now();
    let out = run_with_timeout(&mut cmd, 5 * SEC);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "status {} after {:?}; stderr:\n{stderr}",
        out.status,
        t0.elapsed()
    );
    let last = stderr.lines().last().unwrap_or("");
    assert!(
        last.starts_with("leaderrun: ") && last.to_lowercase().contains("ttl"),
        "last stderr line should name the refused TTL: {last:?}"
    );
    assert!(!marker.exists(), "the command was started");
}

#[test]
fn a_command_that_cannot_be_executed_after_winning_exits_and_resigns() {
    // Resolvable, and executable by its mode, but exec fails: its interpreter
    // is missing (ENOENT: 127) or not executable (EACCES: 126).
    let etcd = Etcd::single();
    let dir = TempDir::new("leaderrun-bad-exec");
    let plain = dir.join("plain-interpreter");
    std::fs::write(&plain, "not a program\n").unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    let no_interp = dir.join("no-interpreter");
    std::fs::write(&no_interp, "#!/nonexistent/interpreter\n").unwrap();
    let bad_interp = dir.join("bad-interpreter");
    std::fs::write(&bad_interp, format!("#!{}\n", plain.display())).unwrap();
    for (path, code) in [(&no_interp, 127), (&bad_interp, 126)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut cmd = leaderrun();
        cmd.args([
            "--endpoints",
            &etcd.endpoints(),
            "--ttl",
            "3",
            "--election",
            "x",
        ])
        .arg("--")
        .arg(path);
        let out = run_with_timeout(&mut cmd, 10 * SEC);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{}: status {}; stderr:\n{stderr}",
            path.display(),
            out.status
        );
        // It resigned: no key left behind for the next candidate to wait on.
        let keys = etcd.etcdctl_ok(&["get", "--prefix", "x/", "--keys-only"]);
        assert!(keys.trim().is_empty(), "keys left: {keys:?}");
    }
}
