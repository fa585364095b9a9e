//! Under systemd (`Type=notify`, `WatchdogSec=`): READY, STATUS and STOPPING follow the role,
//! the watchdog pings come from the supervisor's thread and stop while it is frozen, and the
//! child sees none of systemd's variables. A datagram socket in the scene's dir stands in for
//! systemd's notify socket.

mod common;

use common::*;
use nix::sys::signal::Signal;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// systemd's side of one leaderrun's notify socket: every datagram, with when it arrived.
struct Systemd {
    path: PathBuf,
    got: Arc<Mutex<Vec<(Instant, String)>>>,
    done: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl Systemd {
    /// A socket `notify-<id>` in the scene's dir, and a thread collecting what arrives.
    fn listen(scene: &Scene, id: &str) -> Systemd {
        let path = scene.path(&format!("notify-{id}"));
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(50 * MS))
            .expect("read timeout");
        let got = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (got, done) = (got.clone(), done.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 4096];
                while !done.load(Ordering::Relaxed) {
                    if let Ok(n) = socket.recv(&mut buf) {
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        got.lock().unwrap().push((Instant::now(), text));
                    }
                }
            })
        };
        Systemd {
            path,
            got,
            done,
            reader: Some(reader),
        }
    }

    /// Every assignment received (`READY=1`, `STATUS=...`), in order, with its datagram's time.
    fn lines(&self) -> Vec<(Instant, String)> {
        let got = self.got.lock().unwrap();
        got.iter()
            .flat_map(|(t, msg)| msg.lines().map(move |l| (*t, l.to_string())))
            .collect()
    }

    fn texts(&self) -> Vec<String> {
        self.lines().into_iter().map(|(_, l)| l).collect()
    }

    /// The STATUS= values, in order.
    fn statuses(&self) -> Vec<String> {
        self.texts()
            .iter()
            .filter_map(|l| l.strip_prefix("STATUS=").map(str::to_string))
            .collect()
    }

    /// Waits (<= `timeout`) until a line satisfies `pred`; panics showing all lines if none does.
    fn wait_line(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> Instant {
        let found = poll_for(
            timeout,
            || self.lines().into_iter().find(|(_, l)| pred(l)),
            Option::is_some,
        );
        match found {
            Ok(Some((t, _))) => t,
            _ => panic!("no {what} within {timeout:?}: {:#?}", self.texts()),
        }
    }

    /// The times of the watchdog pings.
    fn pings(&self) -> Vec<Instant> {
        self.lines()
            .into_iter()
            .filter(|(_, l)| l == "WATCHDOG=1")
            .map(|(t, _)| t)
            .collect()
    }

    fn pings_between(&self, from: Instant, to: Instant) -> usize {
        self.pings()
            .into_iter()
            .filter(|t| *t > from && *t <= to)
            .count()
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// A candidate with none of systemd's variables from the test's own environment (a test run
/// under systemd has them): the test sets them per launch.
fn candidate<'s>(scene: &'s Scene, id: &str) -> Launch<'s> {
    scene
        .leaderrun(id)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
}

