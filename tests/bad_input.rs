//! Bad input is refused before anything starts: the right exit status, exactly
//! one line on stderr naming the problem, no child, no contact with etcd.
//! And the layering (flag over environment over configuration file), checked against a real
//! etcd; a password is never written.

mod common;

use std::io::ErrorKind;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{etcdctl_command, leaderrun, run_with_timeout, ChildGuard, Etcd, TempDir};
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::Signal;

const SEC: Duration = Duration::from_secs(1);

/// One bad invocation and what leaderrun must answer.
struct Case {
    name: &'static str,
    /// Arguments after `--endpoints <silent port>`.
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    code: i32,
    /// Each must appear in the error line (case-insensitive).
    mentions: Vec<String>,
    /// Resource limits (resource, soft, hard) leaderrun starts with.
    limits: Vec<(Resource, u64, u64)>,
}

fn case(name: &'static str, args: Vec<String>, code: i32, mentions: &[&str]) -> Case {
    Case {
        name,
        args,
        env: Vec::new(),
        code,
        mentions: mentions.iter().map(|m| m.to_string()).collect(),
        limits: Vec::new(),
    }
}

/// Environment variables, as names and values.
type Vars<'a> = &'a [(&'static str, &'a str)];

impl Case {
    /// The case with these environment variables set.
    fn with_env(mut self, vars: &[(&'static str, &str)]) -> Case {
        self.env
            .extend(vars.iter().map(|(k, v)| (*k, v.to_string())));
        self
    }

    fn with_limit(mut self, resource: Resource, soft: u64, hard: u64) -> Case {
        self.limits.push((resource, soft, hard));
        self
    }
}

/// Start `cmd` with these resource limits (as `ulimit` would set them).
fn limited(cmd: &mut Command, limits: &[(Resource, u64, u64)]) {
    use std::os::unix::process::CommandExt;
    let limits = limits.to_vec();
    // SAFETY: setrlimit only, a system call, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for &(resource, soft, hard) in &limits {
                setrlimit(resource, soft, hard)?;
            }
            Ok(())
        });
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
    // The environment: an error names the variable; words in any case.
    let env_cases: &[(Vars, &[&str])] = &[
        (&[("LEADERRUN_TTL", "0")], &["ttl", "0"]),
        (
            &[("LEADERRUN_ON_EXIT", "bogus")],
            &["LEADERRUN_ON_EXIT=bogus"],
        ),
        (&[("LEADERRUN_TTL", "abc")], &["LEADERRUN_TTL=abc"]),
        (
            &[("LEADERRUN_ID", "a\nforged line")],
            &["LEADERRUN_ID=", "control"],
        ),
        // Reported as text.
        (
            &[("LEADERRUN_LOG_FORMAT", "xml")],
            &["LEADERRUN_LOG_FORMAT=xml", "json"],
        ),
        (
            &[("LEADERRUN_RUN_ID", "r"), ("LEADERRUN_ON_EXIT", "Restart")],
            &["LEADERRUN_RUN_ID", "LEADERRUN_ON_EXIT"],
        ),
        (
            &[("LEADERRUN_STOP_TIMEOUT", "5s"), ("LEADERRUN_TTL", "3")],
            &["--ttl", "--stop-timeout"],
        ),
    ];
    for (vars, mentions) in env_cases {
        let c = case("a bad variable", with(&["--election", "t"]), 2, mentions);
        cases.push(c.with_env(vars));
    }

    // Values out of range, refused at start-up rather than wrapped, overflowed or sent to etcd.
    let over_max = ["9000000001", "10000000000", "18446744073709551616"];
    for ttl in over_max {
        cases.push(case(
            "--ttl above etcd's maximum lease TTL",
            with(&["--election", "t", "--ttl", ttl]),
            2,
            &["--ttl", ttl, "9000000000"],
        ));
    }
    for (flag, value) in [
        ("--wait-timeout", "18446744073709551615"),
        ("--wait-timeout", "500000000000years"),
        ("--wait-timeout", "9000000001s"),
        ("--stop-timeout", "18446744073709551615"),
        ("--restart-window", "500000000000years"),
        ("--run-id-ttl", "9223372036854775808"),
        ("--run-id-ttl", "18446744073709551615s"),
        ("--run-id-ttl", "9000000001"),
    ] {
        cases.push(case(
            "a duration beyond the bound",
            with(&["--election", "t", "--run-id", "r", flag, value]),
            2,
            &[flag, value, "9000000000"],
        ));
    }
    cases.push(case(
        "--run-id-ttl below a second",
        with(&["--election", "t", "--run-id", "r", "--run-id-ttl", "500ms"]),
        2,
        &["--run-id-ttl", "500ms"],
    ));
    cases.push(case(
        "--wait-timeout 0",
        with(&["--election", "t", "--wait-timeout", "0"]),
        2,
        &["--wait-timeout", "--no-wait"],
    ));
    for limit in ["0", "4294967296", "-1"] {
        cases.push(case(
            "--restart-limit out of range",
            with(&["--election", "t", "--restart-limit", limit]),
            2,
            &["--restart-limit", limit],
        ));
    }
    for mode in ["restart", "recampaign"] {
        cases.push(case(
            "--run-id with an --on-exit mode that starts the command again",
            with(&["--election", "t", "--run-id", "r", "--on-exit", mode]),
            2,
            &["--run-id", "--on-exit", mode],
        ));
    }

    // Endpoints: syntax checked, at most 64 distinct ones.
    for bad in [
        "127.0.0.1:99999",
        "127.0.0.1:0",
        ":2379",
        "ftp://127.0.0.1:2379",
        "::1",
        "[::1",
        "127.0.0.1:2379/v3",
        "127.0.0.1:2379,,127.0.0.1:2380",
    ] {
        let mut c = case(
            "a malformed endpoint",
            with(&["--election", "t", "--endpoints", bad]),
            2,
            &["--endpoints", "endpoint"],
        );
        if !bad.contains(",,") {
            c.mentions.push(bad.to_string());
        }
        cases.push(c);
    }
    let many: Vec<String> = (1..=65).map(|p| format!("127.0.0.1:{p}")).collect();
    cases.push(case(
        "65 distinct endpoints",
        with(&["--election", "t", "--endpoints", &many.join(",")]),
        2,
        &["--endpoints", "64"],
    ));
    cases.push(case(
        "65 distinct endpoints over two flags",
        with(&[
            "--election",
            "t",
            "--endpoints",
            &many[..30].join(","),
            "--endpoints",
            &many[30..].join(","),
        ]),
        2,
        &["--endpoints", "64"],
    ));

    // A shell, interpreter or wrapper says nothing about the job: --election is required.
    cases.push(case(
        "sh without --election",
        with(&[]),
        2,
        &["--election is required", "(sh)"],
    ));
    cases.push(case(
        "env without --election",
        strings(&["--", "env", "touch", &marker.display().to_string()]),
        2,
        &["--election is required", "(env)"],
    ));

    // Control characters could forge log lines or split `leaderrun leader` output.
    for (flag, value) in [
        ("--id", "a\nb"),
        ("--election", "web\u{1b}[2J"),
        ("--run-id", "r\rx"),
    ] {
        let mut args = vec![flag, value];
        if flag != "--election" {
            args.extend(["--election", "t"]);
        }
        cases.push(case(
            "a control character in a name",
            with(&args),
            2,
            &[flag, "control"],
        ));
    }

    cases.push(case(
        "words in any case, then a bad --ttl",
        with(&[
            "--election",
            "t",
            "--on-exit",
            "RESTART",
            "--log-level",
            "DEBUG",
            "--log-format",
            "Text",
            "--ttl",
            "0",
        ]),
        2,
        &["--ttl"],
    ));

    // TLS and auth: checked together, every file read at start-up (its contents later).
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, "not looked at before connecting\n").unwrap();
    let ca = ca.display().to_string();
    let password = dir.join("password");
    std::fs::write(&password, "hunter2\n").unwrap();
    let password = password.display().to_string();
    let missing = dir.join("missing.pem").display().to_string();
    let tls = [
        (
            "an http:// endpoint with a TLS option",
            vec!["--endpoints", "http://127.0.0.1:1", "--cacert", &ca],
            vec!["http://127.0.0.1:1", "--cacert", "https"],
        ),
        (
            "http and https endpoints mixed",
            vec!["--endpoints", "https://127.0.0.1:1"],
            vec!["https://127.0.0.1:1", "http://127.0.0.1:", "same scheme"],
        ),
        (
            "--cert without --key",
            vec!["--cert", &ca],
            vec!["--cert", "--key"],
        ),
        (
            "a CA file that does not exist",
            vec!["--cacert", &missing],
            vec!["--cacert", &missing],
        ),
        // Read again at every new connection: a device, a pipe or a FIFO cannot serve.
        (
            "a CA file that is no regular file",
            vec!["--cacert", "/dev/zero"],
            vec!["--cacert", "/dev/zero", "not a regular file"],
        ),
        (
            "--password-file without --user",
            vec!["--password-file", &password],
            vec!["--password-file", "--user"],
        ),
        (
            "--user without a password",
            vec!["--user", "me"],
            vec![
                "--user",
                "--password-file",
                "LEADERRUN_PASSWORD",
                "NAME:PASSWORD",
            ],
        ),
        // A directory: unreadable as a file, for root too.
        (
            "an unreadable password file",
            vec!["--user", "me", "--password-file", &subdir],
            vec!["--password-file", &subdir],
        ),
        // A file that never ends is read up to a limit, not until memory runs out.
        (
            "a password file that never ends",
            vec!["--user", "me", "--password-file", "/dev/zero"],
            vec!["--password-file", "/dev/zero", "larger than 4 MiB"],
        ),
    ];
    for (name, args, mentions) in tls {
        let mut args = args;
        args.extend(["--election", "t"]);
        cases.push(case(name, with(&args), 2, &mentions));
    }
    cases.push(
        case(
            "LEADERRUN_KEY_FILE without a certificate",
            with(&["--election", "t"]),
            2,
            &["LEADERRUN_KEY_FILE", "--cert"],
        )
        .with_env(&[("LEADERRUN_KEY_FILE", &ca)]),
    );

    // The configuration file: an error names the file, the line and the key.
    let config = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let unknown = config("unknown.toml", "ttl = 3\nstop-timeout = \"3s\"\n");
    let bad_value = config("bad.toml", "# leaderrun\n\nstop_timeout = \"soon\"\n");
    let password_key = config("password.toml", "user = \"me\"\npassword = \"hunter2\"\n");
    let absent = dir.join("absent.toml").display().to_string();
    let endless = "/dev/zero".to_string();
    for (name, file, mentions) in [
        (
            "a configuration file that never ends",
            &endless,
            vec![
                "--config".to_string(),
                endless.clone(),
                "larger than 4 MiB".into(),
            ],
        ),
        (
            "a configuration file that does not exist",
            &absent,
            vec!["--config".to_string(), absent.clone()],
        ),
        (
            "an unknown key in the configuration file",
            &unknown,
            vec![
                format!("{unknown}:2: stop-timeout: unknown key"),
                "stop_timeout".into(),
            ],
        ),
        (
            "a bad value in the configuration file",
            &bad_value,
            vec![format!("{bad_value}:3: stop_timeout: "), "duration".into()],
        ),
        (
            "a password in the configuration file",
            &password_key,
            vec![
                format!("{password_key}:2: password: "),
                "password_file".into(),
            ],
        ),
    ] {
        let mut c = case(name, with(&["--config", file, "--election", "t"]), 2, &[]);
        c.mentions = mentions;
        cases.push(c);
    }
    // A name far too long for an etcd key (etcd would refuse every campaign for good), quoted
    // cut short in the line.
    let long = "a".repeat(5000);
    cases.push(case(
        "an election name over 4096 bytes",
        with(&["--election", &long]),
        2,
        &["--election", "at most 4096 bytes", "(5000 bytes)"],
    ));
    cases.push(
        case(
            "an id over 4096 bytes, from the environment",
            with(&["--election", "t"]),
            2,
            &["LEADERRUN_ID=aaaa", "at most 4096 bytes", "(5000 bytes)"],
        )
        .with_env(&[("LEADERRUN_ID", &long)]),
    );
    // Limits of the host too low for leaderrun itself (its own stack, its connections): exit 1.
    let run_marker = with(&["--election", "t"]);
    cases.push(
        case(
            "a stack limit (soft and hard) far too low",
            run_marker.clone(),
            1,
            &["stack limit is 64 KiB", "ulimit -s", "needs at least"],
        )
        .with_limit(Resource::RLIMIT_STACK, 64 * 1024, 64 * 1024),
    );
    cases.push(
        case(
            "an open file limit (soft and hard) far too low",
            run_marker,
            1,
            &["open file limit is 8", "ulimit -n", "needs at least"],
        )
        .with_limit(Resource::RLIMIT_NOFILE, 8, 8),
    );
    cases.push(
        case(
            "LEADERRUN_CONFIG names a file that does not exist",
            with(&["--election", "t"]),
            2,
            &["LEADERRUN_CONFIG", &absent],
        )
        .with_env(&[("LEADERRUN_CONFIG", &absent)]),
    );

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
    limited(&mut cmd, &c.limits);
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
    if stderr.len() > 1000 {
        problems.push(format!("a line of {} bytes: not one to read", stderr.len()));
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
fn soft_limits_too_low_are_raised_and_the_child_gets_them_as_they_were() {
    let etcd = Etcd::single();
    let dir = TempDir::new("leaderrun-limits");
    let seen = dir.join("seen");
    let hard_files = nix::sys::resource::getrlimit(Resource::RLIMIT_NOFILE)
        .unwrap()
        .1;
    let mut cmd = leaderrun();
    cmd.args(["--endpoints", &etcd.endpoints(), "--election", "limits"])
        .args(["--", "sh", "-c"])
        .arg(format!(
            "echo \"$(ulimit -S -s) $(ulimit -S -n)\" > {}",
            seen.display()
        ));
    // Soft limits only, as `ulimit -S` sets them: leaderrun may raise them for itself.
    limited(
        &mut cmd,
        &[
            (Resource::RLIMIT_STACK, 64 * 1024, 64 * 1024 * 1024),
            // 12: the shell's redirection needs descriptor 10.
            (Resource::RLIMIT_NOFILE, 12, hard_files),
        ],
    );
    let stderr = run_for(&mut cmd, 20 * SEC, 0);
    assert_eq!(child_wrote(&seen, &stderr).trim(), "64 12", "{stderr}");
    // A subcommand too: `leader` asks etcd (nobody leads now: 3), where it would have failed to
    // connect with 8 descriptors.
    let mut cmd = leaderrun();
    cmd.args(["leader", "--endpoints", &etcd.endpoints()])
        .args(["--election", "limits"]);
    limited(&mut cmd, &[(Resource::RLIMIT_NOFILE, 8, hard_files)]);
    run_for(&mut cmd, 20 * SEC, 3);
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
    let stderr = run_for(&mut cmd, 15 * SEC, 0);
    let seen = child_wrote(&seen, &stderr);
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

/// Runs `cmd` (killed after `timeout`) and checks that it exits with `code`; returns its stderr.
fn run_for(cmd: &mut Command, timeout: Duration, code: i32) -> String {
    let out = run_with_timeout(cmd, timeout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{cmd:?}: {}; stderr:\n{stderr}",
        out.status
    );
    stderr
}

/// What a child wrote to `path`: it must have run.
fn child_wrote(path: &Path, stderr: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "the command did not write {} ({e}); stderr:\n{stderr}",
            path.display()
        )
    })
}

