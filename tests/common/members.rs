//! Which etcd member a leaderrun talks to, and steering raft leadership: for the tests that
//! fail one member at a time.

use super::{etcdctl_at, EtcdCluster};
use std::process::Command;
use std::time::Duration;

/// Bytes process `pid` has sent so far on each established TCP connection,
/// by remote port (from `ss -tnpi`, iproute2).
pub fn bytes_sent_by_port(pid: u32) -> Vec<(u16, u64)> {
    let out = Command::new("ss")
        .args(["-tnpiH"])
        .output()
        .expect("the cluster test needs `ss` (iproute2)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let mut sent = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if !line.contains(&format!("pid={pid},")) {
            continue;
        }
        let peer = line.split_whitespace().nth(4).unwrap_or("");
        let port = peer.rsplit(':').next().and_then(|p| p.parse().ok());
        let bytes = lines
            .get(i + 1)
            .and_then(|info| {
                info.split_whitespace()
                    .find_map(|f| f.strip_prefix("bytes_sent:"))
            })
            .and_then(|b| b.parse().ok());
        if let (Some(port), Some(bytes)) = (port, bytes) {
            sent.push((port, bytes));
        }
    }
    sent
}

/// The member whose connection from `pid` sends the most over `window`: the
/// one carrying the lease keepalive stream (a keepalive every TTL/5; the
/// other connections carry only HTTP/2 pings every 5 s).
pub fn busiest_member(cluster: &EtcdCluster, pid: u32, window: Duration) -> usize {
    // A new leader's bookkeeping (its history record, the step-down watch) goes out on the
    // requests' connection 100 ms after its child started, a burst larger than a window of
    // keepalives: let it pass before the first sample.
    std::thread::sleep(Duration::from_secs(1));
    // A loaded machine can leave one window without a sample of the keepalives: look again.
    let mut last = String::new();
    for _ in 0..3 {
        let before = bytes_sent_by_port(pid);
        std::thread::sleep(window);
        let after = bytes_sent_by_port(pid);
        let grown = |i: usize| {
            let port = cluster.client_addr(i).port();
            // Every connection to the member counts (the balanced client's and the keepalive's).
            let at = |v: &[(u16, u64)]| {
                v.iter()
                    .filter(|(p, _)| *p == port)
                    .map(|(_, b)| *b)
                    .sum::<u64>()
            };
            at(&after).saturating_sub(at(&before))
        };
        let growth: Vec<u64> = (0..cluster.size()).map(grown).collect();
        let busiest = (0..cluster.size()).max_by_key(|&i| growth[i]).unwrap();
        if growth.iter().filter(|&&g| g == growth[busiest]).count() == 1 && growth[busiest] > 0 {
            return busiest;
        }
        last = format!("bytes sent {growth:?}, connections before {before:?} after {after:?}");
    }
    panic!("cannot tell which member carries the keepalives: {last}")
}

/// Makes member `to` the raft leader (etcdctl move-leader, sent to the leader).
pub fn move_raft_leader(cluster: &mut EtcdCluster, from: usize, to: usize) {
    let list = cluster.etcdctl_ok(&["member", "list", "-w", "simple"]);
    // "<id hex>, started, <name>, <peer url>, <client url>, <is learner>"
    let target_url = cluster.client_url(to);
    let id = list
        .lines()
        .find(|l| l.split(", ").nth(4) == Some(target_url.as_str()))
        .and_then(|l| l.split(", ").next())
        .unwrap_or_else(|| panic!("member {to} ({target_url}) not in:\n{list}"))
        .to_string();
    let out = etcdctl_at(&cluster.endpoint(from), &["move-leader", &id]);
    assert!(
        out.status.success(),
        "move-leader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        cluster.wait_leader(Duration::from_secs(10)),
        to,
        "raft leadership did not move"
    );
}

/// Makes sure member `i` is not the raft leader (moving the leadership to the next member if
/// it is), so that killing or freezing it does not cost a raft election.
pub fn move_raft_leader_off(cluster: &mut EtcdCluster, i: usize) {
    let leader = cluster.wait_leader(Duration::from_secs(10));
    if leader == i {
        move_raft_leader(cluster, leader, (i + 1) % cluster.size());
    }
}

/// The member carrying `pid`'s keepalives (`busiest_member`), with the raft leadership moved
/// off it: the member to kill or freeze to make the keepalive stream move.
pub fn keepalive_member(cluster: &mut EtcdCluster, pid: u32, window: Duration) -> usize {
    let victim = busiest_member(cluster, pid, window);
    move_raft_leader_off(cluster, victim);
    victim
}