/// A standby is ready once it campaigns, a leader once it leads; the STATUS lines follow a
/// SIGTERM handover: the old leader's last one says it is stopping, then STOPPING=1; the new
/// leader's names its key, revision and child.
#[test]
fn ready_for_a_leader_and_a_standby_and_status_across_a_sigterm_handover() {
    let (_etcd, scene) = etcd_and_scene();
    let (sd_a, sd_b) = (Systemd::listen(&scene, "A"), Systemd::listen(&scene, "B"));
    let mut a = candidate(&scene, "A")
        .args(&["--ttl", "3"])
        .env("NOTIFY_SOCKET", &sd_a.path)
        .spawn();
    let run_a = scene.wait_leading("A", 1, 10 * SEC);
    sd_a.wait_line("READY=1 from the leader", 5 * SEC, |l| l == "READY=1");
    let leading_a = format!("revision {}, child pid {}", revision(&run_a), run_a.pid);
    sd_a.wait_line("the leader's status", 5 * SEC, |l| {
        l.starts_with("STATUS=leading: key svc/") && l.ends_with(&leading_a)
    });
    let b = candidate(&scene, "B")
        .args(&["--ttl", "3"])
        .env("NOTIFY_SOCKET", &sd_b.path)
        .spawn();
    sd_b.wait_line("READY=1 from the standby", 10 * SEC, |l| l == "READY=1");
    assert_eq!(
        sd_b.statuses().last().map(String::as_str),
        Some("standby: campaigning on svc"),
        "{:#?}",
        sd_b.texts()
    );
    assert!(
        sd_b.statuses()[0].starts_with("waiting for etcd since "),
        "{:#?}",
        sd_b.texts()
    );

    let run_b = scene.sigterm_handover(&mut a, &run_a, "B", 3 * SEC, "with systemd's notify");
    let texts = sd_a.texts();
    let last_status = texts.iter().rposition(|l| l.starts_with("STATUS="));
    let stopping = texts.iter().position(|l| l == "STOPPING=1");
    assert!(
        matches!((last_status, stopping), (Some(s), Some(p)) if p > s),
        "STATUS, then STOPPING=1: {texts:#?}"
    );
    assert!(
        texts[last_status.unwrap()].starts_with("STATUS=stopping"),
        "{texts:#?}"
    );
    assert_eq!(texts.iter().filter(|l| *l == "STOPPING=1").count(), 1);
    assert_eq!(texts.iter().filter(|l| *l == "READY=1").count(), 1);

    let leading_b = format!("revision {}, child pid {}", revision(&run_b), run_b.pid);
    sd_b.wait_line("the new leader's status", 5 * SEC, |l| {
        l.starts_with("STATUS=leading: key svc/") && l.ends_with(&leading_b)
    });
    assert_eq!(
        sd_b.texts().iter().filter(|l| *l == "READY=1").count(),
        1,
        "READY=1 once: {:#?}",
        sd_b.texts()
    );
    assert!(!sd_b.texts().iter().any(|l| l == "STOPPING=1"));
    drop(b);
}

/// WATCHDOG_USEC=1000000: a ping about every 500 ms; none while leaderrun is SIGSTOPped (the
/// pings come from the supervisor's own thread), again after SIGCONT.
#[test]
fn watchdog_pings_at_half_the_interval_and_stop_while_leaderrun_is_frozen() {
    let (_etcd, scene) = etcd_and_scene();
    let sd = Systemd::listen(&scene, "A");
    let a = candidate(&scene, "A")
        .args(&["--ttl", "10"])
        .env("NOTIFY_SOCKET", &sd.path)
        .env("WATCHDOG_USEC", "1000000")
        .spawn();
    let run_a = scene.wait_leading("A", 1, 10 * SEC);
    sd.wait_line("READY=1", 5 * SEC, |l| l == "READY=1");

    let t0 = Instant::now();
    std::thread::sleep(2 * SEC);
    let pings = sd.pings_between(t0, Instant::now());
    scene.report(&format!("{pings} pings in 2 s at WATCHDOG_USEC=1000000"));
    assert!(
        (3..=6).contains(&pings),
        "{pings} pings in 2 s: {:?}",
        sd.pings()
    );
    let all = sd.pings();
    let gaps: Vec<Duration> = all.windows(2).map(|w| w[1] - w[0]).collect();
    let mut sorted = gaps.clone();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    assert!(
        (300 * MS..=800 * MS).contains(&median),
        "median gap {median:?}: {gaps:?}"
    );

    scene.mark("SIGSTOP to A");
    a.signal(Signal::SIGSTOP);
    // A ping in flight when the signal landed may still arrive.
    std::thread::sleep(100 * MS);
    let frozen = Instant::now();
    std::thread::sleep(2 * SEC);
    let thawed = Instant::now();
    let while_frozen = sd.pings_between(frozen, thawed);
    scene.mark("SIGCONT to A");
    a.signal(Signal::SIGCONT);
    assert_eq!(while_frozen, 0, "pings while frozen: {:?}", sd.pings());
    let resumed = poll_for(
        3 * SEC,
        || sd.pings().into_iter().find(|t| *t > thawed),
        Option::is_some,
    );
    let Ok(Some(resumed)) = resumed else {
        panic!("no ping within 3 s of SIGCONT: {:?}", sd.pings());
    };
    assert!(
        resumed - thawed < 1500 * MS,
        "the first ping came {:?} after SIGCONT",
        resumed - thawed
    );
    std::thread::sleep(1500 * MS);
    let after = sd.pings_between(thawed, Instant::now());
    assert!(
        (2..=6).contains(&after),
        "{after} pings in the 1.5 s after SIGCONT"
    );
    // A burst after the thaw would hide the freeze from systemd: at most one catch-up ping.
    let burst = sd.pings_between(thawed, thawed + 200 * MS);
    assert!(burst <= 2, "{burst} pings within 200 ms of SIGCONT");
    assert!(running_now(&scene.current(run_a.pid)));
}