/// A loopback port with nothing listening: connections are refused at once.
fn closed_port() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    addr
}

/// The last line of stderr as the JSON log object it must be.
fn json_final_line(stderr: &str) -> serde_json::Value {
    let last = stderr.lines().last().unwrap_or("");
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("final line is not JSON ({e}): {stderr:?}"))
}

#[test]
fn the_final_line_is_json_with_log_format_json() {
    for (flags, vars, code, mention) in [
        // Refused while parsing, before logging is set up.
        (
            &["--log-format", "json", "--ttl", "0"][..],
            &[][..],
            2,
            "--ttl",
        ),
        (
            &["--log-format=JSON", "--wait-timeout", "500000000000years"],
            &[],
            2,
            "--wait-timeout",
        ),
        (
            &["--ttl", "abc"],
            &[("LEADERRUN_LOG_FORMAT", "JSON")],
            2,
            "--ttl",
        ),
        (
            &[],
            &[("LEADERRUN_LOG_FORMAT", "json"), ("LEADERRUN_TTL", "abc")],
            2,
            "LEADERRUN_TTL=abc",
        ),
        (
            &[
                "--log-format",
                "json",
                "--run-id",
                "r",
                "--on-exit",
                "restart",
            ],
            &[],
            2,
            "--run-id",
        ),
    ] {
        let mut cmd = leaderrun();
        cmd.args(["--endpoints", &closed_port(), "--election", "t"])
            .args(flags)
            .args(["--", "/bin/true"]);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let stderr = run_for(&mut cmd, 10 * SEC, code);
        assert_eq!(stderr.lines().count(), 1, "{flags:?} {vars:?}: {stderr}");
        let line = json_final_line(&stderr);
        assert_eq!(line["level"], "ERROR", "{line}");
        assert_eq!(line["fields"]["exit_code"], code, "{line}");
        assert!(line["timestamp"].is_string(), "{line}");
        let message = line["fields"]["message"].as_str().unwrap_or("");
        assert!(message.contains(mention), "{flags:?}: {line}");
    }
    // A command that cannot be found: its own status, in JSON too.
    let mut cmd = leaderrun();
    cmd.args(["--endpoints", &closed_port(), "--log-format", "json"])
        .args(["--", "no-such-command-xyz"]);
    let stderr = run_for(&mut cmd, 10 * SEC, 127);
    assert_eq!(
        json_final_line(&stderr)["fields"]["exit_code"],
        127,
        "{stderr}"
    );
    // The configuration file's log_format, for its own errors too.
    let dir = TempDir::new("leaderrun-json-config");
    let file = dir.join("leaderrun.toml");
    std::fs::write(&file, "log_format = \"json\"\nttl = 0\n").unwrap();
    let mut cmd = leaderrun();
    cmd.args(["--endpoints", &closed_port(), "--election", "t"])
        .arg("--config")
        .arg(&file)
        .args(["--", "/bin/true"]);
    let stderr = run_for(&mut cmd, 10 * SEC, 2);
    let message = json_final_line(&stderr)["fields"]["message"].clone();
    assert!(
        message.as_str().unwrap_or("").contains(":2: ttl: "),
        "{stderr}"
    );
    // A bad --log-format itself can only be reported as text.
    let mut cmd = leaderrun();
    cmd.args(["--log-format", "xml", "--", "/bin/true"]);
    let stderr = run_for(&mut cmd, 10 * SEC, 2);
    assert!(stderr.starts_with("leaderrun: "), "{stderr}");
    // A stack too small for leaderrun: found before the arguments are parsed, JSON all the same.
    for format in [&["--log-format", "json"][..], &["--log-format=json"]] {
        let mut cmd = leaderrun();
        cmd.args(format).args(["--", "/bin/true"]);
        limited(&mut cmd, &[(Resource::RLIMIT_STACK, 64 * 1024, 64 * 1024)]);
        let stderr = run_for(&mut cmd, 10 * SEC, 1);
        let message = json_final_line(&stderr)["fields"]["message"].clone();
        assert!(
            message
                .as_str()
                .unwrap_or("")
                .contains("stack limit is 64 KiB"),
            "{stderr}"
        );
    }
}

