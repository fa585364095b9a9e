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

use common::*;
use nix::sys::resource::Resource;
use nix::sys::signal::Signal;

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

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn bad_input_is_refused_with_one_line_and_nothing_started() {
    let scene = scene_without_etcd();
    let marker = scene.path("started");
    let plain = scene.path("plain-file");
    std::fs::write(&plain, "#!/bin/sh\ntouch /dev/null\n").unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    let subdir = scene.path("a-directory");
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
        // etcd's TTLs are whole seconds: a fraction is refused, not rounded.
        case(
            "--ttl 1500ms",
            with(&["--ttl", "1500ms"]),
            2,
            &["--ttl", "1500ms", "whole seconds", "give 1s or 2s"],
        ),
        case(
            "--ttl 1.5s",
            with(&["--ttl", "1.5s"]),
            2,
            &["1.5s", "whole seconds"],
        ),
        case(
            "LEADERRUN_TTL=999ms",
            with(&[]),
            2,
            &["LEADERRUN_TTL=999ms", "give 1s"],
        )
        .with_env(&[("LEADERRUN_TTL", "999ms")]),
        // Absurd values for the new forms.
        case("--ttl 0s", with(&["--ttl", "0s"]), 2, &["--ttl", "0s"]),
        case(
            "--status-addr :0",
            with(&["--status-addr", ":0"]),
            2,
            &["--status-addr", ":0", "port"],
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
    let ca = scene.path("ca.pem");
    std::fs::write(&ca, "not looked at before connecting\n").unwrap();
    let ca = ca.display().to_string();
    let password = scene.path("password");
    std::fs::write(&password, "hunter2\n").unwrap();
    let password = password.display().to_string();
    let missing = scene.path("missing.pem").display().to_string();
    cases.extend([
        case(
            "an http:// endpoint with a TLS option",
            with(&[
                "--endpoints",
                "http://127.0.0.1:1",
                "--cacert",
                &ca,
                "--election",
                "t",
            ]),
            2,
            &["http://127.0.0.1:1", "--cacert", "https"],
        ),
        case(
            "http and https endpoints mixed",
            with(&["--endpoints", "https://127.0.0.1:1", "--election", "t"]),
            2,
            &["https://127.0.0.1:1", "http://127.0.0.1:", "same scheme"],
        ),
        case(
            "--cert without --key",
            with(&["--cert", &ca, "--election", "t"]),
            2,
            &["--cert", "--key"],
        ),
        case(
            "a CA file that does not exist",
            with(&["--cacert", &missing, "--election", "t"]),
            2,
            &["--cacert", &missing],
        ),
        // Read again at every new connection: a device, a pipe or a FIFO cannot serve.
        case(
            "a CA file that is no regular file",
            with(&["--cacert", "/dev/zero", "--election", "t"]),
            2,
            &["--cacert", "/dev/zero", "not a regular file"],
        ),
        case(
            "--password-file without --user",
            with(&["--password-file", &password, "--election", "t"]),
            2,
            &["--password-file", "--user"],
        ),
        case(
            "--user without a password",
            with(&["--user", "me", "--election", "t"]),
            2,
            &[
                "--user",
                "--password-file",
                "LEADERRUN_PASSWORD",
                "NAME:PASSWORD",
            ],
        ),
        // A directory: unreadable as a file, for root too.
        case(
            "an unreadable password file",
            with(&[
                "--user",
                "me",
                "--password-file",
                &subdir,
                "--election",
                "t",
            ]),
            2,
            &["--password-file", &subdir],
        ),
        // A file that never ends is read up to a limit, not until memory runs out.
        case(
            "a password file that never ends",
            with(&[
                "--user",
                "me",
                "--password-file",
                "/dev/zero",
                "--election",
                "t",
            ]),
            2,
            &["--password-file", "/dev/zero", "larger than 4 MiB"],
        ),
    ]);
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
        let path = scene.path(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let unknown = config("unknown.toml", "ttl = 3\nstop-timeout = \"3s\"\n");
    let bad_value = config("bad.toml", "# leaderrun\n\nstop_timeout = \"soon\"\n");
    let password_key = config("password.toml", "user = \"me\"\npassword = \"hunter2\"\n");
    let duplicate = config("duplicate.toml", "ttl = 3\nelection = \"t\"\nttl = 4\n");
    let absent = scene.path("absent.toml").display().to_string();
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
        (
            "a key twice in the configuration file",
            &duplicate,
            vec![format!(
                "{duplicate}:3: ttl: duplicate key (first set at line 1)"
            )],
        ),
    ] {
        let mut c = case(name, with(&["--config", file, "--election", "t"]), 2, &[]);
        c.mentions = mentions;
        cases.push(c);
    }
    // An election at or under leaderrun's own key prefixes would take its records for
    // candidates; one ending in '/' would be a nested election.
    for name in [
        "leaderrun.runs",
        "leaderrun.resign/t",
        "leaderrun.holders/t",
    ] {
        cases.push(case(
            "an election among leaderrun's own keys",
            with(&["--election", name]),
            2,
            &["--election", name, "keys of its own"],
        ));
    }
    cases.push(case(
        "an election ending in '/'",
        with(&["--election", "t/"]),
        2,
        &["--election", "t/", "must not end with '/'"],
    ));
    cases.push(
        case(
            "an election among leaderrun's own keys, from the environment",
            with(&[]),
            2,
            &["LEADERRUN_ELECTION=leaderrun.runs/t", "keys of its own"],
        )
        .with_env(&[("LEADERRUN_ELECTION", "leaderrun.runs/t")]),
    );
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
    for (n, c) in cases.iter().enumerate() {
        if let Err(why) = check(&scene, n, c, &marker) {
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

/// Runs case `n` against a listening port that never answers: any contact with "etcd" would
/// leave a pending connection there (and hang leaderrun).
fn check(scene: &Scene, n: usize, c: &Case, marker: &Path) -> Result<(), String> {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    silent.set_nonblocking(true).unwrap();
    let endpoint = silent.local_addr().unwrap().to_string();
    let mut cmd = leaderrun();
    cmd.args(["--endpoints", &endpoint]).args(&c.args);
    for (k, v) in &c.env {
        cmd.env(k, v);
    }
    let t0 = Instant::now();
    let out = scene
        .command(&format!("case{n}"), cmd)
        .limits(&c.limits)
        .run(10 * SEC);
    let took = t0.elapsed();
    let stderr = stderr_of(&out);
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
        problems.push(format!("stdout not empty: {:?}", stdout_of(&out)));
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

/// Runs `cmd` in the scene as `id` (SIGKILLed after `timeout`) and checks that it exits with
/// `code`; returns its stderr.
fn run_for(scene: &Scene, id: &str, cmd: Command, timeout: Duration, code: i32) -> String {
    let out = scene.command(id, cmd).run(timeout);
    let stderr = stderr_of(&out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{id}: {}; stderr:\n{stderr}",
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

/// A loopback endpoint with nothing listening: connections are refused at once.
fn closed_port() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// A scene with no etcd behind it: its endpoint refuses connections.
fn scene_without_etcd() -> Scene {
    Scene::new(&closed_port())
}

#[test]
fn soft_limits_too_low_are_raised_and_the_child_gets_them_as_they_were() {
    let (_etcd, scene) = etcd_and_scene_with_election("limits");
    let seen = scene.path("seen");
    let hard_files = nix::sys::resource::getrlimit(Resource::RLIMIT_NOFILE)
        .unwrap()
        .1;
    let script = format!(
        "echo \"$(ulimit -S -s) $(ulimit -S -n)\" > {}",
        seen.display()
    );
    // Soft limits only, as `ulimit -S` sets them: leaderrun may raise them for itself.
    let mut a = scene
        .leaderrun("A")
        .sh(&script)
        .limits(&[
            (Resource::RLIMIT_STACK, 64 * 1024, 64 * 1024 * 1024),
            // 12: the shell's redirection needs descriptor 10.
            (Resource::RLIMIT_NOFILE, 12, hard_files),
        ])
        .spawn();
    a.expect_exit_code(20 * SEC, 0, "the child ran and exited 0");
    assert_eq!(child_wrote(&seen, &a.log_text()).trim(), "64 12");
    // A subcommand too: `leader` asks etcd (nobody leads now: 3), where it would have failed to
    // connect with 8 descriptors.
    let out = scene
        .command("leader", scene.subcommand("leader", &[]))
        .limits(&[(Resource::RLIMIT_NOFILE, 8, hard_files)])
        .run(20 * SEC);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
}

#[test]
fn a_flag_wins_over_the_environment() {
    let (_etcd, scene) = etcd_and_scene();
    let seen = scene.path("seen");
    let script = format!(
        "echo \"$LEADERRUN_ELECTION $LEADERRUN_ID $LEADERRUN_KEY\" > {}",
        seen.display()
    );
    let mut cmd = leaderrun();
    // From the environment only: endpoints and id. Set in both (flag wins):
    // election, and a TTL whose environment value alone would be refused.
    cmd.env("LEADERRUN_ENDPOINTS", &scene.etcd)
        .env("LEADERRUN_ID", "env-id")
        .env("LEADERRUN_ELECTION", "from-env")
        .env("LEADERRUN_TTL", "0")
        .args(["--election", "from-flag", "--ttl", "3s", "--"])
        .args(sh(&script));
    let stderr = run_for(&scene, "A", cmd, 15 * SEC, 0);
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
    let (etcd, scene) = etcd_and_scene_with_election("x");
    let plain = scene.path("plain-interpreter");
    std::fs::write(&plain, "not a program\n").unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    let no_interp = scene.path("no-interpreter");
    std::fs::write(&no_interp, "#!/nonexistent/interpreter\n").unwrap();
    let bad_interp = scene.path("bad-interpreter");
    std::fs::write(&bad_interp, format!("#!{}\n", plain.display())).unwrap();
    for (id, path, code) in [("A", &no_interp, 127), ("B", &bad_interp, 126)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut lr = scene
            .leaderrun(id)
            .args(&["--ttl", "3"])
            .command(&[path])
            .spawn();
        lr.expect_exit_code(10 * SEC, code, &path.display().to_string());
        // It resigned: no key left behind for the next candidate to wait on.
        let keys = etcd.keys_with_prefix("x/");
        assert!(keys.is_empty(), "keys left: {keys:?}");
    }
}

/// The last line of stderr as the JSON log object it must be.
fn json_final_line(stderr: &str) -> serde_json::Value {
    let last = stderr.lines().last().unwrap_or("");
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("final line is not JSON ({e}): {stderr:?}"))
}

#[test]
fn the_final_line_is_json_with_log_format_json() {
    let scene = scene_without_etcd();
    let cases = [
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
    ];
    for (n, (flags, vars, code, mention)) in cases.into_iter().enumerate() {
        let mut cmd = leaderrun();
        cmd.args(["--endpoints", &scene.etcd, "--election", "t"])
            .args(flags)
            .args(["--", "/bin/true"]);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let stderr = run_for(&scene, &format!("case{n}"), cmd, 10 * SEC, code);
        assert_eq!(stderr.lines().count(), 1, "{flags:?} {vars:?}: {stderr}");
        let line = json_final_line(&stderr);
        assert_eq!(line["level"], "ERROR", "{line}");
        assert_eq!(line["exit_code"], code, "{line}");
        assert!(line["timestamp"].is_string(), "{line}");
        let message = line["message"].as_str().unwrap_or("");
        assert!(message.contains(mention), "{flags:?}: {line}");
    }
    // A command that cannot be found: its own status, in JSON too.
    let mut cmd = leaderrun();
    cmd.args(["--endpoints", &scene.etcd, "--log-format", "json"])
        .args(["--", "no-such-command-xyz"]);
    let stderr = run_for(&scene, "not-found", cmd, 10 * SEC, 127);
    assert_eq!(json_final_line(&stderr)["exit_code"], 127, "{stderr}");
    // The configuration file's log_format, for its own errors too.
    let file = scene.path("leaderrun.toml");
    std::fs::write(&file, "log_format = \"json\"\nttl = 0\n").unwrap();
    let mut cmd = leaderrun();
    cmd.args(["--endpoints", &scene.etcd, "--election", "t"])
        .arg("--config")
        .arg(&file)
        .args(["--", "/bin/true"]);
    let stderr = run_for(&scene, "config", cmd, 10 * SEC, 2);
    let message = json_final_line(&stderr)["message"].clone();
    assert!(
        message.as_str().unwrap_or("").contains(":2: ttl: "),
        "{stderr}"
    );
    // A bad --log-format itself can only be reported as text.
    let mut cmd = leaderrun();
    cmd.args(["--log-format", "xml", "--", "/bin/true"]);
    let stderr = run_for(&scene, "xml", cmd, 10 * SEC, 2);
    assert!(stderr.starts_with("leaderrun: "), "{stderr}");
    // A stack too small for leaderrun: found before the arguments are parsed, JSON all the same.
    for (n, format) in [&["--log-format", "json"][..], &["--log-format=json"]]
        .into_iter()
        .enumerate()
    {
        let mut cmd = leaderrun();
        cmd.args(format).args(["--", "/bin/true"]);
        let out = scene
            .command(&format!("stack{n}"), cmd)
            .limits(&[(Resource::RLIMIT_STACK, 64 * 1024, 64 * 1024)])
            .run(10 * SEC);
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{format:?}: {stderr}");
        let message = json_final_line(&stderr)["message"].clone();
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
    let scene = scene_without_etcd();
    let t0 = Instant::now();
    let out = scene
        .leaderrun("A")
        .args(&["--ttl", "2", "--no-wait", "--wait-timeout", "2s"])
        .command(&["/bin/true"])
        .run(20 * SEC);
    let took = t0.elapsed();
    assert_eq!(
        out.status.code(),
        Some(75),
        "after {took:?}; stderr:\n{}",
        stderr_of(&out)
    );
    assert!(took >= 2 * SEC && took < 6 * SEC, "gave up after {took:?}");
}

#[test]
fn duplicate_endpoints_count_once() {
    let (etcd, scene) = etcd_and_scene_with_election("dups");
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
    let mut a = scene
        .leaderrun("A")
        .endpoints(&list.join(","))
        .args(&["--ttl", "3"])
        .command(&["/bin/true"])
        .spawn();
    a.expect_exit_code(15 * SEC, 0, "one endpoint, 100 spellings");
    let mut cmd = leaderrun();
    cmd.args(["leader", "--endpoints", &list.join(",")])
        .args(["--election", "dups"]);
    let out = scene.command("leader", cmd).run(15 * SEC);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out), "no leader\n");
}

#[test]
fn leader_refuses_bad_input_like_the_main_command() {
    let many: Vec<String> = (1..=65).map(|p| format!("127.0.0.1:{p}")).collect();
    let many = many.join(",");
    let scene = scene_without_etcd();
    let unknown = scene.path("leaderrun.toml");
    std::fs::write(&unknown, "election = \"web\"\nwatch = true\n").unwrap();
    let unknown = unknown.display().to_string();
    let unknown_line = format!("{unknown}:2: watch");
    let cases = [
        (vec!["--election", "  "], vec![], vec!["--election"]),
        (
            vec!["--election", "leaderrun.resign"],
            vec![],
            vec!["--election", "keys of its own"],
        ),
        (
            vec![],
            vec![("LEADERRUN_ELECTION", "web/")],
            vec!["LEADERRUN_ELECTION=web/", "must not end with '/'"],
        ),
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
    ];
    for (n, (args, vars, mentions)) in cases.into_iter().enumerate() {
        let mut cmd = leaderrun();
        cmd.arg("leader");
        if !vars.iter().any(|(k, _)| *k == "LEADERRUN_ENDPOINTS") && !args.contains(&"--endpoints")
        {
            cmd.args(["--endpoints", &scene.etcd]);
        }
        cmd.args(&args);
        for (k, v) in &vars {
            cmd.env(k, v);
        }
        let out = scene.command(&format!("case{n}"), cmd).run(10 * SEC);
        let stderr = stderr_of(&out);
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
    let (etcd, scene) = etcd_and_scene();
    let ask = |election: &str, format: &str| {
        let mut cmd = leaderrun();
        cmd.args(["leader", "--endpoints", &scene.etcd, "--election", election])
            .args(["--format", format]);
        let id = format!("leader {election} {format}").replace('/', "-");
        let out = scene.command(&id, cmd).run(15 * SEC);
        (out.status.code(), stdout_of(&out), stderr_of(&out))
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
    let (_etcd, scene) = etcd_and_scene();
    let seen = scene.path("seen");
    // A plain program (not a shell), so that its file name is the nested default election.
    let inner = scene.path("inner-job");
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
    cmd.env("LEADERRUN_ENDPOINTS", &scene.etcd)
        .args(["--election", "parent", "--id", "parent-id", "--ttl", "3"])
        .arg("--")
        .args(sh(&nested));
    let stderr = run_for(&scene, "parent", cmd, 30 * SEC, 0);
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
    let scene = scene_without_etcd();
    let fifo = scene.path("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let fifo = fifo.display().to_string();
    let marker = scene.path("started");
    let touch = format!("touch {}", marker.display());
    for (flag, args) in [
        ("--config", vec!["--config", &fifo]),
        (
            "--password-file",
            vec!["--user", "me", "--password-file", &fifo],
        ),
    ] {
        let t0 = Instant::now();
        let out = scene
            .leaderrun(flag.trim_start_matches('-'))
            .args(&args)
            .sh(&touch)
            .run(30 * SEC);
        let took = t0.elapsed();
        let stderr = stderr_of(&out);
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
    let scene = scene_without_etcd();
    let program = leaderrun().get_program().to_string_lossy().into_owned();
    let script = format!(
        "exec '{program}' --endpoints {} --config <(printf 'ttl = \"soon\"\\n') -- true",
        scene.etcd
    );
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &script]);
    let stderr = run_for(&scene, "bash", cmd, 20 * SEC, 2);
    assert!(
        stderr.contains(":1: ttl:"),
        "the file's ttl was not read: {stderr}"
    );
}

#[test]
fn a_closed_stderr_does_not_take_the_supervisor_down() {
    let scene = scene_without_etcd();
    let mut a = scene
        .leaderrun("A")
        .args(&["--ttl", "2"])
        .command(&["sleep", "30"])
        .stderr(Stderr::Piped)
        .spawn();
    // Nobody will read what leaderrun logs.
    drop(a.take_stderr());
    std::thread::sleep(SEC);
    a.signal(Signal::SIGTERM);
    let status = a.wait_exit(10 * SEC).expect("leaderrun did not exit");
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
    let (_etcd, scene) = etcd_and_scene_with_election("web");
    let out = scene
        .command("leader", scene.subcommand("leader", &[]))
        .stdout(Stdio::from(writer))
        .run(10 * SEC);
    assert_eq!(out.status.code(), Some(1), "{}", out.status);
    assert!(out.stderr.is_empty(), "{}", stderr_of(&out));
}

#[test]
fn a_configuration_file_gives_the_election_ttl_and_command() {
    let (_etcd, scene) = etcd_and_scene();
    let file = scene.path("leaderrun.toml");
    let seen = scene.path("seen");
    let leader = scene.path("leader");
    let lease = scene.path("lease");
    let etcdctl = scene.etcdctl_command(&[]);
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
        endpoints = scene.etcd,
        lease = lease.display(),
    );
    std::fs::write(
        &file,
        format!(
            "# leaderrun's settings\n\
             endpoints = [\"{}\"]\n\
             election = \"from-file\"\n\
             id = \"file-id\"\n\
             ttl = \"7s\"\n\
             command = [\"/bin/sh\", \"-c\", {}]\n",
            scene.etcd,
            serde_json::Value::from(script.as_str())
        ),
    )
    .unwrap();
    let mut cmd = leaderrun();
    cmd.args(["--config", &file.display().to_string(), "--no-wait"]);
    let stderr = run_for(&scene, "A", cmd, 30 * SEC, 0);
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
    run_for(&scene, "B", cmd, 30 * SEC, 7);
}

#[test]
fn a_password_is_never_written_and_argv_passwords_are_warned_of() {
    let (_etcd, scene) = etcd_and_scene_with_election("pw");
    let secret = "Sup3r-s3cret-passw0rd";
    let run = |id: &str, user: &str, vars: &[(&str, &str)]| {
        let mut launch = scene
            .leaderrun(id)
            .args(&["--user", user, "--log-level", "trace", "--ttl", "3"])
            .args(&["--no-wait", "--wait-timeout", "3s"])
            .command(&["/bin/true"]);
        for (k, v) in vars {
            launch = launch.env(k, v);
        }
        let out = launch.run(20 * SEC);
        let all = format!("{}{}", stdout_of(&out), stderr_of(&out));
        assert!(out.status.code().is_some(), "{}: {all}", out.status);
        assert!(!all.contains(secret), "the password was written:\n{all}");
        all
    };
    // This etcd has no auth: leaderrun may run or be refused; either way the password stays
    // unsaid.
    let all = run("A", "root", &[("LEADERRUN_PASSWORD", secret)]);
    assert!(!all.contains("argv"), "{all}");
    let all = run("B", &format!("root:{secret}"), &[]);
    assert!(
        all.lines()
            .any(|l| l.contains("WARN") && l.contains("--user") && l.contains("argv")),
        "no warning about the password in argv:\n{all}"
    );
    // A password file others may read (or write): used, and warned of once, as ssh does.
    let loose = scene.path("loose-password");
    std::fs::write(&loose, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let loose = loose.display().to_string();
    let all = run("C", "root", &[("LEADERRUN_PASSWORD_FILE", &loose)]);
    let warned: Vec<&str> = all
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("password file"))
        .collect();
    assert_eq!(warned.len(), 1, "{all}");
    for m in ["LEADERRUN_PASSWORD_FILE", &loose, "readable", "mode 0644"] {
        assert!(warned[0].contains(m), "{m}: {all}");
    }
}

/// The first argument is where a subcommand stands: a word there that names none is a usage
/// error listing them (with a tip when it is close to one), before anything starts; the same
/// word after `--` is the command to run.
#[test]
fn a_word_where_a_subcommand_may_stand_is_a_usage_error_and_after_dashes_a_command() {
    let scene = scene_without_etcd();
    for (n, (word, tip)) in [("help", None), ("status", None), ("resing", Some("resign"))]
        .into_iter()
        .enumerate()
    {
        let mut cmd = leaderrun();
        cmd.env("LEADERRUN_ENDPOINTS", &scene.etcd).arg(word);
        let stderr = run_for(&scene, &format!("word{n}"), cmd, 10 * SEC, 2);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("leader, resign"), "{stderr}");
        assert!(stderr.contains(&format!("-- {word}")), "{stderr}");
        match tip {
            Some(t) => assert!(stderr.contains(&format!("did you mean '{t}'?")), "{stderr}"),
            None => assert!(!stderr.contains("did you mean"), "{stderr}"),
        }
    }
    // After `--`, a command (here one that does not exist: its own status).
    let mut cmd = leaderrun();
    cmd.env("LEADERRUN_ENDPOINTS", &scene.etcd)
        .args(["--", "status-xyz-none"]);
    let stderr = run_for(&scene, "after-dashes", cmd, 10 * SEC, 127);
    assert!(
        stderr.contains("command not found: status-xyz-none"),
        "{stderr}"
    );
    // A mistyped flag: clap's tip.
    let mut cmd = leaderrun();
    cmd.args(["--electoin", "x", "--", "/bin/true"]);
    let stderr = run_for(&scene, "typo", cmd, 10 * SEC, 2);
    assert!(
        stderr.contains("a similar argument exists: '--election'"),
        "{stderr}"
    );
}

/// Each command's help names it as it is typed, wrapped to 100 columns when stdout is no
/// terminal; `--version` names the commit when built from a git checkout.
#[test]
fn help_is_wrapped_names_the_command_and_the_version_its_commit() {
    let scene = Scene::new(&closed_port());
    for (n, sub) in [None, Some("leader"), Some("resign")]
        .into_iter()
        .enumerate()
    {
        let mut cmd = leaderrun();
        cmd.args(sub).arg("--help");
        let out = scene.command(&format!("help{n}"), cmd).run(10 * SEC);
        assert_eq!(out.status.code(), Some(0));
        let help = stdout_of(&out);
        let usage = format!(
            "Usage: leaderrun{}",
            sub.map(|s| format!(" {s}")).unwrap_or_default()
        );
        assert!(help.contains(&format!("{usage} ")), "{help}");
        let long: Vec<&str> = help.lines().filter(|l| l.chars().count() > 100).collect();
        assert!(
            long.is_empty(),
            "{sub:?}: lines over 100 columns: {long:#?}"
        );
    }
    let mut cmd = leaderrun();
    cmd.arg("--version");
    let out = scene.command("version", cmd).run(10 * SEC);
    let version = stdout_of(&out);
    assert!(
        version.starts_with(&format!("leaderrun {}", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    let head = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    if let Some(head) = head.ok().filter(|o| o.status.success()) {
        let commit = String::from_utf8_lossy(&head.stdout).trim().to_string();
        assert!(
            version.contains(&format!("({commit})")),
            "{version} (HEAD {commit})"
        );
    }
}