/// The child is not the unit's main process: it gets neither the notify socket nor the
/// watchdog.
#[test]
fn the_child_sees_none_of_systemds_variables() {
    let (_etcd, scene) = etcd_and_scene();
    let sd = Systemd::listen(&scene, "A");
    let env_file = scene.path("child.env");
    let script = format!(
        "env > {0}.tmp && mv {0}.tmp {0}; sleep 30",
        env_file.display()
    );
    let _a = candidate(&scene, "A")
        .args(&["--ttl", "3"])
        .sh(&script)
        .env("NOTIFY_SOCKET", &sd.path)
        .env("WATCHDOG_USEC", "30000000")
        .env("WATCHDOG_PID", "1")
        .spawn();
    let env = poll_for(
        10 * SEC,
        || std::fs::read_to_string(&env_file).unwrap_or_default(),
        |text| !text.is_empty(),
    )
    .expect("the child wrote its environment");
    assert!(env.contains("LEADERRUN_REVISION="), "{env}");
    for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
        assert!(
            !env.lines().any(|l| l.starts_with(&format!("{var}="))),
            "{var} passed to the child: {env}"
        );
    }
    sd.wait_line("READY=1", 5 * SEC, |l| l == "READY=1");
}

/// No pings for a watchdog of another process (WATCHDOG_PID), nor for a bad WATCHDOG_USEC,
/// which is warned about once; a standby told to stop says STOPPING=1.
#[test]
fn no_pings_for_another_pid_or_a_bad_value_and_a_standby_says_stopping() {
    let (_etcd, scene) = etcd_and_scene();
    let sds: Vec<Systemd> = ["A", "B", "C"]
        .iter()
        .map(|id| Systemd::listen(&scene, id))
        .collect();
    let vars = [
        ("A", "200000", Some("1")),
        ("B", "abc", None),
        ("C", "0", None),
    ];
    let mut lrs: Vec<Lr> = vars
        .iter()
        .zip(&sds)
        .map(|((id, usec, pid), sd)| {
            let mut l = candidate(&scene, id)
                .args(&["--ttl", "3"])
                .env("NOTIFY_SOCKET", &sd.path)
                .env("WATCHDOG_USEC", usec);
            if let Some(pid) = pid {
                l = l.env("WATCHDOG_PID", pid);
            }
            l.spawn()
        })
        .collect();
    for sd in &sds {
        sd.wait_line("READY=1", 10 * SEC, |l| l == "READY=1");
    }
    std::thread::sleep(1500 * MS);
    for ((id, usec, _), sd) in vars.iter().zip(&sds) {
        assert!(
            sd.pings().is_empty(),
            "{id} (WATCHDOG_USEC={usec}) pinged: {:#?}",
            sd.texts()
        );
    }
    assert!(lrs[0].warnings().is_empty(), "{:?}", lrs[0].warnings());
    for lr in &lrs[1..] {
        let warned: Vec<String> = lr
            .warnings()
            .into_iter()
            .filter(|w| w.contains("WATCHDOG_USEC"))
            .collect();
        assert_eq!(warned.len(), 1, "{}: {:?}", lr.id, lr.warnings());
    }

    // The last one to campaign stands by: TERM makes it withdraw and say so.
    scene.wait_candidates(&["A", "B", "C"], 10 * SEC);
    let standby = scene.candidates().last().map(|(_, id)| id.clone()).unwrap();
    let i = ["A", "B", "C"]
        .iter()
        .position(|id| *id == standby)
        .unwrap();
    lrs[i].signal(Signal::SIGTERM);
    lrs[i].expect_exit_code(5 * SEC, 0, "a standby exits 0 on SIGTERM");
    let texts = sds[i].texts();
    assert_eq!(
        texts.last().map(String::as_str),
        Some("STOPPING=1"),
        "{texts:#?}"
    );
    assert!(
        texts.iter().any(|l| l.starts_with("STATUS=standby")),
        "{texts:#?}"
    );
}