#[test]
fn no_wait_with_a_wait_timeout_gives_up_on_an_unreachable_etcd() {
    let mut cmd = leaderrun();
    cmd.args([
        "--endpoints",
        &closed_port(),
        "--election",
        "t",
        "--ttl",
        "2",
    ])
    .args(["--no-wait", "--wait-timeout", "2s", "--", "/bin/true"]);
    let t0 = Instant::now();
    let out = run_with_timeout(&mut cmd, 20 * SEC);
    let took = t0.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(75),
        "after {took:?}; stderr:\n{stderr}"
    );
    assert!(took >= 2 * SEC && took < 6 * SEC, "gave up after {took:?}");
}

#[test]
fn duplicate_endpoints_count_once() {
    let etcd = Etcd::single();
    // 100 spellings of one endpoint: one endpoint, not more than 64.
    let one = etcd.endpoint(0);
    let list: Vec<String> = (0..100)
        .map(|i| {
            if i % 2 == 0 {
                one.clone()
            } else {
                format!("http://{one}/")
            }
        })
        .collect();
    let mut cmd = leaderrun();
    cmd.args([
        "--endpoints",
        &list.join(","),
        "--election",
        "dups",
        "--ttl",
        "3",
    ])
    .args(["--", "/bin/true"]);
    run_for(&mut cmd, 15 * SEC, 0);
    let mut cmd = leaderrun();
    cmd.args([
        "leader",
        "--endpoints",
        &list.join(","),
        "--election",
        "dups",
    ]);
    let out = run_with_timeout(&mut cmd, 15 * SEC);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "no leader\n");
}

