//! `leaderrun leader`: who leads, as text or JSON, once or `--watch`ing, against real etcd.

mod common;

use std::process::Output;
use std::time::Instant;

use common::*;
use nix::sys::signal::Signal;

/// `leaderrun leader --endpoints E --election <election> extra...`, run to completion.
fn ask_leader(scene: &Scene, extra: &[&str]) -> Output {
    scene.ask("leader", extra, 15 * SEC)
}

#[test]
fn leader_reports_no_leader_with_exit_3() {
    let (_etcd, scene) = etcd_and_scene_with_election("empty");
    let out = ask_leader(&scene, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out), "no leader\n");
    let out = ask_leader(&scene, &["--format", "json"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out), "null\n");
}

/// A candidate whose child writes its LEADERRUN_KEY, _REVISION and _LEASE to
/// `<id>.env` (one per line), then sleeps. Returns once the file is there.
fn env_reporter(scene: &Scene, id: &str) -> (Lr, [String; 3]) {
    let env = scene.path(&format!("{id}.env"));
    let lr = scene.candidate_sh(
        id,
        &[],
        &format!(
            "printf '%s\\n' \"$LEADERRUN_KEY\" \"$LEADERRUN_REVISION\" \"$LEADERRUN_LEASE\" > '{0}.tmp' && mv '{0}.tmp' '{0}'; exec sleep 60",
            env.display()
        ),
    );
    let got = poll_for(10 * SEC, || lines(&env), |got| got.len() == 3)
        .unwrap_or_else(|got| panic!("{id} did not lead within 10 s: {got:?}"));
    (lr, [got[0].clone(), got[1].clone(), got[2].clone()])
}

#[test]
fn leader_prints_the_leading_candidate_as_text_and_json_like_etcdctl() {
    let (_etcd, scene) = etcd_and_scene_with_election("web");
    let (_alpha, [key, rev, lease]) = env_reporter(&scene, "alpha");
    let _beta = scene.candidate_sh("beta", &[], "exec sleep 60");
    scene.wait_candidates(&["alpha", "beta"], 10 * SEC);

    let out = ask_leader(&scene, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(
        stdout_of(&out),
        format!("id=alpha key={key} revision={rev} lease={lease}\n")
    );
    assert_eq!(key, format!("web/{lease}"));

    let out = ask_leader(&scene, &["--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    assert_eq!(text.lines().count(), 1, "{text:?}");
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON: {text:?}: {e}"));
    assert_eq!(v["id"], "alpha", "{text}");
    assert_eq!(v["key"], key.as_str(), "{text}");
    assert_eq!(v["revision"].as_i64(), rev.parse().ok(), "{text}");
    assert_eq!(v["lease"], lease.as_str(), "{text}");

    // etcdctl elect -l: the key, then the value.
    let mut c = etcdctl_command(&scene.etcd, &["elect", "-l", "web"]);
    let observer = scene.start("etcdctl-observe", &mut c);
    let shown = observer.wait_out_lines(2, 10 * SEC);
    drop(observer);
    assert_eq!(shown[..2], [key.clone(), "alpha".to_string()], "{shown:?}");
}

#[test]
fn leader_watch_prints_a_line_at_each_change_until_sigint() {
    let (_etcd, scene) = etcd_and_scene_with_election("web");
    let (mut alpha, [key_a, rev_a, _]) = env_reporter(&scene, "alpha");
    let _beta = scene.candidate_sh("beta", &[], "exec sleep 60");
    scene.wait_candidates(&["alpha", "beta"], 10 * SEC);

    let mut watch = scene.start("watch", &mut scene.subcommand("leader", &["--watch"]));
    let shown = watch.wait_out_lines(1, 10 * SEC);
    assert!(
        shown[0].starts_with(&format!("id=alpha key={key_a} revision={rev_a} ")),
        "{shown:?}"
    );

    let t0 = Instant::now();
    alpha.signal(Signal::SIGTERM);
    let shown = watch.wait_out_lines(2, 5 * SEC);
    let took = t0.elapsed();
    assert!(shown[1].starts_with("id=beta key=web/"), "{shown:?}");
    let rev_b: i64 = shown[1]
        .split_whitespace()
        .find_map(|f| f.strip_prefix("revision="))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no revision in {:?}", shown[1]));
    assert!(rev_b > rev_a.parse::<i64>().unwrap(), "{shown:?}");
    assert!(took < 5 * SEC);
    let status = alpha.expect_exit(10 * SEC);
    assert_eq!(status.code(), Some(143));

    assert!(watch.is_running(), "--watch ended by itself");
    watch.signal(Signal::SIGINT);
    let status = watch.expect_exit(5 * SEC);
    assert_eq!(status.code(), Some(0), "--watch on SIGINT: {status}");
    assert_eq!(lines(&watch.out).len(), 2, "{:?}", watch.out_text());
}

#[test]
fn leader_without_election_is_a_usage_error() {
    let mut c = leaderrun();
    c.args(["leader", "--endpoints", "127.0.0.1:9"]);
    let out = run_with_timeout(&mut c, 10 * SEC);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(err.contains("--election"), "{err:?}");
    assert!(stdout_of(&out).is_empty(), "{:?}", stdout_of(&out));
}

/// etcdctl's ETCDCTL_ENDPOINTS alone reaches etcd (no flag, no LEADERRUN_ variable), for
/// `leaderrun leader` as for a candidate, which says so at start.
#[test]
fn etcdctls_endpoints_variable_alone_reaches_etcd() {
    let (_etcd, scene) = etcd_and_scene_with_election("web");
    let mut cmd = leaderrun();
    cmd.env("ETCDCTL_ENDPOINTS", &scene.etcd).args([
        "--election",
        "web",
        "--id",
        "alpha",
        "--",
        "sleep",
        "60",
    ]);
    let alpha = scene.start("alpha", &mut cmd);
    scene.wait_candidates(&["alpha"], 10 * SEC);
    let log = alpha.log_with("connecting with", 10 * SEC);
    assert!(
        log.contains("INFO connecting with etcdctl's ETCDCTL_ENDPOINTS"),
        "{log}"
    );
    let mut ask = leaderrun();
    ask.env("ETCDCTL_ENDPOINTS", &scene.etcd)
        .args(["leader", "--election", "web"]);
    let out = scene.command("ask", ask).run(15 * SEC);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(
        stdout_of(&out).starts_with("id=alpha key=web/"),
        "{}",
        stdout_of(&out)
    );
    // Unset or empty, the default endpoint (where nothing listens here) is used: exit 1 after
    // its attempts, or 3; never this etcd's answer.
    let mut ask = leaderrun();
    ask.env("ETCDCTL_ENDPOINTS", "")
        .args(["leader", "--election", "web"]);
    let out = scene.command("empty", ask).run(30 * SEC);
    assert!(!stdout_of(&out).contains("alpha"), "{}", stdout_of(&out));
}
