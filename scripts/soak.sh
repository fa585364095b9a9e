#!/usr/bin/env bash
# Bounded soak (not in CI): random faults against three leaderrun candidates on a 3-member etcd
# cluster on loopback, each candidate behind proxies of its own. Checks that no two children
# ever ran at once, and prints faults per kind, failovers, overlaps, failover latency p50/p99 per
# fault kind, and each leaderrun's open fds and RSS at start and end. Exits non-zero on an
# overlap (or if the system stops settling between faults).
#
#   bash scripts/soak.sh                  # 200 faults (about 20-30 min), TTL 3
#   SOAK_FAULTS=30 bash scripts/soak.sh   # a quick run
#   SOAK_ROLES=hot SOAK_FAULTS=150 bash scripts/soak.sh     # hot standby (about 15 min)
#   SOAK_ROLES=hooks SOAK_FAULTS=150 bash scripts/soak.sh   # role hooks holding a "VIP"
#   SOAK_PRIORITIES=1 SOAK_FAULTS=100 SOAK_MAX_SECS=1200 bash scripts/soak.sh   # priorities
#
# Priorities (SOAK_PRIORITIES=1, default off): candidate c0 runs --priority 0, c1 5, c2 10, each
# with --preempt SOAK_PREEMPT seconds (default 4: a few of the soak's TTL). A waiting candidate
# with a better one behind it passes it; the leader steps down once a better candidate has
# waited SOAK_PREEMPT. "Settled" then also means the leader is the best live candidate (a
# preemption is an expected leadership change, not a failure; the overlap checks are the same).
# The summary adds preemptions (the old leader's log line), per fault kind, and passes, and fails
# the soak on a preemption logged inside a fault window in which the preempting leader could not
# reach etcd: a cluster-freeze, or its own link blackholed or reset (a line within 0.1 s of the
# fault's start is listed apart: its read may have come just before). Preemptions while a better
# candidate's link was cut are listed (its key is still live then; not an outage of the leader).
# Half of the outages start about a second into a better candidate's --preempt wait (the leading
# c2 SIGTERMed and restarted first, the outage on the new leader), so that the check bites.
# The soak runs no health checks: "never preempt to an unhealthy candidate" is the fault suite's.
#
# Roles (SOAK_ROLES, default neither: the plain soak):
#   hot        the candidates run --hot-standby, each child a `fenced_child --hot` that runs in
#              every role and records its leader intervals (from reading ROLE=leader in its role
#              file to reading ROLE=standby, just before its confirmation, or SIGTERM, or its
#              death), CLOCK_MONOTONIC; no two may overlap.
#   hooks      the candidates run --on-promote/--on-demote hooks that stamp a holds file
#              (`fenced_child FILE --stamp promote|demote`, CLOCK_MONOTONIC): a host holds the
#              "VIP" from its promote stamp to its demote stamp; no two hosts' holds may overlap.
#              A SIGKILLed leaderrun runs no demote hook (by design): the soak stamps `crash`
#              for it just before the SIGKILL, which ends its hold (docs/SAFETY.md, what a crash
#              means for a VIP). Before each fault the only holder must be the leader.
#   hot,hooks  both.
#   Overlaps of either kind are excused as the children's are (SOAK_STRICT below), and the
#   summary adds the holds' counts (released by the demote hook, ended by a SIGKILL) and the
#   VIP handover gaps.
#
# Knobs (environment): SOAK_FAULTS (200), SOAK_MAX_SECS (1800: wall-time cap), SOAK_TTL (3),
# SOAK_SEED (random; printed, to replay a run), SOAK_KINDS (comma-separated subset of
# link-blackhole, link-reset, link-latency, member-kill, member-freeze, raft-leader-kill,
# cluster-freeze, leader-sigkill (the supervisor SIGKILLed: its guardian revokes the lease once
# the child's group is gone), leader-sigkill-cut (SIGKILLed while cut off from etcd: the
# guardian gives up, the lease expires), leader-sigterm, key-delete, lease-revoke), SOAK_ROLES
# (above), SOAK_PRIORITIES and SOAK_PREEMPT (above), SOAK_STRICT (1: overlaps during a key delete / lease revoke count too: docs/SAFETY.md
# calls those a forced takeover; so do those where a frozen etcd raft leader, resumed, revoked a live lease, which
# etcd 3.4.23 and 3.5.1 may do), LEADERRUN_KEEP_TMP=1 (keep the logs, records and journal for a post-mortem).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export SOAK_FAULTS="${SOAK_FAULTS:-200}"
export SOAK_MAX_SECS="${SOAK_MAX_SECS:-1800}"
export SOAK_TTL="${SOAK_TTL:-3}"
command -v etcd >/dev/null && command -v etcdctl >/dev/null || {
    echo "soak: needs etcd and etcdctl on PATH (bash scripts/deps.sh installs them)" >&2
    exit 1
}
# Release build: the soak should measure the binary users run, not a debug build.
exec cargo test --release --test soak -- --ignored --nocapture --test-threads 1