#[test]
fn leader_refuses_bad_input_like_the_main_command() {
    let many: Vec<String> = (1..=65).map(|p| format!("127.0.0.1:{p}")).collect();
    let many = many.join(",");
    let silent = closed_port();
    let dir = TempDir::new("leaderrun-leader-config");
    let unknown = dir.join("leaderrun.toml");
    std::fs::write(&unknown, "election = \"web\"\nwatch = true\n").unwrap();
    let unknown = unknown.display().to_string();
    let unknown_line = format!("{unknown}:2: watch");
    for (args, vars, mentions) in [
        (vec!["--election", "  "], vec![], vec!["--election"]),
        (
            vec!["--election", "a\nb"],
            vec![],
            vec!["--election", "control"],
        ),
        (
            vec!["--election", "web", "--endpoints", &many],
            vec![],
            vec!["--endpoints", "64"],
        ),
        (
            vec!["--election", "web"],
            vec![("LEADERRUN_ENDPOINTS", many.as_str())],
            vec!["LEADERRUN_ENDPOINTS", "64"],
        ),
        (
            vec!["--election", "web", "--endpoints", "127.0.0.1:99999"],
            vec![],
            vec!["127.0.0.1:99999"],
        ),
        (
            vec!["--format", "yaml", "--election", "web"],
            vec![],
            vec!["--format", "yaml"],
        ),
        (vec![], vec![], vec!["--election"]),
        (
            vec!["--config", &unknown],
            vec![],
            vec![&unknown_line, "unknown key"],
        ),
        (
            vec!["--election", "web", "--user", "me"],
            vec![],
            vec!["--user", "--password-file"],
        ),
        (
            vec!["--election", "web", "--endpoints", "http://127.0.0.1:1"],
            vec![(
                "LEADERRUN_CACERT",
                concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"),
            )],
            vec!["http://127.0.0.1:1", "LEADERRUN_CACERT"],
        ),
    ] {
        let mut cmd = leaderrun();
        cmd.arg("leader");
        if !vars.iter().any(|(k, _)| *k == "LEADERRUN_ENDPOINTS") && !args.contains(&"--endpoints")
        {
            cmd.args(["--endpoints", &silent]);
        }
        cmd.args(&args);
        for (k, v) in &vars {
            cmd.env(k, v);
        }
        let out = run_with_timeout(&mut cmd, 10 * SEC);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("leaderrun: "), "{args:?}: {stderr}");
        for m in mentions {
            assert!(
                stderr.contains(m),
                "{args:?}: {stderr} does not mention {m}"
            );
        }
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

/// `etcdctl lease grant` → the lease id in hex as the election API writes it in keys (`%x`:
/// without the leading zeros etcdctl prints).
fn grant(etcd: &Etcd, ttl: &str) -> String {
    let out = etcd.etcdctl_ok(&["lease", "grant", ttl]);
    out.split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("lease grant said {out:?}"))
        .trim_start_matches('0')
        .to_string()
}

