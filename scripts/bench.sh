#!/usr/bin/env bash
# Measure (never assert) leaderrun against `etcdctl lock` on a throwaway loopback etcd. The
# benchmark is benches/handover.rs, a program on the test harness (tests/common); this installs
# what it needs (scripts/deps.sh) and runs it on the release build:
#
#   bash scripts/bench.sh [--tls] [--runs N] [--candidates N[,N...]] [--only WHAT] [--trace]
#   = cargo bench --bench handover -- [--tls] [--runs N] [--candidates N[,N...]] [--only WHAT] [--trace]
#
# `bash scripts/bench.sh --help` lists what it measures and the options.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/deps.sh"
export PATH="$HOME/.cargo/bin:$PATH"
cd "$root"
exec cargo bench --bench handover -- "$@"
