#!/usr/bin/env bash
# Bounded soak (not in CI): random faults against three leaderrun candidates on a 3-member etcd
# cluster on loopback, each candidate behind proxies of its own. Checks that no two children
# ever ran at once, and prints faults per kind, failovers, overlaps, failover latency p50/p99 per
# fault kind, and each leaderrun's open fds and RSS at start and end. Exits non-zero on an
# overlap (or if the system stops settling between faults).
#
#   bash scripts/soak.sh                  # 200 faults (about 20-30 min), TTL 3
#   SOAK_FAULTS=30 bash scripts/soak.sh   # a quick run
#
# Knobs (environment): SOAK_FAULTS (200), SOAK_MAX_SECS (1800: wall-time cap), SOAK_TTL (3),
# SOAK_SEED (random; printed, to replay a run), SOAK_KINDS (comma-separated subset of
# link-blackhole, link-reset, link-latency, member-kill, member-freeze, raft-leader-kill,
# cluster-freeze, leader-sigkill (the supervisor SIGKILLed: its guardian revokes the lease once
# the child's group is gone), leader-sigkill-cut (SIGKILLed while cut off from etcd: the
# guardian gives up, the lease expires), leader-sigterm, key-delete, lease-revoke), SOAK_STRICT
# (1: overlaps during a key delete / lease revoke count too: docs/SAFETY.md calls those a forced
# takeover; so do those where a frozen etcd raft leader, resumed, revoked a live lease, which
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