#[test]
fn leader_reports_a_key_that_blocks_the_election() {
    let etcd = Etcd::single();
    let ask = |election: &str, format: &str| {
        let mut cmd = leaderrun();
        cmd.args([
            "leader",
            "--endpoints",
            &etcd.endpoints(),
            "--election",
            election,
        ])
        .args(["--format", format]);
        let out = run_with_timeout(&mut cmd, 15 * SEC);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // A key without a lease: `etcdctl put web/x v`.
    etcd.put("web/x", "v");
    let (code, stdout, stderr) = ask("web", "text");
    assert_eq!(code, Some(3), "{stdout}{stderr}");
    assert_eq!(
        stdout,
        "blocked by key=web/x: no lease, not a candidate; it blocks the election until deleted\n"
    );
    let (code, stdout, _) = ask("web", "json");
    assert_eq!(code, Some(3));
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["blocked_by"], "web/x", "{v}");
    assert!(
        v["reason"].as_str().unwrap_or("").contains("no lease"),
        "{v}"
    );

    // A candidate of the nested election jobs/nightly, as `etcdctl elect jobs/nightly` makes it.
    let lease = grant(&etcd, "60");
    etcd.etcdctl_ok(&[
        "put",
        "--lease",
        &lease,
        &format!("jobs/nightly/{lease}"),
        "me",
    ]);
    let (code, stdout, stderr) = ask("jobs", "text");
    assert_eq!(code, Some(3), "{stdout}{stderr}");
    assert!(
        stdout.starts_with(&format!("blocked by key=jobs/nightly/{lease}: "))
            && stdout.contains("nested election jobs/nightly"),
        "{stdout}"
    );
    // ...which is the live leader of jobs/nightly itself.
    let (code, stdout, _) = ask("jobs/nightly", "text");
    assert_eq!(code, Some(0));
    let revision = stdout
        .split_whitespace()
        .find_map(|f| f.strip_prefix("revision="))
        .unwrap_or("?");
    assert_eq!(
        stdout,
        format!("id=me key=jobs/nightly/{lease} revision={revision} lease={lease}\n")
    );

    // An id written by another tool cannot split the output.
    let lease = grant(&etcd, "60");
    etcd.etcdctl_ok(&[
        "put",
        "--lease",
        &lease,
        &format!("evil/{lease}"),
        "a\nid=forged",
    ]);
    let (code, stdout, _) = ask("evil", "text");
    assert_eq!(code, Some(0));
    assert_eq!(stdout.lines().count(), 1, "{stdout:?}");
    assert!(
        stdout.starts_with("id=a\\nid=forged key=evil/"),
        "{stdout:?}"
    );
}