/// A notify socket nobody listens on is logged once and changes nothing else; without
/// NOTIFY_SOCKET, the watchdog variables are not even looked at.
#[test]
fn an_unwritable_notify_socket_is_logged_once_and_survived() {
    let (_etcd, scene) = etcd_and_scene();
    let mut a = candidate(&scene, "A")
        .args(&["--ttl", "3"])
        .env("NOTIFY_SOCKET", scene.path("nobody-listens"))
        .env("WATCHDOG_USEC", "100000")
        .spawn();
    let run_a = scene.wait_leading("A", 1, 10 * SEC);
    let b = candidate(&scene, "B")
        .args(&["--ttl", "3"])
        .env("WATCHDOG_USEC", "abc")
        .spawn();
    scene.wait_candidates(&["A", "B"], 10 * SEC);
    // About thirty failed pings.
    assert!(holds_for(1500 * MS, || running_now(
        &scene.current(run_a.pid)
    )));
    let warned: Vec<String> = a
        .warnings()
        .into_iter()
        .filter(|w| w.contains("notify"))
        .collect();
    assert_eq!(warned.len(), 1, "{:?}", a.warnings());
    assert!(b.warnings().is_empty(), "{:?}", b.warnings());
    a.signal(Signal::SIGTERM);
    a.expect_exit_code(5 * SEC, 0, "a leader exits 0 on SIGTERM");
    scene.wait_leading("B", 1, 5 * SEC);
}

/// A WatchdogSec too long for the TTL to close the frozen-supervisor gap is one WARN line at
/// start, naming what would fit; one that fits says nothing.
#[test]
fn a_watchdog_too_long_for_the_ttl_is_warned_of_once_naming_what_fits() {
    let (_etcd, scene) = etcd_and_scene();
    let (sd_a, sd_b) = (Systemd::listen(&scene, "A"), Systemd::listen(&scene, "B"));
    let a = candidate(&scene, "A")
        .args(&["--ttl", "10"])
        .env("NOTIFY_SOCKET", &sd_a.path)
        .env("WATCHDOG_USEC", "8000000")
        .spawn();
    sd_a.wait_line("READY=1", 10 * SEC, |l| l == "READY=1");
    let b = candidate(&scene, "B")
        .args(&["--ttl", "10"])
        .env("NOTIFY_SOCKET", &sd_b.path)
        .env("WATCHDOG_USEC", "3000000")
        .spawn();
    sd_b.wait_line("READY=1", 10 * SEC, |l| l == "READY=1");
    let warned: Vec<String> = a
        .warnings()
        .into_iter()
        .filter(|w| w.contains("watchdog"))
        .collect();
    assert_eq!(warned.len(), 1, "{warned:#?}");
    for words in [
        "WatchdogSec=8s",
        "--ttl 10",
        "below 7s",
        "raise --ttl to 12 or more",
    ] {
        assert!(warned[0].contains(words), "{words:?} in {}", warned[0]);
    }
    assert_eq!(b.warnings(), Vec::<String>::new());
}
