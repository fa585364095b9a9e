//! Looking at processes through /proc: alive (and not a zombie), state, parent, group,
//! name and children.

use std::path::Path;

/// Fields of /proc/<pid>/stat after the command name: [state, ppid, pgrp, ...].
pub fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// The state letter of /proc/<pid>/stat: R, S, D, T (stopped), Z (zombie) ...
pub fn process_state(pid: u32) -> Option<char> {
    stat_fields(pid)?.first()?.chars().next()
}

/// A process that exists and is not a zombie. (Orphans are reaped by PID 1, which may take a
/// while, and a zombie whose reaper is not ours to judge is dead for our purposes.)
pub fn process_alive(pid: u32) -> bool {
    process_state(pid).is_some_and(|s| s != 'Z' && s != 'X')
}

/// The process exists in /proc at all (zombies included).
pub fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

pub fn ppid(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

pub fn pgrp(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(2)?.parse().ok()
}

/// The process's name (/proc/<pid>/comm).
pub fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

/// Children of `pid`, as the kernel lists them.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return vec![];
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// The guardian process of the leaderrun `pid` (its child named `leaderrun-guard`).
pub fn guardian_of(pid: u32) -> Option<u32> {
    children(pid)
        .into_iter()
        .find(|&p| comm(p).as_deref() == Some("leaderrun-guard"))
}