#[test]
fn a_nested_leaderrun_does_not_join_its_parents_election() {
    let etcd = Etcd::single();
    let dir = TempDir::new("leaderrun-nested");
    let seen = dir.join("seen");
    // A plain program (not a shell), so that its file name is the nested default election.
    let inner = dir.join("inner-job");
    std::fs::write(
        &inner,
        format!(
            "#!/bin/sh\necho \"$LEADERRUN_ELECTION $LEADERRUN_ID\" > {}\n",
            seen.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o755)).unwrap();
    let nested = format!(
        "exec {} --ttl 3 --wait-timeout 5s -- {}",
        env!("CARGO_BIN_EXE_leaderrun"),
        inner.display()
    );
    let mut cmd = leaderrun();
    // Settings other than the election and id are inherited on purpose: the endpoints here.
    cmd.env("LEADERRUN_ENDPOINTS", etcd.endpoints())
        .args(["--election", "parent", "--id", "parent-id", "--ttl", "3"])
        .args(["--", "/bin/sh", "-c", &nested]);
    let stderr = run_for(&mut cmd, 30 * SEC, 0);
    let seen = child_wrote(&seen, &stderr);
    let fields: Vec<&str> = seen.split_whitespace().collect();
    assert_eq!(fields.len(), 2, "{seen:?}");
    assert_eq!(fields[0], "inner-job", "stderr:\n{stderr}");
    assert_ne!(fields[1], "parent-id");
}

/// A FIFO named as an input file (that nobody writes) is waited for as a slow pipe is, up to
/// a bound, then refused with one line: opening it must not wait for a writer forever.
#[test]
fn a_fifo_nobody_writes_as_an_input_file_is_refused_in_bounded_time() {
    let dir = TempDir::new("leaderrun-fifo-input");
    let fifo = dir.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let fifo = fifo.display().to_string();
    let marker = dir.join("started");
    let touch = format!("touch {}", marker.display());
    for (flag, args) in [
        ("--config", vec!["--config", &fifo]),
        (
            "--password-file",
            vec!["--user", "me", "--password-file", &fifo],
        ),
    ] {
        let mut cmd = leaderrun();
        cmd.args(["--endpoints", &closed_port(), "--election", "t"])
            .args(&args)
            .args(["--", "/bin/sh", "-c", &touch]);
        let t0 = Instant::now();
        let out = run_with_timeout(&mut cmd, 30 * SEC);
        let took = t0.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
        assert!(took < 20 * SEC, "{flag}: took {took:?}");
        assert_eq!(stderr.lines().count(), 1, "{flag}: {stderr}");
        for m in [flag, fifo.as_str(), "nothing more to read within 10s"] {
            assert!(stderr.contains(m), "{flag}: no {m:?} in {stderr}");
        }
        assert!(!marker.exists(), "{flag}: the command was started");
    }
}

/// A configuration file from a pipe (`--config <(...)`) is read once and used whole: the early
/// look for its log format must not leave an empty pipe for the rest.
#[test]
fn a_configuration_file_from_a_pipe_is_read_whole() {
    let program = leaderrun().get_program().to_string_lossy().into_owned();
    let script = format!(
        "exec '{program}' --endpoints {} --config <(printf 'ttl = \"soon\"\\n') -- true",
        closed_port()
    );
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &script]);
    let out = run_with_timeout(&mut cmd, 20 * SEC);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(":1: ttl:"),
        "the file's ttl was not read: {stderr}"
    );
}

#[test]
fn a_closed_stderr_does_not_take_the_supervisor_down() {
    let (reader, writer) = std::io::pipe().unwrap();
    // Nobody will read what leaderrun logs.
    drop(reader);
    let mut cmd = leaderrun();
    cmd.args([
        "--endpoints",
        &closed_port(),
        "--election",
        "x",
        "--ttl",
        "2",
    ])
    .args(["--", "sleep", "30"])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::from(writer));
    let mut child = ChildGuard::spawn(&mut cmd);
    std::thread::sleep(SEC);
    child.signal(Signal::SIGTERM);
    let status = child
        .wait_timeout(10 * SEC)
        .expect("leaderrun did not exit");
    assert_eq!(
        status.code(),
        Some(0),
        "{status} (134 or a signal: it died writing a log line)"
    );
}

#[test]
fn a_closed_stdout_ends_leader_quietly() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let etcd = Etcd::single();
    let mut cmd = leaderrun();
    cmd.args([
        "leader",
        "--endpoints",
        &etcd.endpoints(),
        "--election",
        "web",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::from(writer))
    .stderr(Stdio::piped());
    let mut child = ChildGuard::spawn(&mut cmd);
    let status = child
        .wait_timeout(10 * SEC)
        .expect("leaderrun leader did not exit");
    assert_eq!(status.code(), Some(1), "{status}");
    let mut stderr = String::new();
    use std::io::Read;
    let _ = child
        .child_mut()
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr);
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn a_configuration_file_gives_the_election_ttl_and_command() {
    let etcd = Etcd::single();
    let dir = TempDir::new("leaderrun-config");
    let file = dir.join("leaderrun.toml");
    let seen = dir.join("seen");
    let leader = dir.join("leader");
    let lease = dir.join("lease");
    let etcdctl = etcdctl_command(&etcd.endpoints(), &[]);
    let etcdctl = etcdctl.get_program().to_string_lossy();
    // While leading, the command asks `leaderrun leader --config` (the same file) who leads,
    // and etcd how long its lease is.
    let script = format!(
        "echo \"$LEADERRUN_ELECTION\" > {seen}; \
         {leaderrun} leader --config {file} > {leader} 2>&1; \
         ETCDCTL_API=3 {etcdctl} --endpoints {endpoints} lease timetolive \"$LEADERRUN_LEASE\" \
         > {lease} 2>&1",
        seen = seen.display(),
        leaderrun = env!("CARGO_BIN_EXE_leaderrun"),
        file = file.display(),
        leader = leader.display(),
        endpoints = etcd.endpoints(),
        lease = lease.display(),
    );
    std::fs::write(
        &file,
        format!(
            "# leaderrun's settings\n\
             endpoints = [\"{}\"]\n\
             election = \"from-file\"\n\
             id = \"file-id\"\n\
             ttl = 7\n\
             command = [\"/bin/sh\", \"-c\", {}]\n",
            etcd.endpoints(),
            serde_json::Value::from(script.as_str())
        ),
    )
    .unwrap();
    let mut cmd = leaderrun();
    cmd.args(["--config", &file.display().to_string(), "--no-wait"]);
    let stderr = run_for(&mut cmd, 30 * SEC, 0);
    assert_eq!(child_wrote(&seen, &stderr).trim(), "from-file");
    let leader = child_wrote(&leader, &stderr);
    assert!(
        leader.starts_with("id=file-id key=from-file/"),
        "leaderrun leader said {leader:?}"
    );
    let lease = child_wrote(&lease, &stderr);
    assert!(lease.contains("granted with TTL(7s)"), "{lease}");
    // The command line's command wins over the file's.
    let mut cmd = leaderrun();
    cmd.args(["--config", &file.display().to_string(), "--no-wait"])
        .args(["--", "/bin/sh", "-c", "exit 7"]);
    run_for(&mut cmd, 30 * SEC, 7);
}

#[test]
fn a_password_is_never_written_and_argv_passwords_are_warned_of() {
    let etcd = Etcd::single();
    let secret = "Sup3r-s3cret-passw0rd";
    let run = |user: &str, vars: &[(&str, &str)]| {
        let mut cmd = leaderrun();
        cmd.args(["--endpoints", &etcd.endpoints(), "--user", user])
            .args(["--log-level", "trace", "--election", "pw", "--ttl", "3"])
            .args(["--no-wait", "--wait-timeout", "3s", "--", "/bin/true"]);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let out = run_with_timeout(&mut cmd, 20 * SEC);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.code().is_some(), "{}: {all}", out.status);
        assert!(!all.contains(secret), "the password was written:\n{all}");
        all
    };
    // This etcd has no auth: leaderrun may run or be refused; either way the password stays
    // unsaid.
    let all = run("root", &[("LEADERRUN_PASSWORD", secret)]);
    assert!(!all.contains("argv"), "{all}");
    let all = run(&format!("root:{secret}"), &[]);
    assert!(
        all.lines()
            .any(|l| l.contains("WARN") && l.contains("--user") && l.contains("argv")),
        "no warning about the password in argv:\n{all}"
    );
}
